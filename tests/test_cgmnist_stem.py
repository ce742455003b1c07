"""The fused CG-MNIST stem (``cg_stem = "fused"``, on in ``-c cgmnist_paper``): the input BN and the first
convolution as one convolution (``avel.models.encoders.FusedBNConv``) give the outputs, the gradients of
every parameter (torch's own convolution and BN gradients are the reference) and the BN state of the two
modules, up to rounding; the default (``"layers"``) is the modules themselves, so ``-c cgmnist`` and every
other config keep their numerics."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from avel.engine.config import load_config, validate
from avel.families import build_model
from avel.models.encoders import CGConvNet, FusedBNConv


def _pair(channels: int, dtype: torch.dtype) -> tuple[nn.Sequential, FusedBNConv]:
    torch.manual_seed(channels)
    bn, conv = nn.BatchNorm2d(channels), nn.Conv2d(channels, 32, 5, 1, 2)
    nn.init.normal_(bn.weight, 1.0, 0.5)  # away from the (1, 0) init, so that γ and β matter
    nn.init.normal_(bn.bias, 0.0, 0.5)
    layers = nn.Sequential(bn, conv).to(dtype)
    twin = copy.deepcopy(layers)
    return layers, FusedBNConv(twin[0], twin[1])


def _grads(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("channels", [1, 3])
def test_fused_bn_conv_is_bn_then_conv(channels):
    """float64: the identity conv(pad(γ x̂ + β), W) + b = conv(pad([x̂, 1]), [W γ, Σ_c W β]) + b holds to
    rounding for the output, every gradient (borders included: the ones channel is zero-padded) and the
    running statistics, over two training steps and in eval mode."""
    layers, fused = _pair(channels, torch.float64)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        x = torch.rand(6, channels, 28, 28, generator=g, dtype=torch.float64) * 3 - 1
        grad = torch.randn(6, 32, 28, 28, generator=g, dtype=torch.float64)
        layers.zero_grad(), fused.zero_grad()
        y0, y1 = layers(x), fused(x)
        y0.backward(grad), y1.backward(grad)
        torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
        g0 = _grads(layers)
        g1 = {k.replace("bn.", "0.").replace("conv.", "1."): v for k, v in _grads(fused).items()}
        assert g0.keys() == g1.keys() == {"0.weight", "0.bias", "1.weight", "1.bias"}
        for name in g0:
            torch.testing.assert_close(g1[name], g0[name], rtol=1e-10, atol=1e-10, msg=name)
    for a, b in zip(layers[0].buffers(), fused.bn.buffers(), strict=True):  # running mean/var, batches
        torch.testing.assert_close(b, a, rtol=1e-12, atol=0)
    assert int(fused.bn.num_batches_tracked) == 2
    layers.eval(), fused.eval()
    x = torch.rand(3, channels, 28, 28, generator=g, dtype=torch.float64)
    torch.testing.assert_close(fused(x), layers(x), rtol=1e-12, atol=1e-12)


def test_the_ones_channel_carries_the_border():
    """Why the ones channel: β folded into the bias (β on the zero padding too) is right inside the image
    and wrong on its 2-pixel border, which the test above would catch."""
    layers, fused = _pair(3, torch.float64)
    bn, conv = fused.bn, fused.conv
    x = torch.rand(2, 3, 28, 28, dtype=torch.float64)
    x_hat = F.batch_norm(x, None, None, None, None, True)
    gamma, beta = bn.weight.view(1, -1, 1, 1), bn.bias.view(1, -1, 1, 1)
    bias = conv.bias + (conv.weight * beta).sum((1, 2, 3))
    folded = F.conv2d(x_hat, conv.weight * gamma, bias, 1, 2)
    right = layers(x)
    torch.testing.assert_close(folded[..., 2:-2, 2:-2], right[..., 2:-2, 2:-2])
    assert not torch.allclose(folded[..., :2, :], right[..., :2, :])


@pytest.mark.parametrize("amp", [False, True])
def test_fused_stem_encoder_matches_layers(amp):
    """A whole CGConvNet (colored, 3 channels) with the fused stem against the module stem, the same weights:
    output and every parameter's gradient equal up to fp32 rounding (bf16 autocast: up to bf16's)."""
    torch.manual_seed(0)
    layers = CGConvNet(3)
    nn.init.normal_(layers.bn0.weight, 1.0, 0.3)
    nn.init.normal_(layers.bn0.bias, 0.0, 0.3)
    fused = CGConvNet(3, stem="fused")
    fused.load_state_dict(layers.state_dict())
    assert list(fused.state_dict()) == list(layers.state_dict())  # checkpoints are interchangeable
    x = torch.rand(16, 28, 28, 3).permute(0, 3, 1, 2)  # as load_splits gives colored digits
    outs = []
    for net in (layers, fused):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            z = net(x)
        z.float().square().mean().backward()
        outs.append((z.detach().float(), {n: p.grad for n, p in net.named_parameters()}))
    (z0, g0), (z1, g1) = outs
    tol = {"rtol": 0.05, "atol": 0.05} if amp else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(z1, z0, **tol)
    for name in g0:
        scale = g0[name].abs().max()
        torch.testing.assert_close(g1[name] / scale, g0[name] / scale, **tol, msg=name)


def test_cg_stem_is_a_cgmnist_option_on_in_the_paper_config_only():
    assert load_config("cgmnist_paper", {}).cg_stem == "fused"
    assert load_config("cgmnist", {}).cg_stem == "layers"  # the small set's numerics stay the modules'
    model = build_model("cgmnist", "concat", input_mode="e2e", num_classes=10, cg_stem="fused")
    assert model.audio_branch.stem == model.visual_branch.stem == "fused"
    mmtm = build_model("cgmnist", "mmtm", input_mode="e2e", num_classes=10, cg_stem="fused")
    assert mmtm.audio_branch.stem == "fused"
    assert build_model("cgmnist", "concat", input_mode="e2e", num_classes=10).audio_branch.stem == "layers"
    with pytest.raises(ValueError, match="cg_stem applies to the cgmnist family, not resnet18"):
        build_model("resnet18", "concat", input_mode="e2e", num_classes=10, width=8, cg_stem="fused")
    with pytest.raises(ValueError, match="cg_stem .* applies to --model cgmnist, not resnet18"):
        validate(load_config("cgmnist_paper", {"model": "resnet18"}))
    with pytest.raises(ValueError, match='--cg-stem: "fast" is not allowed: must be one of layers, fused'):
        validate(load_config("cgmnist_paper", {"cg_stem": "fast"}))


def test_a_run_started_with_the_layers_stem_resumes_fused(tmp_path):
    """cg_stem changes rounding only (as the device does): a cgmnist_paper run begun before the option (its
    stored config has no cg_stem) resumes under the config that now turns it on; a real change still stops."""
    from avel.engine import config as config_mod
    from avel.engine.train import _check_resumable

    stored = config_mod.to_dict(load_config("cgmnist_paper", {}))
    del stored["cg_stem"]
    _check_resumable(stored, load_config("cgmnist_paper", {}), tmp_path)
    with pytest.raises(ValueError, match="different configuration .*lr"):
        _check_resumable(stored, load_config("cgmnist_paper", {"lr": 0.01}), tmp_path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pool_with_a_channels_last_gradient_is_bit_identical(dtype):
    """The fused stem's max pool hands its backward the gradient channels_last (faster on CPU): the output and
    the input gradient are exactly the default pool's, ties included (values on a coarse grid)."""
    from avel.models.encoders import MaxPool2d

    g = torch.Generator().manual_seed(0)
    x = (torch.randint(-4, 5, (8, 32, 28, 28), generator=g) / 4).to(dtype)  # many equal maxima
    grad = torch.randn(8, 32, 14, 14, generator=g).to(dtype)
    outs = []
    for pool in (MaxPool2d(3, 2, 1), MaxPool2d(3, 2, 1, grad_channels_last=True)):
        xi = x.clone().requires_grad_(True)
        y = pool(xi)
        assert y.is_contiguous()
        y.backward(grad)
        outs.append((y.detach(), xi.grad))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_contiguous_grad_channels_last():
    from avel.models.encoders import ContiguousGradChannelsLast

    y = torch.rand(2, 4, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    seen = []
    y.register_hook(lambda g: seen.append(g.is_contiguous(memory_format=torch.channels_last)))
    out = ContiguousGradChannelsLast.apply(y)
    assert out.is_contiguous() and torch.equal(out, y)
    out.backward(torch.ones(2, 4, 5, 5))
    assert seen == [True]
