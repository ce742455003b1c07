"""Models: shapes, the reference's attention and DMRN wiring by hand, split logits,
branch partitions, and the ResNet18 matching torchvision's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from avel.families import build_model
from avel.models.encoders import AUDIO_BANDS, AudioEncoder, ResNet18, resnet_grid
from avel.models.temporal import AudioGuidedAttention

torch.manual_seed(0)


def feats(b=2, t=10, da=16, h=2, w=3, c=8):
    return torch.randn(b, t, da), torch.randn(b, t, h, w, c)


@pytest.mark.parametrize("fusion", ["concat", "dmrn"])
@pytest.mark.parametrize("modality", ["both", "audio", "visual"])
def test_avel_features_shapes(fusion, modality):
    m = build_model("avel", fusion, audio_dim=16, visual_dim=8, regions=6, modality=modality)
    out = m(*feats())
    assert out.logits.shape == (2, 10, 29) and out.z_audio.shape == out.z_visual.shape == (2, 10, 256)
    assert m.background == 28 and m.per_segment and m.z_dim == 256
    assert (out.logits_audio is not None) == (fusion == "concat" and modality == "both") == m.splits_logits
    if modality == "audio":
        assert not out.z_visual.any() and m.fusion_name == "audio"
    if modality == "visual":
        assert not out.z_audio.any() and not m.branch_parameters("audio")


def test_avel_e2e_shapes():
    m = build_model("avel", "dmrn", input_mode="e2e", width=8, regions=resnet_grid(40) ** 2)
    out = m(torch.randn(2, 10, 1, 257, 20), torch.randn(2, 10, 2, 3, 40, 40))
    assert out.logits.shape == (2, 10, 29)
    assert m.last_attention.shape == (2, 10, 4)  # a 2×2 layer4 grid at 40 px
    a, v = m.segment_features(torch.randn(2, 10, 1, 257, 20), torch.randn(2, 10, 2, 3, 40, 40))
    assert a.shape == (2, 10, 64) and v.shape == (2, 10, 2, 2, 64)


def test_audio_freq_pool_by_hand():
    """pool "freq": the layer4 map averaged over time only, its frequency rows read by a linear layer + ReLU
    (the output size stays D = 8·width); "mean" averages over frequency too."""
    m = build_model("avel", "concat", input_mode="e2e", width=8, regions=1, audio_pool="freq").eval()
    enc = m.audio_branch["encoder"]
    spec = torch.randn(2, 3, 1, 257, 20)
    maps = enc.net(spec.flatten(0, 1))  # (6, 64, 9, 1): 9 frequency rows at 257 bins
    assert maps.shape[-2] == AUDIO_BANDS
    rows = maps.mean(-1).flatten(1)  # channel-major, as AdaptiveAvgPool2d((9, 1)) then flatten
    expected = F.relu(rows @ enc.proj[0].weight.T + enc.proj[0].bias).view(2, 3, 64)
    assert torch.allclose(enc(spec), expected, atol=1e-5)
    mean = build_model("avel", "concat", input_mode="e2e", width=8, regions=1).audio_branch["encoder"]
    assert not hasattr(mean, "proj") and torch.allclose(mean(spec), mean.net(spec.flatten(0, 1)).mean(
        (-2, -1)).view(2, 3, 64), atol=1e-6)  # fmt: skip
    allowed = "must be one of mean, freq, freq_bn$"
    with pytest.raises(ValueError, match=f'audio_pool: "max" is not allowed: {allowed}'):
        AudioEncoder(8, "max")


def test_audio_freq_bn_head_cannot_die():
    """pool "freq_bn": linear layer, BatchNorm, ReLU. A bias that silences every ReLU of the "freq" head (no
    output, no gradient: the dead start of issue #25) leaves the freq_bn head's units alive, and its gradient
    reaches the ResNet."""
    spec = torch.randn(4, 3, 1, 257, 20)
    alive = {}
    for pool in ("freq", "freq_bn"):
        torch.manual_seed(0)
        enc = AudioEncoder(8, pool).train()
        with torch.no_grad():
            enc.proj[0].bias.fill_(-100.0)
        out = enc(spec)
        out.sum().backward()
        grad = sum(float(p.grad.abs().sum()) for p in enc.net.parameters() if p.grad is not None)
        alive[pool] = (float((out > 0).float().mean()), grad)
    assert alive["freq"] == (0.0, 0.0)
    assert 0.3 < alive["freq_bn"][0] < 0.7 and alive["freq_bn"][1] > 0
    assert isinstance(AudioEncoder(8, "freq_bn").proj[1], torch.nn.BatchNorm1d)


def test_visual_only_init_does_not_depend_on_the_audio_pool():
    """A visual-only model trained with audio_pool = "freq" starts from the weights it had before the pool."""
    states = []
    for pool in ("mean", "freq"):
        torch.manual_seed(5)
        m = build_model(
            "avel", "concat", input_mode="e2e", width=8, regions=1, modality="visual", audio_pool=pool
        )
        states.append(m.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_attention_by_hand():
    att = AudioGuidedAttention(audio_dim=3, visual_dim=4, regions=5, hidden=6)
    a, v = torch.randn(1, 1, 3), torch.randn(1, 1, 5, 4)
    c, alpha = att(a, v)
    v_ = F.relu(v[0, 0] @ att.W_v.weight.T + att.W_v.bias)  # (5, 6)
    a_ = F.relu(a[0, 0] @ att.W_a.weight.T + att.W_a.bias)  # (6,)
    ug = att.U_g.weight @ a_  # (5,): one value per region i
    z = torch.stack(
        [att.w_h.weight[0] @ torch.tanh(att.U_v.weight @ v_[i] + ug[i]) for i in range(5)]
    )  # e_{i,j} = (U_v v'_i)_j + (U_g a')_i
    assert torch.allclose(alpha[0, 0], torch.softmax(z, 0), atol=1e-6)
    assert torch.allclose(alpha.sum(-1), torch.ones(1, 1))
    assert torch.allclose(c[0, 0], (alpha[0, 0, :, None] * v[0, 0]).sum(0), atol=1e-6)  # raw v
    # the per-hidden-unit variant adds (U_g a')_j to every region: other weights
    z_j = torch.stack([att.w_h.weight[0] @ torch.tanh(att.U_v.weight @ v_[i] + ug) for i in range(5)])
    assert not torch.allclose(torch.softmax(z_j, 0), alpha[0, 0], atol=1e-4)


def test_attention_sums_to_one_over_49_regions():
    m = build_model("avel", "concat", audio_dim=128, visual_dim=512, regions=49)
    m(torch.randn(2, 10, 128), torch.randn(2, 10, 7, 7, 512))
    assert m.last_attention.shape == (2, 10, 49)
    assert torch.allclose(m.last_attention.sum(-1), torch.ones(2, 10), atol=1e-5)


def test_dmrn_cross_over_by_hand():
    m = build_model("avel", "dmrn", audio_dim=16, visual_dim=8, regions=6)
    h_a, h_v = torch.randn(2, 10, 256), torch.randn(2, 10, 256)
    d = m.dmrn
    m_ = (d.U_v(h_v) + d.U_a(h_a)) / 2
    expected = m.L2((torch.tanh(h_a + m_) + torch.tanh(h_v + m_)) / 2)  # h^v' from h^a, h^a' from h^v
    assert torch.allclose(m.fuse(h_a, h_v).logits, expected, atol=1e-6)
    # with one block the output (h^v' + h^a')/2 is symmetric in the cross-over; it matters for stacked blocks
    assert not torch.allclose(expected, m.L2((h_a + h_v) / 2))  # the block does transform its inputs


def test_avel_concat_forward_and_split_halves():
    m = build_model("avel", "concat", audio_dim=16, visual_dim=8, regions=6)
    h_a, h_v = torch.randn(2, 10, 256), torch.randn(2, 10, 256)
    out = m.fuse(h_a, h_v)
    expected = m.L2(F.relu(m.L1(F.relu(torch.cat([h_a, h_v], -1)))))
    assert torch.allclose(out.logits, expected, atol=1e-6)
    # each half alone = the fused network with the other modality zeroed (biases halved)
    zero = torch.zeros_like(h_v)
    la = m.L2(F.relu(m.L1(F.relu(torch.cat([h_a, zero], -1))) - m.L1.bias / 2)) - m.L2.bias / 2
    assert torch.allclose(out.logits_audio, la, atol=1e-5)


@pytest.mark.parametrize("fusion", ["concat", "sum", "film", "gated"])
def test_classifier_shapes_and_split_logits(fusion):
    m = build_model("resnet18", fusion, input_mode="e2e", num_classes=28, width=8)
    out = m(torch.randn(3, 1, 257, 64), torch.randn(3, 4, 3, 32, 32))
    assert out.logits.shape == (3, 28) and out.z_audio.shape == out.z_visual.shape == (3, 64)
    assert m.background is None and m.z_dim == 64
    if fusion in ("concat", "sum"):
        assert m.splits_logits
        assert torch.allclose(out.logits_audio + out.logits_visual, out.logits, atol=1e-5)
    else:
        assert not m.splits_logits and out.logits_audio is None
    if fusion == "sum":
        assert torch.allclose(out.logits_audio, m.head.fc_a(out.z_audio))
    if fusion == "film":
        gamma, beta = m.head.film(out.z_audio).chunk(2, -1)
        assert torch.allclose(out.logits, m.head.fc(gamma * out.z_visual + beta), atol=1e-6)
    if fusion == "gated":
        gate = torch.sigmoid(m.head.fc_a(out.z_audio))
        assert torch.allclose(out.logits, m.head.fc(gate * m.head.fc_v(out.z_visual)), atol=1e-6)


def test_visual_pooling_is_joint_over_frames_and_space():
    m = build_model("resnet18", "concat", input_mode="e2e", num_classes=5, width=8).eval()
    frames = torch.randn(2, 3, 3, 32, 32)
    maps = m.visual_branch.net(frames.flatten(0, 1))  # (6, 64, 1, 1)
    expected = maps.view(2, 3, 64, -1).mean((1, 3))
    assert torch.allclose(m.encode(torch.randn(2, 1, 257, 40), frames)[1], expected, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"family": "avel", "fusion": "dmrn", "audio_dim": 16, "visual_dim": 8, "regions": 6},
        {"family": "avel", "fusion": "concat", "input_mode": "e2e", "width": 8, "regions": 1},
        {"family": "resnet18", "fusion": "film", "input_mode": "e2e", "width": 8},
    ],
)
def test_branch_parameters_partition(kwargs):
    m = build_model(**kwargs)
    audio = {id(p) for _, p in m.branch_parameters("audio")}
    visual = {id(p) for _, p in m.branch_parameters("visual")}
    assert audio and visual and not audio & visual
    rest = {id(p) for p in m.parameters()} - audio - visual
    assert rest and all(not n.startswith(("audio_branch", "visual_branch")) for n, p in m.named_parameters()
                        if id(p) in rest)  # fmt: skip


def test_resnet18_matches_torchvision():
    ours, ref = ResNet18(3, 64).eval(), torchvision.models.resnet18().eval()
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 64, 64)
    body = torch.nn.Sequential(*list(ref.children())[:-2])
    assert torch.allclose(ours(x), body(x), atol=1e-5)
    assert resnet_grid(224) == 7 and resnet_grid(64) == 2 and resnet_grid(32) == 1


def test_build_model_errors_list_valid_names():
    with pytest.raises(
        ValueError, match=r'^model: "vgg" is not allowed: must be one of avel, resnet18, cgmnist$'
    ):
        build_model("vgg", "concat")
    with pytest.raises(
        ValueError, match=r'fusion for avel: "film" is not allowed: must be one of concat, dmrn$'
    ):
        build_model("avel", "film")
    with pytest.raises(ValueError, match="train end to end"):
        build_model("resnet18", "concat")
    with pytest.raises(
        ValueError, match=r'modality: "av" is not allowed: must be one of both, audio, visual'
    ):
        build_model("avel", "concat", modality="av")


def test_pretrained_needs_width_64():
    with pytest.raises(ValueError, match="width 64"):
        build_model("resnet18", "concat", input_mode="e2e", width=8, pretrained=True)
