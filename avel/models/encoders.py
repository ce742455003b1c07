"""Every encoder of avel: one modality's input → its representation, below the assemblies that use them.

- ``ResNet18``: torchvision's architecture and parameter names, with a base ``width``. At ``width=64`` the
  module tree is torchvision's ``resnet18`` without ``avgpool``/``fc``, so its ``state_dict`` (ImageNet
  weights included) loads strictly. Narrower widths (8, 16) keep the same layout for fast CPU runs.
  ``compress``: the released PMR backbone's compress / recover block after layer2 (off by default).
- ``AudioEncoder``: a 1-channel ResNet18 on log-spectrograms, average-pooled to D = 8·width, for a clip
  (B, 1, F, L) or per segment (B, T, 1, F, W).
- ``VisualEncoder``: a ResNet18 on each of K frames, averaged over the frames: the layer4 map per segment
  (AVEL's attention reads its regions) or, with ``pooled``, a vector per clip.
- Both are staged encoders (``fold``, ``stages``, ``pool``): MMTM and CentralNet fuse between their stages.
- ``FeatureMap``: precomputed visual features, which already are the map.
- ``CGConvNet``: PMR's 4-conv encoder for CG-MNIST (``stem="fused"``: its input BN and first convolution as
  one convolution, ``FusedBNConv``, the fast CPU training path of ``-c cgmnist_paper``).
- ``conv_layout``: the memory layout every encoder hands its convolutions (channels_last on CUDA only; on
  CPU too for the one convolution proven to take it, ``stem_channels_last``: the fused CG-MNIST stem's, and
  for the training passes a probe proved on this machine, ``cpu_channels_last``: ``cpu_conv_layout``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avel.rules import check, one_of

# Devices whose convolutions get channels_last input (cuDNN's fast path). On CPU the encoders use contiguous
# NCHW: PyTorch's CPU kernel for the backward of a 1x1 stride-2 conv on a channels_last input with 8 -> 16
# channels (ResNet18's layer2 downsample at width 8, 224 px frames) segfaults on Intel Xeon (AVX-512 / AMX)
# and on AMD EPYC alike (issue #24). NCHW costs up to ~1.3x on narrow CPU models (BENCHMARKS.md). The one
# exception, proven in a subprocess over its shapes: the fused CG-MNIST stem's 5x5 conv (stem_channels_last).
CHANNELS_LAST_DEVICES = frozenset({"cuda"})


def stem_channels_last(x: Tensor, weight: Tensor) -> bool:
    """Whether a CPU convolution of ``x`` with ``weight`` is the fused CG-MNIST stem's, the one CPU conv
    given channels_last input: 5×5, at most 4 input channels (x̂ and the ones channel), 32 outputs. Its
    forward and weight-gradient backward (no input gradient) run in a subprocess over the batch sizes,
    dtypes and channel counts the recipe meets (tests/test_cpu_layouts.py) and in tests/encoder_worker.py;
    it takes the max pool's layout copies out of the step (BENCHMARKS.md, CG-MNIST at the paper's scale)."""
    return x.dim() == 4 and x.shape[1] <= 4 and tuple(weight.shape[-2:]) == (5, 5) and weight.shape[0] == 32


def conv_layout(x: Tensor) -> Tensor:
    """``x`` (N, C, H, W) in the layout its device's convolutions get: channels_last on CUDA, contiguous NCHW
    elsewhere (a permuted or channels_last input is copied), except a CPU pass that ``cpu_channels_last``
    proved on this machine (``cpu_conv_layout = "channels_last"``, avel.engine.conv_probe)."""
    if x.device.type in CHANNELS_LAST_DEVICES or _CPU_CHANNELS_LAST.takes(x):
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()


LayoutKey = tuple[tuple[int, ...], bool, str]  # (encoder input shape, gradients on, autocast dtype or fp32)


def layout_key(x: Tensor) -> LayoutKey:
    """What decides a CPU encoder pass's convolution kernels: its input (N, C, H, W), whether the pass
    records gradients (a backward follows) and the autocast dtype (bf16 kernels) or "fp32"."""
    amp = torch.is_autocast_enabled("cpu")
    dtype = str(torch.get_autocast_dtype("cpu")).removeprefix("torch.") if amp else "fp32"
    return tuple(x.shape), torch.is_grad_enabled(), dtype


class CpuChannelsLast:
    """Which CPU encoder passes get channels_last input (``conv_layout``): those whose ``layout_key`` is in
    ``proven`` (every one when ``proven`` is None: the probe's own subprocess); counts both kinds of pass."""

    def __init__(self) -> None:
        self.on, self.proven = False, frozenset()
        self.seen: set[LayoutKey] = set()
        self.passes = {"channels_last": 0, "nchw": 0}

    def takes(self, x: Tensor) -> bool:
        if not self.on or x.device.type != "cpu" or x.dim() != 4:
            return False
        key = layout_key(x)
        self.seen.add(key)
        taken = self.proven is None or key in self.proven
        self.passes["channels_last" if taken else "nchw"] += 1
        return taken


_CPU_CHANNELS_LAST = CpuChannelsLast()


@contextlib.contextmanager
def cpu_channels_last(proven: frozenset[LayoutKey] | None) -> Iterator[CpuChannelsLast]:
    """Within: the CPU encoder passes whose ``layout_key`` is in ``proven`` hand their convolutions
    channels_last input (``None``: every pass, for the probe's subprocess only: #24's crash is in that path
    at some shapes); any other pass stays NCHW. Yields the state (its ``passes`` counts each kind)."""
    state = _CPU_CHANNELS_LAST
    saved = state.on, state.proven
    state.on, state.proven = True, proven
    state.seen.clear()
    state.passes = {"channels_last": 0, "nchw": 0}
    try:
        yield state
    finally:
        state.on, state.proven = saved


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that pools a CPU map in channels_last and hands back contiguous NCHW: PyTorch's
    NCHW max pool with indices is several times slower on CPU (CGConvNet's step: 1.15x in CPU time without
    this); a pool is no convolution, so the layout change is safe. ``grad_channels_last``: the backward
    hands the pool its gradient channels_last too (the same values; the CPU pool backward takes an NCHW
    gradient 2.5x slower: BENCHMARKS.md, CG-MNIST at the paper's scale)."""

    def __init__(self, *args, grad_channels_last: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.grad_channels_last = grad_channels_last

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type in CHANNELS_LAST_DEVICES or x.dim() != 4:
            return super().forward(x)
        y = super().forward(x.contiguous(memory_format=torch.channels_last))
        return ContiguousGradChannelsLast.apply(y) if self.grad_channels_last else y.contiguous()


class ContiguousGradChannelsLast(torch.autograd.Function):
    """``y.contiguous()`` of a channels_last ``y`` whose backward returns the gradient channels_last
    (autograd's own ``contiguous`` passes it on in NCHW)."""

    @staticmethod
    def forward(ctx, y: Tensor) -> Tensor:
        return y.contiguous()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


class BasicBlock(nn.Module):
    """Two 3×3 convs with a residual connection (torchvision's ``BasicBlock``)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


COMPRESS_MODALITIES = ("audio", "visual")
COMPRESS_MIN_SIDE = 25  # the smallest layer2 map side the compress block takes (its 4th conv needs 3x3)


def compress_block(modality: str, width: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The released PMR backbone's ``compress_layer`` and ``recover_layer`` (``models/backbone.py``,
    ``compress=True``, its default), scaled to ``width`` (the release's at 64: C = 128, D = 512).

    compress: the layer2 map (C, h, w) through four 3×3 stride-2 convolutions to (D, 1, 1) on the release's
    inputs; recover: four transposed convolutions back to a fixed grid, 28 × 28 for ``visual`` (224 px
    frames' layer2 grid) and 33 × 38 for ``audio`` (a 257 × 299 spectrogram's); layer3 reads that grid.
    No residual: layer3 sees only what passes the D-wide bottleneck."""
    check("compress modality", modality, one_of(*COMPRESS_MODALITIES))
    c, d = 2 * width, 8 * width
    compress = nn.Sequential(
        nn.Conv2d(c, c, 3, 2, 1),
        nn.Conv2d(c, c, 3, 2, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c, c, 3, 2, 0),
        nn.Conv2d(c, d, 3, 2, 0),
        nn.ReLU(inplace=True),
    )
    if modality == "visual":
        kernels, strides = [3, 3, 2, 2], [1, 2, 2, 2]
    else:
        kernels, strides = [4, 2, (2, 4), (3, 4)], [1, 2, 2, 2]
    chans = [d, c, c, c, c]
    recover = nn.Sequential(
        *(nn.ConvTranspose2d(chans[i], chans[i + 1], kernels[i], strides[i]) for i in range(4))
    )
    return compress, recover


class Compress(nn.Module):
    """layer2's map through the released compress / recover block (``compress_block``); refuses maps too
    small for it with a message naming the option (torch's own error names a kernel size)."""

    def __init__(self, compress: nn.Module, recover: nn.Module):
        super().__init__()
        self.compress, self.recover = compress, recover

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) < COMPRESS_MIN_SIDE:
            raise ValueError(
                f"compress = true needs a layer2 map of at least {COMPRESS_MIN_SIDE}x{COMPRESS_MIN_SIDE} "
                f"(inputs of 193 px or more per side); got {tuple(x.shape[-2:])}"
            )
        return self.recover(self.compress(x))


class ResNet18(nn.Module):
    """ResNet18 up to layer4: ``forward`` returns the (B, 8·width, h, w) map (h = w = ⌈S/32⌉).

    ``compress`` ("audio" / "visual" / None): the released PMR backbone's compress / recover block between
    layer2 and layer3 (``compress_block``; parameters ``compress_layer.*`` and ``recover_layer.*``, as the
    release names them); then layer3 reads the recovered grid and h, w follow from it."""

    def __init__(self, in_channels: int = 3, width: int = 64, compress: str | None = None):
        super().__init__()
        self.width, self.out_channels = width, 8 * width
        self.compress = compress
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        # PyTorch's own NCHW pool, before the ReLU (max commutes with ReLU: the same outputs, gradients equal
        # up to rounding; the ReLU on a 4x smaller map): on CPU bn1 + pool + ReLU take 1.6x less time than
        # with avel's channels_last MaxPool2d after the ReLU at width 64, 1.2x at width 8 (BENCHMARKS.md, #30)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        planes = [width, 2 * width, 4 * width, 8 * width]
        self.layer1 = nn.Sequential(BasicBlock(width, planes[0]), BasicBlock(planes[0], planes[0]))
        for k in range(1, 4):
            layer = nn.Sequential(BasicBlock(planes[k - 1], planes[k], 2), BasicBlock(planes[k], planes[k]))
            setattr(self, f"layer{k + 1}", layer)
        if compress is not None:  # registered after layer4: the default model's draws are unchanged
            self.compress_layer, self.recover_layer = compress_block(compress, width)
        for m in self.modules():  # torchvision's initialisation (the release's: Conv2d, not ConvTranspose2d)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stages(self) -> list[nn.Module]:
        """The network as four stages, stem + layer1, layer2, layer3, layer4 (intermediate fusions sit
        between them); the wrappers are not registered, so parameter names stay torchvision's."""
        stem = nn.Sequential(self.conv1, self.bn1, self.maxpool, self.relu, self.layer1)
        if self.compress is None:
            return [stem, self.layer2, self.layer3, self.layer4]
        layer2 = nn.Sequential(self.layer2, Compress(self.compress_layer, self.recover_layer))
        return [stem, layer2, self.layer3, self.layer4]

    @property
    def stage_channels(self) -> tuple[int, ...]:
        return (self.width, 2 * self.width, 4 * self.width, 8 * self.width)

    def forward(self, x: Tensor) -> Tensor:
        for stage in self.stages():
            x = stage(x)
        return x


def resnet_grid(size: int) -> int:
    """Side of the layer4 map for an input side ``size``: five stride-2 stages, each ⌈n/2⌉."""
    for _ in range(5):
        size = math.ceil(size / 2)
    return size


def load_imagenet(encoder: ResNet18) -> None:
    """Copy torchvision's ImageNet ResNet18 weights into a width-64 RGB encoder (cache or download)."""
    if encoder.width != 64:
        raise ValueError(f"--pretrained needs the standard ResNet18 (width 64), not width {encoder.width}")
    from torchvision.models import ResNet18_Weights, resnet18

    try:
        state = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1).state_dict()
    except Exception as e:  # offline, no cache
        raise OSError(
            "could not load the ImageNet ResNet18 weights (torchvision ResNet18_Weights.IMAGENET1K_V1): "
            f"{e}. Download them once on a machine with network access into the torch hub cache "
            "($TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth) and copy it here, or train with "
            "--no-pretrained"
        ) from e
    missing, _ = encoder.load_state_dict(
        {k: v for k, v in state.items() if not k.startswith("fc.")}, strict=encoder.compress is None
    )
    if any(not k.startswith(("compress_layer.", "recover_layer.")) for k in missing):
        raise RuntimeError(f"ImageNet ResNet18 weights left parameters unset: {missing}")


AUDIO_POOLS = ("mean", "freq", "freq_bn")
AUDIO_BANDS = 9  # frequency rows kept by pool "freq": the layer4 grid of a 257-bin spectrogram (⌈257/32⌉)


class AudioEncoder(nn.Module):
    """A 1-channel ResNet18 on spectrograms: (B, 1, F, L) → (B, D) for a clip, (B, T, 1, F, W) → (B, T, D)
    per segment. ``pool="mean"`` averages the layer4 map over frequency and time; ``pool="freq"`` averages
    over time only, keeps ``AUDIO_BANDS`` frequency rows and maps them to D with a linear layer and a ReLU
    (as VGGish's fully connected layers read its whole map): where in frequency a sound lies (its pitch)
    stays visible to the layers above. ``pool="freq_bn"`` puts a BatchNorm between that linear layer and its
    ReLU: with "freq" the ReLU of some seeds dies at the start (99.7 % zeros, the loss at the label prior for
    13 epochs; docs/results.md, issue #25), with the BatchNorm every unit is positive on part of each batch.
    A staged encoder (``avel.models.intermediate.StagedEncoder``) for the intermediate fusions."""

    def __init__(self, width: int, pool: str = "mean", compress: bool = False):
        super().__init__()
        check("audio_pool", pool, one_of(*AUDIO_POOLS))
        self.net = ResNet18(1, width, "audio" if compress else None)
        self.stage_channels = self.net.stage_channels
        self.pool_mode = pool
        if pool != "mean":
            d = self.net.out_channels
            self.bands = nn.AdaptiveAvgPool2d((AUDIO_BANDS, 1))
            norm = [nn.BatchNorm1d(d)] if pool == "freq_bn" else []
            self.proj = nn.Sequential(nn.Linear(AUDIO_BANDS * d, d), *norm, nn.ReLU(inplace=True))

    def fold(self, audio: Tensor) -> Tensor:
        return conv_layout(audio.flatten(0, -4))  # (N, 1, F, L)

    def stages(self) -> list[nn.Module]:
        return self.net.stages()

    def pool(self, x: Tensor, batch: int) -> Tensor:
        if self.pool_mode == "mean":
            return pool_frames(x, batch)
        return self.vector(x).unflatten(0, (batch, -1)).mean(1)

    def vector(self, x: Tensor) -> Tensor:
        """(N, D, f, l) layer4 map → (N, D)."""
        if self.pool_mode == "mean":
            return x.mean((-2, -1))
        return self.proj(self.bands(x).flatten(1))

    def forward(self, audio: Tensor) -> Tensor:
        lead = audio.shape[:-3]
        return self.vector(self.net(self.fold(audio))).view(*lead, -1)


class VisualEncoder(nn.Module):
    """A ResNet18 on each of K frames, frames folded into the batch and averaged: (..., K, 3, S, S) → the
    (..., h, w, C) layer4 map, or with ``pooled`` the (B, C) vector of a clip (B, K, 3, S, S), averaged over
    frames and space together. A staged encoder (``avel.models.intermediate.StagedEncoder``)."""

    def __init__(self, width: int, pretrained: bool = False, pooled: bool = False, compress: bool = False):
        super().__init__()
        self.pooled = pooled
        self.net = ResNet18(3, width, "visual" if compress else None)
        self.stage_channels = self.net.stage_channels
        if pretrained:
            load_imagenet(self.net)

    def fold(self, visual: Tensor) -> Tensor:
        return conv_layout(visual.flatten(0, -4))  # (N·K, 3, S, S)

    def stages(self) -> list[nn.Module]:
        return self.net.stages()

    def pool(self, x: Tensor, batch: int) -> Tensor:
        return pool_frames(x, batch)

    def forward(self, visual: Tensor) -> Tensor:
        x = self.net(self.fold(visual))  # (N·K, C, h, w)
        if self.pooled:
            return self.pool(x, visual.shape[0])
        lead = visual.shape[:-4]  # (B, T) per segment
        x = x.view(*lead, -1, *x.shape[1:]).mean(len(lead))  # average over the K frames: (..., C, h, w)
        return x.movedim(-3, -1)


def pool_frames(x: Tensor, batch: int) -> Tensor:
    """(B·K, D, h, w) → (B, D): the mean over frames and space together."""
    return x.unflatten(0, (batch, -1)).mean((1, 3, 4))


class FeatureMap(nn.Module):
    """Features mode: the visual features already are a (B, T, h, w, C) map."""

    def forward(self, visual: Tensor) -> Tensor:
        return visual


CG_STEMS = ("layers", "fused")


class FusedBNConv(nn.Module):
    """``conv(bn(x))`` of a training-mode ``nn.BatchNorm2d`` on the (data) input and a zero-padded
    ``nn.Conv2d``, computed as one convolution of the normalised input x̂ and a constant channel of ones:

        conv(pad(γ x̂ + β), W) + b = conv(pad([x̂, 1]), [W γ, Σ_c W β]) + b    (zero padding on both sides)

    Equal up to rounding (tests/test_cgmnist_stem.py): the same parameters, buffers and running-stat updates
    as the two modules. On an input that needs no gradient (the digits) autograd then computes only the
    convolution's *weight* gradient, and γ's and β's come through the product weights: the input gradient
    of a 5×5 convolution with 1 or 3 output channels, which the modules need for γ and β, is the slowest
    part of their CPU backward (BENCHMARKS.md, CG-MNIST at the paper's scale)."""

    def __init__(self, bn: nn.BatchNorm2d, conv: nn.Conv2d):
        super().__init__()
        if conv.padding_mode != "zeros" or conv.groups != 1 or not bn.affine or bn.momentum is None:
            raise ValueError("FusedBNConv needs an affine BN with a momentum and a zero-padded conv")
        self.bn, self.conv = bn, conv

    def forward(self, x: Tensor) -> Tensor:
        bn, conv = self.bn, self.conv
        training = bn.training or bn.running_mean is None
        if bn.training and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)  # as nn.BatchNorm2d (momentum is set: bookkeeping only)
        x_hat = F.batch_norm(x, bn.running_mean, bn.running_var, None, None, training, bn.momentum, bn.eps)
        ones = x_hat.new_ones(x.shape[0], 1, *x.shape[2:])  # zero-padded like the BN output: the border mask
        gamma, beta = bn.weight.view(1, -1, 1, 1), bn.bias.view(1, -1, 1, 1)
        weight = torch.cat([conv.weight * gamma, (conv.weight * beta).sum(1, True)], 1)
        x_ext = torch.cat([x_hat, ones], 1)
        if stem_channels_last(x_ext, weight):  # its output is then channels_last: the pool's layout
            x_ext = x_ext.contiguous(memory_format=torch.channels_last)
        else:
            x_ext = conv_layout(x_ext)
        return F.conv2d(x_ext, weight, conv.bias, conv.stride, conv.padding, conv.dilation)


class CGConvNet(nn.Module):
    """The CG-MNIST encoder of PMR (Table 1 setup: 4 convolutions and an average pool), as the released
    ``convnet``: BN on the input, conv 5×5/32 → max-pool 3/2 → conv 3×3/32 → conv 3×3/64 stride 2 →
    conv 3×3/64, ReLU after each, 7×7 average pool, then a linear map 64 → ``dim`` (512).

    (B, C, 28, 28) → (B, dim); C = 1 (gray) or 3 (colored). For speed the first ReLU runs after the
    max-pool, on a quarter of the values (they commute: the released order's outputs and gradients).
    ``stem="fused"``: BN and the first convolution run as one convolution (``FusedBNConv``: the same
    parameters and state, equal up to rounding, faster backward on CPU); ``"layers"`` (default) as modules.
    """

    def __init__(self, in_channels: int, dim: int = 512, stem: str = "layers"):
        super().__init__()
        check("cg_stem", stem, one_of(*CG_STEMS))
        self.stem = stem
        self.bn0 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, 32, 5, 1, 2)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = MaxPool2d(3, 2, 1, grad_channels_last=stem == "fused")
        self.conv2 = nn.Conv2d(32, 32, 3, 1, 1)
        self.conv3 = nn.Conv2d(32, 64, 3, 2, 1)
        self.conv4 = nn.Conv2d(64, 64, 3, 1, 1)
        self.fc = nn.Linear(64, dim)
        for m in self.modules():  # the released code's weight_init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    stage_channels = (32, 32, 64, 64)

    def stages(self) -> list[nn.Module]:
        """Four stages, one per convolution (28 → 14 → 14 → 7 → 7); intermediate fusions sit between
        them. The wrappers are not registered: parameter names stay the released code's."""
        first = nn.Sequential(self.bn0, self.conv1, self.maxpool, self.relu)  # max-pool first: see the class
        if self.stem == "fused":
            first = nn.Sequential(FusedBNConv(self.bn0, self.conv1), self.maxpool, self.relu)
        return [
            first,
            nn.Sequential(self.conv2, self.relu),
            nn.Sequential(self.conv3, self.relu),
            nn.Sequential(self.conv4, self.relu),
        ]

    def fold(self, x: Tensor) -> Tensor:
        return conv_layout(x)  # one image per sample (colored digits arrive permuted from (B, 28, 28, 3))

    def features(self, x: Tensor) -> Tensor:
        """The (B, 64, 7, 7) map after the last convolution."""
        for stage in self.stages():
            x = stage(x)
        return x

    def pool(self, x: Tensor, batch: int) -> Tensor:
        return self.fc(x.mean((-2, -1)))  # 7×7 average pool, as AvgPool2d(7) on 28×28 input

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.features(self.fold(x)), x.shape[0])
