"""MMTM and CentralNet: blocks against hand computations, the ResNet18-pair assemblies' shapes and information
flow, the auxiliary uni-modal losses, and real training steps with PMR through ``run_training``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from avel.balance.base import output_loss
from avel.engine.checkpoint import model_from_checkpoint
from avel.engine.config import load_config
from avel.engine.train import model_kwargs, run_training
from avel.families import build_model
from avel.models.intermediate import MMTM, CentralSum, excite, fresh_copy, squeeze

# The full suite only: processes, grids, kills and CLI round trips (the fast tier: -m 'not slow').
pytestmark = pytest.mark.slow

AUDIO, VISUAL = torch.randn(2, 1, 257, 40), torch.randn(2, 3, 3, 32, 32)


def test_squeeze_and_excite_over_frames_and_space():
    x = torch.arange(2 * 3 * 4 * 2 * 2, dtype=torch.float32).view(6, 4, 2, 2)  # B=2, K=3 frames, C=4
    s = squeeze(x, 2)
    assert s.shape == (2, 4)
    assert torch.allclose(s[1, 2], x[3:6, 2].mean())  # sample 1 = frames 3..5
    gate = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]])
    y = excite(x, gate, 2)
    assert torch.equal(y[4, 3], 0.5 * x[4, 3]) and torch.equal(y[1, 2], 3.0 * x[1, 2])


def test_mmtm_by_hand():
    torch.manual_seed(0)
    m = MMTM(4, 6, ratio=4)  # bottleneck 2·10/4 = 5
    assert m.fc_squeeze.weight.shape == (5, 10)
    a, v = torch.randn(2, 4, 3, 5), torch.randn(2 * 2, 6, 2, 2)  # audio K=1, visual K=2 frames
    out_a, out_v = m(a, v, 2)
    s_a, s_v = a.mean((2, 3)), v.view(2, 2, 6, 4).mean((1, 3))
    z = torch.relu(torch.cat([s_a, s_v], 1) @ m.fc_squeeze.weight.T + m.fc_squeeze.bias)
    g_a = 2 * torch.sigmoid(z @ m.fc_audio.weight.T + m.fc_audio.bias)  # the paper's 2σ
    g_v = 2 * torch.sigmoid(z @ m.fc_visual.weight.T + m.fc_visual.bias)
    assert torch.allclose(out_a, a * g_a[:, :, None, None], atol=1e-6)
    assert torch.allclose(out_v[2:], v[2:] * g_v[1][:, None, None], atol=1e-6)  # both frames of sample 1
    code = MMTM(4, 6, gate="code")
    code.load_state_dict(m.state_dict())
    c_a, _ = code.gates(s_a, s_v)
    assert torch.allclose(2 * c_a, g_a, atol=1e-6)  # released code: σ, half the paper's gate
    with pytest.raises(ValueError, match='mmtm_gate: "tanh" is not allowed: must be one of paper, code'):
        MMTM(4, 6, gate="tanh")


def test_central_sum_by_hand():
    s = CentralSum()
    with torch.no_grad():
        s.alpha_audio.fill_(0.5), s.alpha_visual.fill_(2.0), s.alpha_central.fill_(-1.0)
    a, v, c = torch.ones(2, 3), torch.full((2, 3), 3.0), torch.full((2, 3), 4.0)
    assert torch.allclose(s(a, v, c), torch.full((2, 3), 0.5 + 6.0 - 4.0))
    assert CentralSum(first=True).alpha_central is None
    assert torch.allclose(CentralSum(first=True)(a, v), a + v)


def test_fresh_copy_has_new_weights_of_the_same_shapes():
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    clone = fresh_copy(layer)
    for (n, p), (_, q) in zip(layer.named_parameters(), clone.named_parameters(), strict=True):
        assert p.shape == q.shape and p.data_ptr() != q.data_ptr(), n
    assert not torch.equal(layer[0].weight, clone[0].weight)


def test_mmtm_classifier_exchanges_information_and_splits_logits():
    torch.manual_seed(0)
    m = build_model("resnet18", "mmtm", input_mode="e2e", num_classes=5, width=8).eval()
    assert sorted(m.mmtm.mmtm) == ["1", "2", "3"]  # after layer2, layer3, layer4
    out = m(AUDIO, VISUAL)
    assert out.logits.shape == (2, 5) and out.z_audio.shape == out.z_visual.shape == (2, 64)
    assert m.splits_logits and torch.allclose(out.logits_audio + out.logits_visual, out.logits, atol=1e-5)
    z_a2, _ = m.encode(AUDIO, torch.randn_like(VISUAL))
    assert not torch.allclose(z_a2, out.z_audio)  # the audio stream sees the visual one (MMTM)
    assert m.encode(AUDIO, VISUAL)[0].shape == (2, 64)
    mean = build_model("resnet18", "mmtm", input_mode="e2e", num_classes=5, width=8, mmtm_head="mean").eval()
    o = mean(AUDIO, VISUAL)  # the released code's head: (fc_a(z_a) + fc_v(z_v)) / 2
    by_hand = (mean.head.fc_a(o.z_audio) + mean.head.fc_v(o.z_visual)) / 2
    assert torch.allclose(o.logits, by_hand, atol=1e-6) and torch.allclose(
        o.logits_audio * 2, mean.head.fc_a(o.z_audio)
    )
    with pytest.raises(ValueError, match='mmtm_head: "sum" is not allowed: must be one of concat, mean'):
        build_model("resnet18", "mmtm", input_mode="e2e", width=8, mmtm_head="sum")
    own = {id(p) for _, p in m.branch_parameters("audio")} | {id(p) for _, p in m.branch_parameters("visual")}
    assert all(id(p) not in own for p in m.mmtm.parameters())  # MMTMs belong to neither stream


def test_centralnet_classifier_by_hand_and_unimodal_losses():
    torch.manual_seed(0)
    m = build_model("resnet18", "centralnet", input_mode="e2e", num_classes=5, width=8).eval()
    assert len(m.central.sums) == 2 and len(m.central.layers) == 2  # levels after layer2, layer3 (+ last)
    out = m(AUDIO, VISUAL)
    z_a2, _ = m.encode(AUDIO, torch.randn_like(VISUAL))
    assert torch.allclose(z_a2, out.z_audio)  # the streams are not changed by the central branch
    m.encode(AUDIO, VISUAL)
    c, fs = m.pooled_central, m.central.final_sum
    h = fs.alpha_central * c + fs.alpha_audio * out.z_audio + fs.alpha_visual * out.z_visual
    assert torch.allclose(out.logits, m.head(h), atol=1e-6)  # the prediction is the central head's
    la, lv = m.head_audio(out.z_audio), m.head_visual(out.z_visual)
    assert len(out.aux_logits) == 2 and torch.allclose(out.aux_logits[0], la)
    y = torch.tensor([1, 3])
    by_hand = F.cross_entropy(out.logits, y) + F.cross_entropy(la, y) + F.cross_entropy(lv, y)
    assert float(output_loss(out, y).detach()) == pytest.approx(float(by_hand.detach()), rel=1e-5)
    plain = build_model(
        "resnet18", "centralnet", input_mode="e2e", num_classes=5, width=8, centralnet_unimodal_loss=False
    )
    assert plain(AUDIO, VISUAL).aux_logits == ()
    with pytest.raises(ValueError, match="fusion 'mmtm' fuses inside the encoders: it needs both modalities"):
        build_model("resnet18", "mmtm", input_mode="e2e", modality="audio", width=8)


def _cfg(data, out, **kw):
    base = {
        "data": str(data),
        "model": "resnet18",
        "epochs": 1,
        "width": 8,
        "batch_size": 4,
        "frames": 2,
        "device": "cpu",
        "progress": False,
        "out": str(out),
    }
    return load_config(None, {**base, **kw})


@pytest.mark.parametrize("fusion", ["mmtm", "centralnet"])
def test_real_training_with_pmr_and_checkpoint_rebuild(tiny_h5, tmp_path, fusion):
    cfg = _cfg(tiny_h5, tmp_path / fusion, fusion=fusion, balance="pmr", mmtm_gate="code", mmtm_head="mean")
    res = run_training(cfg, log=lambda s: None)
    assert 0.0 <= res["test_accuracy"] <= 1.0 and "test_audio_accuracy" in res
    model, ckpt = model_from_checkpoint(tmp_path / fusion / "best.pt")
    assert model.fusion_name == fusion
    if fusion == "mmtm":
        assert ckpt["model_kwargs"]["mmtm_gate"] == "code" and model.mmtm.mmtm["1"].gate_scale == 1.0
        assert ckpt["model_kwargs"]["mmtm_head"] == "mean" and hasattr(model.head, "fc_a")
    else:
        assert ckpt["model_kwargs"]["centralnet_unimodal_loss"] is True
    assert "mmtm_gate" not in model_kwargs(load_config(None, {"model": "resnet18"}), _Meta())


class _Meta:
    meta = {"input_mode": "e2e", "num_classes": 4}


def test_cgmnist_encoders_are_staged_with_fusions_after_the_last_three_convolutions():
    m = build_model("cgmnist", "mmtm", input_mode="e2e", num_classes=10)
    assert [m.mmtm.mmtm[k].fc_audio.out_features for k in ("1", "2", "3")] == [32, 64, 64]
    out = m(torch.randn(3, 1, 28, 28), torch.randn(3, 3, 28, 28))
    assert out.logits.shape == (3, 10) and out.z_audio.shape == (3, 512)
    c = build_model("cgmnist", "centralnet", input_mode="e2e", num_classes=10)
    assert isinstance(c.central.project, nn.Linear) and c.central.project.in_features == 64  # 64 -> 512
    assert c(torch.randn(3, 1, 28, 28), torch.randn(3, 3, 28, 28)).logits.shape == (3, 10)


@pytest.fixture(scope="module")
def cg_small(tmp_path_factory):
    from avel.synth.cgmnist import CGMNISTConfig, make_cgmnist

    folder = tmp_path_factory.mktemp("mnist_idx")
    _write_tiny_mnist(folder)
    out = tmp_path_factory.mktemp("cg_inter") / "cg.h5"
    make_cgmnist(out, CGMNISTConfig(seed=0, test_color_match=0.0), mnist_dir=folder)
    return out


def _write_tiny_mnist(folder):
    import numpy as np
    from test_cgmnist import write_idx

    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 20)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 30, (n, 28, 28)).astype(np.uint8)
        for i, y in enumerate(labels):
            images[i, 4:24, 2 + 2 * y : 4 + 2 * y] = 255
        write_idx(folder / f"{split}-images-idx3-ubyte", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels)


@pytest.mark.parametrize(("fusion", "balance"), [("mmtm", "pmr"), ("centralnet", "gblend")])
def test_cgmnist_training_steps(cg_small, tmp_path, fusion, balance):
    cfg = load_config(
        None,
        {
            "data": str(cg_small),
            "model": "cgmnist",
            "fusion": fusion,
            "balance": balance,
            "gblend_super_epoch": 1,
            "epochs": 2,
            "batch_size": 8,
            "device": "cpu",
            "progress": False,
            "out": str(tmp_path / "run"),
        },
    )
    res = run_training(cfg, log=lambda s: None)
    assert 0.0 <= res["test_accuracy"] <= 1.0
    model, _ = model_from_checkpoint(tmp_path / "run" / "best.pt")
    assert model.fusion_name == fusion and getattr(model, "family", None) in (None, "cgmnist")
