"""BalanceBenchmark's optimization-, forward- and data-level rebalancers (issue 28): AGM, AMCo, MLA.

Each key quantity against a hand computation, one real training run per model family, resume mid-run
exact, MLA's test-time fusion in ``avel evaluate`` / ``avel predict``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from toy_models import ConcatModel

from avel.balance import build_balancer
from avel.balance.agm import (
    AGM,
    agm_coefficients,
    clip_when_head_exceeds,
    mono_score_sums,
    scale_gradient,
    shapley_responses,
)
from avel.balance.amco import AMCo, AMCoModel, class_mask, dependence_mass, mask_rate
from avel.balance.mla import MLA, MLAModel, entropy, gating_weights, owm_alpha, owm_update
from avel.data.splits import DataSplits, SplitData
from avel.engine.checkpoint import model_from_checkpoint
from avel.engine.config import load_config
from avel.engine.train import check_applicable, run_training

# The full suite only: processes, grids, kills and CLI round trips (the fast tier: -m 'not slow').
pytestmark = pytest.mark.slow

TIMING = {"time_s", "train_time_s", "prototype_time_s", "samples_per_s"}


def clip_data(n: int = 16, seed: int = 0) -> SplitData:
    g = torch.Generator().manual_seed(seed)
    return SplitData(torch.randn(n, 5, generator=g), torch.randn(n, 6, generator=g), torch.arange(n) % 3)


def _model() -> ConcatModel:
    torch.manual_seed(0)
    return ConcatModel()


def _metrics(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


MODALITY_KEYS = {"val_audio_accuracy", "val_visual_accuracy", "val_rho"}


def _resumed(run_dir):
    """metrics.jsonl without the per-modality values, which only a run's last epoch has (the cut run's
    first half ended one epoch early)."""
    return [{k: v for k, v in r.items() if k not in MODALITY_KEYS} for r in _metrics(run_dir)]


def _cfg(data, out, **kw):
    base = {"data": str(data), "model": "avel", "fusion": "concat", "epochs": 2, "batch_size": 8, "lr": 3e-3,
            "device": "cpu", "progress": False, "out": str(out)}  # fmt: skip
    return load_config(None, {**base, **kw})


# ------------------------------------------------------------------------------------------------ AGM


def test_shapley_responses_by_hand():
    full, pad_v, pad_a, zero = (torch.tensor([[x, 1.0]]) for x in (4.0, 3.0, 2.0, 0.5))
    phi_a, phi_v = shapley_responses(full, pad_v, pad_a)  # code: ½ (f(a,v) − f(0,v) + f(a,0))
    assert torch.allclose(phi_a, torch.tensor([[0.5 * (4 - 2 + 3), 0.5]]))
    assert torch.allclose(phi_v, torch.tensor([[0.5 * (4 - 3 + 2), 0.5]]))
    assert torch.allclose(phi_a + phi_v, full)
    phi_a, phi_v = shapley_responses(
        full, pad_v, pad_a, zero
    )  # paper: ½[f(a,0) − f(0,0)] + ½[f(a,v) − f(0,v)]
    assert torch.allclose(phi_a[0, 0], torch.tensor(0.5 * (3 - 0.5) + 0.5 * (4 - 2)))
    assert torch.allclose(phi_v[0, 0], torch.tensor(0.5 * (2 - 0.5) + 0.5 * (4 - 3)))
    assert torch.allclose(phi_a + phi_v, full - zero)  # efficiency of the Shapley value


def test_agm_scores_and_coefficients_by_hand():
    phi = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]]))
    s = mono_score_sums(phi, torch.tensor([0, 2]), torch.ones(2))  # p_y = 0 is floored at 1e-8
    assert torch.isclose(s, torch.tensor(-math.log(0.7) - math.log(1e-8)), rtol=1e-5)
    k_a, k_v = agm_coefficients(*(torch.tensor(x) for x in (0.5, 1.0, 0.6, 0.9)), alpha=1.0, cap=10.0)
    assert torch.isclose(k_a, torch.tensor(math.exp(math.exp(0.3) - math.exp(0.5))))
    assert torch.isclose(k_v, torch.tensor(math.exp(math.exp(-0.3) - math.exp(-0.5))))
    k_a, _ = agm_coefficients(*(torch.tensor(x) for x in (5.0, 5.0, 0.0, 9.0)), alpha=0.5, cap=7.0)
    assert torch.isclose(k_a, torch.tensor(math.exp(0.5 * 7.0)))  # min(r̄ − r, cap)


def test_scale_gradient_keeps_the_value_and_scales_the_gradient():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = scale_gradient(x, torch.tensor(0.25))
    assert torch.equal(y, x.detach())
    y.sum().backward()
    assert torch.equal(x.grad, torch.full((2,), 0.25))


def test_agm_step_gradient_is_the_hand_combination_of_the_three_passes():
    """Code variant: ∂L = ½(k_a + k_v) g·∂f(a,v) + ½(k_a − k_v) g·∂f(a,0) + ½(k_v − k_a) g·∂f(0,v),
    g = ∂L/∂f."""
    model, batch = _model(), clip_data().batch(torch.arange(6))
    agm = AGM(alpha=1.0)
    agm.running = torch.tensor([0.9, 1.4])  # S^a, S^v of earlier steps
    agm.steps = 5
    res = agm.training_loss(model, batch)
    full = model(batch.audio, batch.visual).logits
    assert torch.isclose(res.loss, F.cross_entropy(full, batch.labels), atol=1e-6)  # φ^a + φ^v = f(a, v)
    model.zero_grad()
    res.loss.backward()
    got = [p.grad.clone() for p in model.parameters()]
    k_a, k_v = res.logs["coef_audio"], res.logs["coef_visual"]
    assert not torch.isclose(k_a, k_v)
    pad_v = model(batch.audio, torch.zeros_like(batch.visual)).logits
    pad_a = model(torch.zeros_like(batch.audio), batch.visual).logits
    g = (torch.softmax(full.detach(), -1) - F.one_hot(batch.labels, 3)) / 6
    combo = (g * ((k_a + k_v) / 2 * full + (k_a - k_v) / 2 * pad_v + (k_v - k_a) / 2 * pad_a)).sum()
    want = torch.autograd.grad(combo, list(model.parameters()))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # the scores and the running means: S ← S·5/6 + s/6
    with torch.no_grad():
        phi_a, phi_v = shapley_responses(full, pad_v, pad_a)
        s_a = F.cross_entropy(phi_a, batch.labels)
        s_v = F.cross_entropy(phi_v, batch.labels)
    assert torch.isclose(res.logs["score_audio"], s_a, atol=1e-5)
    assert torch.allclose(agm.running, torch.tensor([0.9 * 5 / 6, 1.4 * 5 / 6]) + torch.stack([s_a, s_v]) / 6)
    want_a, want_v = agm_coefficients(s_a, s_v, torch.tensor(0.9), torch.tensor(1.4), 1.0, 10.0)
    assert torch.isclose(k_a, want_a, atol=1e-5) and torch.isclose(k_v, want_v, atol=1e-5)


def test_agm_outside_its_window_is_plain_training_and_clip_acts_on_head_peaks():
    model, batch = _model(), clip_data().batch(torch.arange(6))
    agm = AGM(window=(2, 4))
    res = agm.training_loss(model, batch)  # epoch 0: outside
    assert res.logs["coef_audio"] == 1 and res.logs["coef_visual"] == 1
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    clip_when_head_exceeds(model, 1.0)  # every head entry within [−1, 1]: untouched
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    model.fc.weight.grad[0, 0] = 3.0
    clip_when_head_exceeds(model, 1.0)
    norm = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    assert norm == pytest.approx(1.0, rel=1e-4)


# ----------------------------------------------------------------------------------------------- AMCo


def test_amco_mask_rate_masks_and_dependence_by_hand():
    assert mask_rate(0.0, 0.3) == 0.0
    assert mask_rate(0.15, 0.3) == pytest.approx(math.sin(math.pi / 4))
    assert mask_rate(0.9, 0.3) == pytest.approx(1.0)
    mask = class_mask(6, 0.5, torch.Generator().manual_seed(0))
    assert sorted(mask.tolist()) == [0, 0, 0, 1, 1, 1]
    assert class_mask(6, 0.99, torch.Generator()).sum() == 1  # ⌊0.99·6⌋ = 5 zeros
    la = torch.zeros(1, 2)  # softmax([0, 0, log 3, log 3]) = [1, 1, 3, 3] / 8
    lv = torch.log(torch.full((1, 2), 3.0))
    mass = dependence_mass(la, lv, torch.ones(1))
    assert torch.allclose(mass, torch.tensor([0.25, 0.75, 1.0]))


def test_amco_masks_the_dependent_modality_at_the_scheduled_rate():
    amco = AMCo(sigma=0.5, eps=0.3)
    model = amco.prepare_model(_model())
    data = clip_data()
    amco.on_epoch_start(model, DataSplits(data, data, data), 0)
    batch = data.batch(torch.arange(6))
    res = amco.training_loss(model, batch)  # epoch 0: l_t stays 0, nothing masked
    assert res.logs["mask_rate"] == 0 and res.logs["masked_audio"] == 0 and res.logs["masked_visual"] == 0
    amco.on_epoch_start(model, DataSplits(data, data, data), 3)  # l_t: 0, 0.3, 0.6 ...
    amco.training_loss(model, batch)
    dep = amco.dependent.clone()
    res = amco.training_loss(model, batch)  # rate sin(π/2) = 1: every class of the dependent one masked
    assert res.logs["mask_rate"] == pytest.approx(1.0)
    z_a, z_v = model.encode(batch.audio, batch.visual)
    la, lv, _ = model.split(z_a, z_v)
    la_m, lv_m = la * (~dep[0]).float(), lv * (~dep[1]).float()
    logits = model.linear_star(la_m + lv_m)
    want = sum(F.cross_entropy(x, batch.labels) for x in (logits, la_m, lv_m))
    assert torch.isclose(res.loss, want, atol=1e-6)
    assert bool(dep.any())
    with torch.no_grad():  # evaluation: no mask
        assert torch.allclose(model(batch.audio, batch.visual).logits, model.linear_star(la + lv))


def test_amco_refuses_fusions_without_split_logits():
    cfg = load_config(None, {"model": "resnet18", "fusion": "film", "balance": "amco"})
    assert (
        check_applicable(cfg)
        == "AMCo needs split logits (concat or sum fusion); film fusion does not split them"
    )
    assert isinstance(AMCo().prepare_model(_model()), AMCoModel)


# ------------------------------------------------------------------------------------------------ MLA


def test_mla_entropy_gating_by_hand():
    la = torch.zeros(1, 2)  # uniform: e = log 2
    lv = torch.tensor([[0.0, math.log(3.0)]])  # p = (1/4, 3/4)
    e_v = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    w_a, w_v = gating_weights(la, lv)
    g_a, g_v = math.exp(0.0), math.exp(math.log(2) - e_v)  # exp(max e − e^m)
    assert w_a.item() == pytest.approx(g_a / (g_a + g_v)) and w_v.item() == pytest.approx(g_v / (g_a + g_v))
    # the released code: softmax over the batch (dim 0), one entropy per batch
    x = torch.tensor([[0.0, 1.0], [math.log(3.0), 1.0]])
    p0 = torch.tensor([0.25, 0.75])
    assert entropy(x, "batch").item() == pytest.approx(float(-(p0 * p0.log()).sum() + math.log(2)), rel=1e-5)


def test_owm_projector_by_hand():
    assert owm_alpha(0, 10) == pytest.approx(0.1) and owm_alpha(5, 10) == pytest.approx(0.1**1.5)
    P = owm_update(torch.eye(2), torch.tensor([[1.0, 0.0]]), alpha=0.1)  # I − k kᵀ/(0.1 + 1), k = e1
    d = torch.tensor([1 - 1 / 1.1, 1.0])
    assert torch.allclose(P, torch.diag(d) / torch.linalg.vector_norm(d))


@pytest.mark.parametrize("projection", ["none", "paper", "balancemm"])
def test_mla_alternates_modalities_and_projects_the_shared_heads_gradient(projection):
    mla = MLA(projection=projection)
    model = mla.prepare_model(_model())
    data = clip_data()
    mla.on_epoch_start(model, DataSplits(data, data, data), 0)
    batch = data.batch(torch.arange(8))  # 16 rows / 8: two batches per epoch
    grads = []
    for turn, modality in enumerate(("audio", "visual", "audio")):
        res = mla.training_loss(model, batch)
        assert list(res.logs) == [f"loss_{modality}"]
        z = model.encode(batch.audio, batch.visual)[turn % 2]
        assert torch.isclose(res.loss, F.cross_entropy(model.head(z), batch.labels))
        model.zero_grad()
        res.loss.backward()
        plain = model.head.weight.grad.clone()
        P_before = mla.P.clone() if mla.P is not None else torch.eye(4)
        mla.before_optimizer_step(model, res)
        grads.append((plain, model.head.weight.grad.clone(), P_before, z.detach().mean(0, keepdim=True)))
    assert torch.equal(grads[0][0], grads[0][1])  # the very first step is never projected
    plain, got, P_before, r = grads[1]
    if projection == "none":  # the released code: P stays I, the gradient untouched
        assert mla.P is None and torch.equal(plain, got)
        return
    P = owm_update(P_before, r, owm_alpha(0, 2))  # batch 0 of 2
    want = plain @ P.T if projection == "paper" else plain + plain @ P.T
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert mla.batch_index == 1 and mla.turn == 1


def test_mla_model_forward_is_the_entropy_weighted_fusion():
    model = MLAModel(_model(), fusion="sample")
    batch = clip_data().batch(torch.arange(5))
    with torch.no_grad():
        z_a, z_v = model.encode(batch.audio, batch.visual)
        la, lv = model.head(z_a), model.head(z_v)
        w_a, w_v = gating_weights(la, lv)
        assert torch.allclose(model(batch.audio, batch.visual).logits, w_a * la + w_v * lv)
        assert torch.allclose(w_a + w_v, torch.ones_like(w_a))
    with pytest.raises(ValueError, match='MLA fusion: "mean" is not allowed: must be one of sample, batch'):
        MLA(fusion="mean")


# --------------------------------------------------------------------------------- real training runs


@pytest.mark.parametrize(
    "balance,extra",
    [("agm", {}), ("amco", {}), ("mla", {"mla_projection": "paper"})],
)
def test_avel_features_training_resumes_mid_run_exactly(features_h5, tmp_path, balance, extra):
    """Two epochs straight = one epoch, then the same command resumed (AMCo's l_t at epoch ≥ 1, AGM's
    running scores, MLA's projector P all come back from the checkpoint)."""
    quiet = lambda s: None  # noqa: E731
    kw = {"balance": balance, "modality_eval_every": 1, **extra}
    full = run_training(_cfg(features_h5, tmp_path / "full", epochs=2, **kw), log=quiet)
    run_training(_cfg(features_h5, tmp_path / "cut", epochs=1, **kw), log=quiet)
    msgs: list[str] = []
    cut = run_training(_cfg(features_h5, tmp_path / "cut", epochs=2, **kw), log=msgs.append)
    assert any("resuming" in m and "epoch 1" in m for m in msgs)
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "cut")
    assert full["test_accuracy"] == cut["test_accuracy"]
    lines = _metrics(tmp_path / "full")
    assert lines[-1]["val_accuracy"] > 0.2  # it learns (always-background is ~0.3 on the toy set)
    key = {"agm": "coef_audio", "amco": "mask_rate", "mla": "loss_visual"}[balance]
    assert key in lines[-1]


def test_mla_takes_two_optimizer_steps_per_batch_and_its_fusion_evaluates(features_h5, tmp_path):
    from avel.engine.evaluate import evaluate
    from avel.families import load_splits

    res = run_training(
        _cfg(features_h5, tmp_path / "m", balance="mla", epochs=1, optimizer="adam"), log=lambda s: None
    )
    ckpt = torch.load(tmp_path / "m" / "last.pt", weights_only=False)
    data = load_splits(features_h5, device="cpu")
    batches = math.ceil(len(data.train) / 8)
    steps = [int(s["step"]) for s in ckpt["optimizer"]["state"].values()]
    assert max(steps) == 2 * batches and min(steps) == batches  # the shared head: both; a branch: its own
    model, _ = model_from_checkpoint(tmp_path / "m" / "best.pt")
    assert isinstance(model, MLAModel) and model.fusion == "sample"
    assert evaluate(model, data.test)["accuracy"] == pytest.approx(res["test_accuracy"])


@pytest.mark.slow  # a real epoch of ResNet18 / CG-MNIST / end-to-end AVEL: the fast tier skips it
@pytest.mark.parametrize("balance", ["agm", "amco", "mla"])
def test_resnet18_one_epoch(tiny_h5, tmp_path, balance):
    kw = {"model": "resnet18", "balance": balance, "epochs": 1, "width": 8, "batch_size": 4, "frames": 2}
    res = run_training(_cfg(tiny_h5, tmp_path / "r18", **kw), log=lambda s: None)
    assert 0.0 <= res["test_accuracy"] <= 1.0


@pytest.fixture(scope="module")
def cg_tiny(tmp_path_factory):
    from test_intermediate import _write_tiny_mnist

    from avel.synth.cgmnist import CGMNISTConfig, make_cgmnist

    folder = tmp_path_factory.mktemp("mnist_idx")
    _write_tiny_mnist(folder)
    out = tmp_path_factory.mktemp("cg_part2") / "cg.h5"
    make_cgmnist(out, CGMNISTConfig(seed=0, test_color_match=0.0), mnist_dir=folder)
    return out


@pytest.mark.slow  # a real epoch of ResNet18 / CG-MNIST / end-to-end AVEL: the fast tier skips it
@pytest.mark.parametrize("balance,fusion", [("agm", "concat"), ("amco", "concat"), ("mla", "film")])
def test_cgmnist_one_epoch(cg_tiny, tmp_path, balance, fusion):
    res = run_training(
        _cfg(cg_tiny, tmp_path / "cg", model="cgmnist", fusion=fusion, balance=balance, epochs=1),
        log=lambda s: None,
    )
    assert 0.0 <= res["test_accuracy"] <= 1.0


@pytest.mark.slow  # a real epoch of ResNet18 / CG-MNIST / end-to-end AVEL: the fast tier skips it
def test_mla_checkpoint_predicts_a_video_with_its_fusion(tiny_h5, tiny_ave, tmp_path):
    from avel.tools.predict import predict_video

    out = tmp_path / "run"
    run_training(_cfg(tiny_h5, out, balance="mla", epochs=1, width=8, batch_size=8), log=lambda s: None)
    video = sorted((tiny_ave / "AVE").glob("*.mp4"))[0]
    pred = predict_video(out / "best.pt", video)
    model, _ = model_from_checkpoint(out / "best.pt")
    assert isinstance(model, MLAModel)
    assert len(pred["segments"]) == 10 and all(0 < s["confidence"] <= 1 for s in pred["segments"])


def test_unknown_options_and_refusals_name_why():
    with pytest.raises(ValueError, match='AGM variant: "shap" is not allowed: must be one of code, paper'):
        build_balancer("agm", variant="shap")
    dmrn = load_config(None, {"model": "avel", "fusion": "dmrn", "balance": "amco"})
    assert (
        check_applicable(dmrn)
        == "AMCo needs split logits (concat or sum fusion); dmrn fusion does not split them"
    )
    for name in ("agm", "mla"):  # every fusion: f with zeroed inputs / a shared head on z
        assert (
            check_applicable(load_config(None, {"model": "avel", "fusion": "dmrn", "balance": name})) is None
        )


# --------------------------------------------------------------------------------------------- Greedy


def test_greedy_speeds_and_bdr_by_hand():
    from avel.balance.greedy import bdr_difference, speed_ratio

    p = [torch.tensor([3.0, 4.0]), torch.tensor([1.0])]  # Σ‖θ‖² = 26
    g = [torch.tensor([1.0, 0.0]), None]  # Σ‖∇θ‖² = 1
    assert speed_ratio(g, p) == pytest.approx(1 / 26)
    d = bdr_difference(torch.tensor([1.0, 10.0]), torch.tensor([10.0, 1.0]))
    assert d == pytest.approx(math.log10(0.1) - math.log10(10.0))


def test_greedy_window_opens_for_the_caring_modality_and_closes_after_window_steps():
    from avel.balance.greedy import window_step

    f = torch.tensor(False)
    zero = torch.tensor(0)
    cur, care, step = window_step(f, zero, zero, torch.tensor(0.005), eps=0.01, window=3)
    assert not cur and care == 0  # |d| ≤ ε: ordinary steps
    cur, care, step = window_step(f, zero, zero, torch.tensor(-0.5), eps=0.01, window=3)
    assert cur and care == 1 and step == 0  # BDR^a < BDR^v: visual is cared for
    seen = []
    for _ in range(3):
        cur, care, step = window_step(cur, care, step, torch.tensor(9.0), eps=0.01, window=3)
        seen.append((bool(cur), int(care), int(step)))
    assert seen == [(True, 1, 1), (True, 1, 2), (False, 1, 3)]  # d inside the window is not read
    cur, care, _ = window_step(f, care, step, torch.tensor(0.2), eps=0.01, window=3)
    assert cur and care == 0


def test_greedy_replaces_the_caring_gate_by_its_running_average():
    from avel.balance.greedy import Greedy, GreedyModel, mmtm_layers
    from avel.families import build_model

    torch.manual_seed(0)
    base = build_model(family="cgmnist", fusion="mmtm", input_mode="e2e", num_classes=10)
    model = Greedy(average="own").prepare_model(base)
    assert isinstance(model, GreedyModel) and len(mmtm_layers(model)) == 3
    layer = mmtm_layers(model)[0]
    g1 = (torch.rand(4, layer.fc_audio.out_features), torch.rand(4, layer.fc_visual.out_features))
    g2 = (torch.rand(4, layer.fc_audio.out_features), torch.rand(4, layer.fc_visual.out_features))
    model.train()
    out = model.gates(layer, *g1)
    assert torch.equal(out[0], g1[0]) and torch.equal(out[1], g1[1])  # not curating: unchanged
    model.avg_steps.fill_(1)  # as after one whole forward
    model.curating.fill_(True)
    model.caring.fill_(0)
    a, v = model.gates(layer, *g2)
    want = (g1[0].mean(0) + g2[0].mean(0)) / 2  # the running mean over both forwards
    assert torch.allclose(a, want.expand_as(a)) and torch.equal(v, g2[1])
    model.eval()  # evaluation: the model's own gates, averages untouched
    assert torch.equal(model.gates(layer, *g1)[0], g1[0])
    assert check_applicable(load_config(None, {"model": "cgmnist", "fusion": "concat", "balance": "greedy"}))
    why = check_applicable(load_config(None, {"model": "avel", "fusion": "concat", "balance": "greedy"}))
    assert why.startswith("greedy re-balances through MMTM's cross-modal gates: it needs --fusion mmtm")


def test_greedy_on_cgmnist_mmtm_resumes_exactly(cg_tiny, tmp_path):
    quiet = lambda s: None  # noqa: E731
    kw = {"model": "cgmnist", "fusion": "mmtm", "balance": "greedy", "greedy_start": 0, "greedy_eps": 0.0}
    full = run_training(_cfg(cg_tiny, tmp_path / "full", epochs=2, **kw), log=quiet)
    run_training(_cfg(cg_tiny, tmp_path / "cut", epochs=1, **kw), log=quiet)
    cut = run_training(_cfg(cg_tiny, tmp_path / "cut", epochs=2, **kw), log=quiet)
    assert _resumed(tmp_path / "full") == _resumed(tmp_path / "cut")
    assert full["test_accuracy"] == cut["test_accuracy"]
    lines = _metrics(tmp_path / "full")
    assert lines[0]["curation_mode"] > 0  # ε = 0: a window opens at every chance
    model, _ = model_from_checkpoint(tmp_path / "full" / "best.pt")
    assert model.avg_steps.item() > 0  # the running averages travel with the checkpoint


# ----------------------------------------------------------------------------------------- ReLearning


def test_relearning_purity_scaling_and_strength_by_hand():
    from avel.balance.relearning import kmeans, minmax_scale, purity, reinit_strength

    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    clusters = torch.tensor([5, 5, 5, 7, 7, 9])  # majorities 2 + 2 + 1 of 6
    assert purity(labels, clusters) == pytest.approx(5 / 6)
    x = torch.tensor([[0.0, 3.0], [5.0, 3.0], [10.0, 3.0]])
    assert torch.allclose(minmax_scale(x), torch.tensor([[-1.0, -1.0], [0.0, -1.0], [1.0, -1.0]]))
    assert reinit_strength(0.1, 3.0) == pytest.approx(math.tanh(0.3))
    g = torch.Generator().manual_seed(0)  # three well-separated blobs: k-means finds them
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    y = torch.arange(3).repeat_interleave(20)
    pts = centres[y] + 0.3 * torch.randn(60, 2, generator=g)
    assert purity(y, kmeans(pts, 3, seed=0)) == 1.0
    assert torch.equal(kmeans(pts, 3, seed=4), kmeans(pts, 3, seed=4))


def test_relearning_pulls_each_branch_towards_its_initialisation_by_alpha():
    from avel.balance.relearning import ReLearning

    rl = ReLearning(every=2, times=1)
    model = rl.prepare_model(_model())
    theta0 = [p.detach().clone() for _, p in model.branch_parameters("audio")]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    moved = [p.detach().clone() for _, p in model.branch_parameters("audio")]
    rl.reinit(model, "audio", 0.25)
    for (_, p), p0, p1 in zip(model.branch_parameters("audio"), theta0, moved, strict=True):
        assert torch.allclose(p, 0.25 * p0 + 0.75 * p1)
    assert [rl.due(e) for e in range(1, 7)] == [False, False, True, False, True, False]
    rl.done = 1
    assert not rl.due(3)  # at most `times`


def test_relearning_real_run_re_initialises_and_resumes_exactly(features_h5, tmp_path):
    quiet = lambda s: None  # noqa: E731
    kw = {"balance": "relearning", "relearning_every": 1, "relearning_times": 1}
    full = run_training(_cfg(features_h5, tmp_path / "full", epochs=3, **kw), log=quiet)
    run_training(_cfg(features_h5, tmp_path / "cut", epochs=2, **kw), log=quiet)
    cut = run_training(_cfg(features_h5, tmp_path / "cut", epochs=3, **kw), log=quiet)
    lines = _metrics(tmp_path / "full")
    assert _resumed(tmp_path / "cut") == _resumed(tmp_path / "full")
    assert full["test_accuracy"] == cut["test_accuracy"]
    assert "reinit_audio" not in lines[0] and "reinit_audio" not in lines[1]  # after epoch 1, once
    assert 0 <= lines[2]["reinit_audio"] < 1 and 0 < lines[2]["purity_train_visual"] <= 1


# ------------------------------------------------------------------------------------------ valuation


def test_valuation_contributions_copies_and_drop_table_by_hand():
    from avel.balance.valuation import contributions, copies, drop_table

    t, f = torch.tensor([True]), torch.tensor([False])
    cases = {  # (audio right, visual right, fused right) -> (φ^a, φ^v)
        (t, t, t): (1.0, 1.0), (t, f, t): (1.5, 0.5), (f, t, f): (-0.5, 0.5), (f, f, f): (0.0, 0.0),
    }  # fmt: skip
    for (ra, rv, rav), (pa, pv) in cases.items():
        phi_a, phi_v = contributions(ra, rv, rav)
        assert (phi_a.item(), phi_v.item()) == (pa, pv)
    phi = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.5])
    assert copies(phi).tolist() == [3, 2, 1, 0, 0]  # φ = 1 is outside (0.4, 1): no copy
    count, table = drop_table(torch.tensor([0.5, 1.0]), torch.tensor([-0.5, 1.5]))
    assert count.tolist() == [5, 1]
    assert table[0, :5].tolist() == [0, 2, 1, 1, 1]  # once plain, once visual zeroed, thrice audio zeroed
    assert table[1, 0] == 0


def test_valuation_occurrences_follow_the_epochs_order():
    from avel.balance.valuation import occurrence

    seen = torch.tensor([0, 2, 0])
    occ = occurrence(torch.tensor([1, 0, 1, 2, 0]), seen)
    assert occ.tolist() == [2, 0, 3, 0, 1]


def test_valuation_resamples_from_the_warmup_on_and_resumes_exactly(cg_tiny, tmp_path):
    quiet = lambda s: None  # noqa: E731
    kw = {"model": "cgmnist", "balance": "valuation", "valuation_warmup": 1}
    full = run_training(_cfg(cg_tiny, tmp_path / "full", epochs=3, **kw), log=quiet)
    run_training(_cfg(cg_tiny, tmp_path / "cut", epochs=2, **kw), log=quiet)
    cut = run_training(_cfg(cg_tiny, tmp_path / "cut", epochs=3, **kw), log=quiet)
    lines = _metrics(tmp_path / "full")
    assert _resumed(tmp_path / "cut") == _resumed(tmp_path / "full")
    assert full["test_accuracy"] == cut["test_accuracy"]
    assert "resampled_rows" not in lines[0] and lines[1]["resampled_rows"] >= 32  # train: 32 rows + copies
    # the mean over steps of each batch's share of copies (a smaller last batch weighs the same)
    assert lines[1]["dropped"] == pytest.approx(1 - 32 / lines[1]["resampled_rows"], abs=0.05)
    why = check_applicable(load_config(None, {"model": "avel", "balance": "valuation"}))
    assert why == "valuation values and re-samples whole clips; the AVEL localizer predicts per segment"


# ----------------------------------------------------------------------------------------- ReconBoost


def test_reconboost_boosting_loss_by_hand():
    from avel.balance.reconboost import boosting_loss

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    join = torch.log(torch.tensor([[0.1, 0.6, 0.3]]))
    loss, q = boosting_loss(logits, join, torch.tensor([1]), w1=5.0, w2=1.0)
    assert q.item() == pytest.approx(0.6)
    assert loss.item() == pytest.approx((-5 * math.log(0.3) + 0.6 * math.log(0.3)) / 3, rel=1e-5)
    loss, q = boosting_loss(logits, None, torch.tensor([0]), w1=5.0, w2=1.0)  # empty ensemble: q_y = 1
    assert q.item() == 1 and loss.item() == pytest.approx(-4 * math.log(0.5) / 3, rel=1e-5)


def test_reconboost_stages_alternate_and_only_the_stages_learner_learns():
    from avel.balance.reconboost import ReconBoost, ReconBoostModel

    rb = ReconBoost(boost_epochs=2, correct_epochs=1)
    phases = [rb.phase(e) for e in range(7)]
    assert [(k, m) for _, k, m in phases] == [
        ("boost", 0), ("boost", 0), ("correct", 0), ("boost", 1), ("boost", 1), ("correct", 1), ("boost", 0)
    ]  # fmt: skip
    model = rb.prepare_model(_model())
    assert isinstance(model, ReconBoostModel)
    data = clip_data()
    batch = data.batch(torch.arange(6))
    members = []
    for epoch in range(7):
        rb.on_epoch_start(model, DataSplits(data, data, data), epoch)
        members.append(model.members.tolist())
    assert members == [[0, 0], [0, 0], [1, 0], [1, 0], [1, 0], [1, 1], [1, 1]]
    rb.on_epoch_start(model, DataSplits(data, data, data), 3)  # stage 1, boosting visual
    model.zero_grad()
    rb.training_loss(model, batch).loss.backward()
    assert model.base.visual_branch.weight.grad is not None and model.base.audio_branch.weight.grad is None
    assert model.boost_rate.grad is None and model.head[0].weight.grad is not None
    rb.on_epoch_start(model, DataSplits(data, data, data), 5)  # correction: every learner, h and β
    model.zero_grad()
    res = rb.training_loss(model, batch)
    res.loss.backward()
    assert model.base.audio_branch.weight.grad is not None and model.boost_rate.grad is not None
    with torch.no_grad():
        z_a, z_v = model.encode(batch.audio, batch.visual)
        want = model.boost_rate * (model.head(z_a) + model.head(z_v))
        assert torch.allclose(model(batch.audio, batch.visual).logits, want)
        assert torch.isclose(res.loss, F.cross_entropy(want, batch.labels))


def test_reconboost_avel_run_resumes_mid_stage_exactly(features_h5, tmp_path):
    quiet = lambda s: None  # noqa: E731
    kw = {"balance": "reconboost", "reconboost_boost_epochs": 1, "reconboost_correct_epochs": 1}
    full = run_training(_cfg(features_h5, tmp_path / "full", epochs=3, **kw), log=quiet)
    run_training(_cfg(features_h5, tmp_path / "cut", epochs=2, **kw), log=quiet)
    cut = run_training(_cfg(features_h5, tmp_path / "cut", epochs=3, **kw), log=quiet)
    lines = _metrics(tmp_path / "full")
    assert _resumed(tmp_path / "cut") == _resumed(tmp_path / "full")
    assert full["test_accuracy"] == cut["test_accuracy"]
    assert "loss_boost_audio" in lines[0] and "loss_correct" in lines[1] and "loss_reconcile" in lines[2]
    model, _ = model_from_checkpoint(tmp_path / "full" / "last.pt")
    assert model.members.tolist() == [True, False]  # stage 1 is boosting visual: not yet in the ensemble


def test_valuation_modality_level_resamples_the_larger_gaps_modality_by_hand():
    from avel.balance.valuation import DROP_AUDIO, Valuation, modality_level_table

    phi_a, phi_v = torch.ones(30), torch.zeros(30)  # gaps 0 and 1: d = 2/3, the visual trained alone
    count, table, logs = modality_level_table(phi_a, phi_v, 0.2, 1.0, torch.Generator().manual_seed(0))
    assert logs["resample_share"] == pytest.approx(2 / 3) and int(count.sum()) == 30 + 20
    assert set(table[table != 0].tolist()) == {DROP_AUDIO} and (table[:, 0] == 0).all()
    assert int((table != 0).sum()) == 20
    v = Valuation(level="modality", seed=3)
    v.generator.manual_seed(5)
    w = Valuation(level="modality")
    w.load_state_dict(v.state_dict())  # the draws continue from the checkpoint
    assert torch.equal(torch.rand(3, generator=v.generator), torch.rand(3, generator=w.generator))
    with pytest.raises(
        ValueError, match='Valuation level: "clip" is not allowed: must be one of sample, modality'
    ):
        Valuation(level="clip")
