"""The balancer registry, OGM-GE / OGM, OPM, IPRM and modality dropout on tiny real torch models."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from toy_models import ConcatModel

from avel.balance import BALANCERS, build_balancer
from avel.balance.base import StepResult
from avel.balance.dropout import ModalityDropout
from avel.balance.iprm import IPRM, IPRMModel, geodesic_mixup, probe
from avel.balance.ogm import OGMGE, modality_scores, modulate_gradients, ogm_coefficients
from avel.balance.opm import OPM, drop_probability, drop_share, keep_masks
from avel.data.splits import DataSplits, SplitData
from avel.engine import config as config_mod
from avel.engine.config import load_config
from avel.engine.train import NotApplicable, check_applicable, make_balancer
from avel.models.base import AVModel, ModelOutput


class FilmModel(ConcatModel):
    """FiLM fusion: the audio conditions the visual; the logits do not split."""

    splits_logits = False
    fusion_name = "film"

    def __init__(self, d: int = 4, c: int = 3, background: int | None = None):
        super().__init__(d, c, background)
        self.film = nn.Linear(d, 2 * d)
        self.fc = nn.Linear(d, c)

    def fuse(self, z_audio, z_visual):
        gamma, beta = self.film(z_audio).chunk(2, dim=-1)
        return ModelOutput(self.fc(gamma * z_visual + beta), z_audio, z_visual)


def clip_data(n: int = 16, seed: int = 0) -> SplitData:
    g = torch.Generator().manual_seed(seed)
    return SplitData(torch.randn(n, 5, generator=g), torch.randn(n, 6, generator=g), torch.arange(n) % 3)


def segment_data(n: int = 6, seed: int = 0) -> SplitData:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n, 10), generator=g)  # background = 3
    labels[0] = 3
    return SplitData(torch.randn(n, 10, 5, generator=g), torch.randn(n, 10, 6, generator=g), labels)


def make_model(kind: str) -> AVModel:
    torch.manual_seed(0)
    return {
        "clip": lambda: ConcatModel(),
        "segment": lambda: ConcatModel(c=4, background=3),
        "film": lambda: FilmModel(),
    }[kind]()


# ------------------------------------------------------------------------------------------ registry


def test_registry_names_and_errors():
    assert set(BALANCERS) == {
        *("none", "pmr", "ogm-ge", "ogm", "opm", "iprm", "dropout", "gblend"),
        *("mmcosine", "umt", "ume", "mbsd", "cml", "mmpareto", "lfm"),
        *("agm", "amco", "mla", "greedy", "relearning", "valuation", "reconboost"),
    }
    with pytest.raises(
        ValueError, match=r"unknown balancer 'pgm'; valid: \['none', 'dropout', 'gblend', 'ogm-ge'"
    ):
        build_balancer("pgm")
    with pytest.raises(ValueError, match=r"balancer 'ogm-ge' does not take option\(s\) \['q_base'\]"):
        build_balancer("ogm-ge", q_base=0.5)
    assert build_balancer("ogm", alpha=0.3, window=(0, 10), warmup=2).warmup == 2
    # OGM as BML's train_ogm.sh runs it: the code's default OGM_GE (noise on), warm-up `epoch <= 5`
    ogm = build_balancer("ogm")
    assert build_balancer("ogm-ge").ge and ogm.ge and ogm.warmup == 6
    assert not build_balancer("ogm", ge=False).ge
    for epoch, modulating in ((5, False), (6, True)):
        ogm.on_epoch_start(None, None, epoch)
        assert ogm.modulating is modulating


def test_applies_to():
    film, concat = make_model("film"), make_model("clip")
    assert build_balancer("ogm-ge").applies_to(film) == (
        "OGM-GE needs split logits (concat or sum fusion); film fusion does not split them"
    )
    assert build_balancer("ogm").applies_to(film).startswith("OGM needs split logits")
    for name in ("pmr", "ogm-ge", "opm", "iprm", "dropout"):
        assert build_balancer(name).applies_to(concat) is None
    for name in ("pmr", "opm", "iprm", "dropout"):
        assert build_balancer(name).applies_to(film) is None
    film.splits_logits = None  # a model that does not say: found out at step time
    assert OGMGE().applies_to(film) is None
    with pytest.raises(ValueError, match="OGM-GE needs split logits"):
        OGMGE().training_loss(film, clip_data().batch(torch.arange(4)))


def test_check_applicable_for_a_config_and_for_a_model():
    """One answer for train and ablate: balancer × model × modality, from the config or a given model."""
    film = load_config(None, {"model": "resnet18", "fusion": "film", "balance": "ogm-ge"})
    assert check_applicable(film) == (
        "OGM-GE needs split logits (concat or sum fusion); film fusion does not split them"
    )
    assert check_applicable(config_mod.apply(film, {"fusion": "concat"}, "test")) is None
    assert check_applicable(config_mod.apply(film, {"balance": "none"}, "test")) is None
    audio = load_config(None, {"model": "avel", "balance": "pmr", "modality": "audio"})
    assert check_applicable(audio) == "pmr needs both modalities; uni-modal runs use --balance none"
    dmrn = load_config(None, {"model": "avel", "fusion": "dmrn", "balance": "ogm"})
    assert check_applicable(dmrn).startswith("OGM needs split logits")
    with pytest.raises(NotApplicable, match="^--balance ogm-ge does not apply to this model: OGM-GE") as e:
        make_balancer(film, make_model("film"))
    assert e.value.reason == check_applicable(film, make_model("film"))
    assert isinstance(make_balancer(film, make_model("clip")), OGMGE)


# ------------------------------------------------------------------------------------------------ OGM


def test_ogm_scores_and_coefficients_by_hand():
    la = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]))
    lv = torch.log(torch.tensor([[0.4, 0.3, 0.3], [0.3, 0.3, 0.4]]))
    out = ModelOutput(la + lv, torch.zeros(2, 1), torch.zeros(2, 1), la, lv)
    s_a, s_v = modality_scores(out, torch.tensor([0, 1]), None, "OGM-GE")
    assert torch.isclose(s_a, torch.tensor(1.5)) and torch.isclose(s_v, torch.tensor(0.7))
    k_a, k_v, rho_a = ogm_coefficients(s_a, s_v, alpha=0.1)  # audio dominant: ρ_a = 15/7
    assert torch.isclose(k_a, torch.tensor(1 - math.tanh(0.1 * 15 / 7))) and k_v == 1
    assert torch.isclose(rho_a, torch.tensor(15 / 7))
    k_a, k_v, _ = ogm_coefficients(torch.tensor(1.0), torch.tensor(3.0), alpha=0.5)  # visual dominant
    assert k_a == 1 and torch.isclose(k_v, torch.tensor(1 - math.tanh(1.5)))
    k_a, k_v, _ = ogm_coefficients(torch.tensor(2.0), torch.tensor(2.0), alpha=0.5)
    assert k_a == 1 and k_v == 1
    k_a, k_v, _ = ogm_coefficients(torch.tensor(0.0), torch.tensor(0.0), alpha=0.5)  # no event sample
    assert k_a == 1 and k_v == 1
    # background segments (label 2 = background here) do not count
    s_a, _ = modality_scores(out, torch.tensor([0, 2]), 2, "OGM-GE")
    assert torch.isclose(s_a, torch.tensor(0.7))


def _fill_grads(model: AVModel) -> None:
    for p in model.parameters():
        p.grad = torch.ones_like(p)


def test_ogm_scales_only_the_dominant_branchs_conv_weights():
    model = ConcatModel(conv=True)
    _fill_grads(model)
    result = StepResult(
        torch.zeros(()), None, {"coef_audio": torch.tensor(0.3), "coef_visual": torch.tensor(1.0)}
    )
    ogm = OGMGE(ge=False)
    ogm.on_epoch_start(model, None, 0)
    ogm.before_optimizer_step(model, result)
    for name, p in model.named_parameters():
        expected = 0.3 if name == "audio_branch.0.weight" else 1.0  # the 4-D conv weight of audio only
        assert torch.allclose(p.grad, torch.full_like(p, expected)), name
    # a branch without conv weights (feature-based AVEL): every parameter of the branch
    model = ConcatModel()
    _fill_grads(model)
    ogm.before_optimizer_step(model, result)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, torch.full_like(p, 0.3 if name.startswith("audio") else 1.0)), name
    # outside the window, and during OGM's warm-up: untouched
    _fill_grads(model)
    OGMGE(window=(2, 4)).before_optimizer_step(model, result)
    warm = build_balancer("ogm")
    warm.on_epoch_start(model, None, 4)
    warm.before_optimizer_step(model, result)
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())


def test_ge_noise_has_the_gradients_std():
    g0 = torch.randn(64, 16, 3, 3, generator=torch.Generator().manual_seed(0)) * 3.0
    p = nn.Parameter(torch.zeros_like(g0))
    p.grad = g0.clone()
    modulate_gradients([p], torch.tensor(0.5), torch.Generator().manual_seed(1))
    noise = p.grad - 0.5 * g0
    assert abs(noise.mean()) < 0.1
    # std of the gradient before scaling
    assert noise.std().item() == pytest.approx(g0.std().item(), rel=0.03)


# ------------------------------------------------------------------------------------------------ OPM


def test_opm_drop_probability_by_hand():
    """BML's calcu_q: only the dominant modality gets q; equal scores drop nothing."""
    q_a, q_v = drop_probability(torch.tensor(3.0), torch.tensor(1.0), q_base=0.5, lam=0.5)
    assert torch.isclose(q_a, torch.tensor(0.5 * (1 + 0.5 * math.tanh(2.0)))) and q_v == 0
    q_a, q_v = drop_probability(torch.tensor(1.0), torch.tensor(1.0), q_base=0.5, lam=0.5)
    assert q_a == 0 and q_v == 0  # r = tanh(ReLU(0)) = 0 for both
    q_a, q_v = drop_probability(torch.tensor(1.0), torch.tensor(9.0), q_base=0.9, lam=0.5)
    assert q_a == 0 and q_v == 1.0  # clipped
    # θ = Σ d_u q_u / Σ d_u: q/2 for two 512-d features (q = 0.69: kept features × 1/(1 − 0.345))
    assert torch.isclose(drop_share(torch.tensor(0.69), torch.tensor(0.0), 512, 512), torch.tensor(0.345))
    assert torch.isclose(drop_share(torch.tensor(0.0), torch.tensor(0.6), 128, 384), torch.tensor(0.45))


def test_opm_masks_drop_with_q_and_rescale_both_modalities_by_theta():
    g = torch.Generator().manual_seed(0)
    q, zero, one, cpu = torch.tensor(0.5), torch.tensor(0.0), torch.tensor(1.0), torch.device("cpu")
    theta = drop_share(q, zero, 4, 4)  # 0.25
    keep_a, keep_v = keep_masks((20000, 1), q, zero, one, g, cpu, theta)
    assert keep_a.unique().tolist() == [0.0, pytest.approx(4 / 3)]  # kept: 1 / (1 − θ)
    assert (keep_a == 0).float().mean() == pytest.approx(0.5, abs=0.01)
    assert torch.allclose(keep_v, torch.full_like(keep_v, 4 / 3))  # the other modality is rescaled too
    keep_a, keep_v = keep_masks((20000, 1), q, zero, one, g, cpu)  # rescale="dominant": 1 / (1 − q)
    assert keep_a.unique().tolist() == [0.0, 2.0] and torch.equal(keep_v, torch.ones_like(keep_v))
    keep_a, _ = keep_masks((100, 1), q, q, zero, g, cpu, theta)  # not executed
    assert torch.equal(keep_a, torch.ones_like(keep_a))


def test_opm_equal_scores_drop_nothing():
    """Two identical modalities (same weights, same inputs): equal scores, nothing dropped."""
    torch.manual_seed(0)
    model = ConcatModel(da=5, dv=5)
    with torch.no_grad():
        model.visual_branch.load_state_dict(model.audio_branch.state_dict())
        model.fc.weight[:, model.d :] = model.fc.weight[:, : model.d]
    x = torch.randn(8, 5)
    batch = SplitData(x, x.clone(), torch.arange(8) % 3).batch(torch.arange(8))
    logs = OPM(p_exe=1.0, warmup=0).training_loss(model, batch).logs
    assert logs["score_ratio"] == 1 and logs["executed"] == 1
    assert logs["drop_rate_audio"] == 0 and logs["drop_rate_visual"] == 0 and logs["drop_prob"] == 0


def test_opm_step_drops_the_dominant_modality_per_segment():
    model = make_model("segment")
    data = segment_data()
    opm = OPM(p_exe=1.0, warmup=0)
    opm.on_epoch_start(model, None, 0)
    logs = opm.training_loss(model, data.batch(torch.arange(6))).logs
    rates = (logs["drop_rate_audio"], logs["drop_rate_visual"])
    dominant = 0 if logs["score_ratio"] > 1 else 1
    assert rates[1 - dominant] == 0 and 0 < rates[dominant] < 1  # per segment, not per video
    assert logs["executed"] == 1
    warm = OPM()  # warm-up: epochs 0..5 (the released `epoch <= 5`), nothing dropped
    warm.on_epoch_start(model, None, 5)
    logs = warm.training_loss(model, data.batch(torch.arange(6))).logs
    assert logs["drop_rate_audio"] == 0 and logs["drop_rate_visual"] == 0


def test_opm_removes_samples_with_both_modalities_dropped_and_runs_on_film():
    model = make_model("clip")
    opm = OPM(q_base=1.0, p_exe=1.0, warmup=0, drop_both=True)  # every sample loses both
    res = opm.training_loss(model, clip_data().batch(torch.arange(8)))
    assert res.loss == 0 and torch.isfinite(res.loss)
    film = make_model("film")
    res = OPM(warmup=0).training_loss(film, clip_data().batch(torch.arange(8)))  # zeroed-modality scores
    assert torch.isfinite(res.loss) and torch.isfinite(res.logs["score_ratio"])


# -------------------------------------------------------------------------------------------- dropout


def test_modality_dropout_never_drops_both_and_keeps_scale():
    drop = ModalityDropout(p=0.5, seed=0)
    keep_a, keep_v, dropped = drop.drop_masks(torch.zeros(20000, 3))
    assert ((keep_a == 0) & (keep_v == 0)).sum() == 0
    assert set(keep_a.unique().tolist()) <= {0.0, 1.0}  # unscaled
    assert dropped.mean() == pytest.approx(0.5, abs=0.02)
    assert (keep_a == 0).float().mean() == pytest.approx(0.25, abs=0.02)


def test_droppathway_drops_the_whole_batchs_audio_with_probability_p():
    drop = ModalityDropout(p=0.3, variant="droppathway", seed=0)
    batches = [drop.drop_masks(torch.zeros(8, 10, 3)) for _ in range(2000)]
    for keep_a, keep_v, _ in batches:
        assert keep_a.shape == (8, 10, 1) and torch.equal(keep_v, torch.ones_like(keep_v))
        assert keep_a.unique().numel() == 1  # the whole batch or nothing
    rate = sum(float(keep_a[0, 0, 0] == 0) for keep_a, _, _ in batches) / len(batches)
    assert rate == pytest.approx(0.3, abs=0.03)
    with pytest.raises(
        ValueError, match='dropout variant: "batch" is not allowed: must be one of sample, droppathway'
    ):
        ModalityDropout(variant="batch")


# ----------------------------------------------------------------------------------------------- IPRM


def test_geodesic_mixup_ends_and_orthogonal_inputs():
    a = F.normalize(torch.tensor([[1.0, 2.0, 2.0]]), dim=-1)
    v = F.normalize(torch.tensor([[2.0, -1.0, 0.5]]), dim=-1)
    assert torch.allclose(geodesic_mixup(a, v, 1.0), a, atol=1e-6)
    assert torch.allclose(geodesic_mixup(a, v, 0.0), v, atol=1e-6)
    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])  # θ = π/2
    mid = geodesic_mixup(e1, e2, 0.5)
    assert torch.allclose(mid, torch.tensor([[1.0, 1.0]]) / math.sqrt(2.0), atol=1e-6)
    third = geodesic_mixup(e1, e2, 1 / 3)  # sin(π/6) e1 + sin(π/3) e2
    assert torch.allclose(third, torch.tensor([[0.5, math.sqrt(3) / 2]]), atol=1e-6)
    same = geodesic_mixup(a, a, 0.3)  # θ ≈ 0: finite
    assert torch.allclose(same, a, atol=1e-3)
    half = geodesic_mixup(a.bfloat16(), a.bfloat16(), 0.5)  # bf16 features under autocast
    assert torch.allclose(half, a, atol=1e-2)


def test_probe_kl_weights_and_no_graph():
    model = IPRM().prepare_model(make_model("clip"))
    z_a = torch.randn(5, 4, requires_grad=True)
    z_v = torch.randn(5, 4, requires_grad=True)
    out = probe(model, z_a, z_v, torch.ones(5))
    assert all(not t.requires_grad and t.grad_fn is None for t in out.values())
    with torch.no_grad():
        fused, la, lv = model.heads(z_a, z_v, 0.5)
    log_bar = F.log_softmax(fused, -1)
    d_a = F.kl_div(log_bar, F.softmax(la, -1), reduction="batchmean")  # KL(P^a ‖ P̄)
    d_v = F.kl_div(log_bar, F.softmax(lv, -1), reduction="batchmean")
    assert torch.isclose(out["kl_audio"], d_a, atol=1e-6) and torch.isclose(out["kl_visual"], d_v, atol=1e-6)
    assert torch.isclose(out["omega_audio"], d_v / (d_a + d_v), atol=1e-6)


def test_lambda_ema_as_the_released_code_and_eval_at_the_last_probed_lambda():
    model = IPRM().prepare_model(make_model("clip"))
    assert model.lam == 0.5 and model.lam_next == 0.5
    model.update_lambda(torch.tensor(0.2), alpha=0.8)  # λ_1 = 0.8·0.5 + 0.2·0.2 (main_av.py)
    assert torch.isclose(model.lam_next, torch.tensor(0.44)) and model.lam == 0.5  # eval: probed λ_0
    model.update_lambda(torch.tensor(0.7), alpha=0.8)  # λ_2 = 0.8·0.44 + 0.2·0.7
    assert torch.isclose(model.lam_next, torch.tensor(0.492)) and torch.isclose(model.lam, torch.tensor(0.44))
    batch = clip_data().batch(torch.arange(4))
    with torch.no_grad():
        z_a, z_v = model.encode(batch.audio, batch.visual)
        fused, la, lv = model.heads(z_a, z_v, 0.44)
        assert torch.allclose(model(batch.audio, batch.visual).logits, fused + la + lv)
    rebuilt = IPRM().prepare_model(make_model("clip"))
    rebuilt.load_state_dict(model.state_dict())  # λ travels with the model's checkpoint
    assert torch.isclose(rebuilt.lam, torch.tensor(0.44)) and rebuilt.steps == 2
    assert torch.isclose(rebuilt.lam_next, torch.tensor(0.492))
    old = {k: v for k, v in model.state_dict().items() if k != "lam_next"}  # a checkpoint before lam_next
    rebuilt.load_state_dict(old)
    assert torch.isclose(rebuilt.lam_next, torch.tensor(0.44))


def test_lambda_slides_variant():
    model = IPRM().prepare_model(make_model("clip"))
    model.update_lambda(torch.tensor(0.2), alpha=0.8, variant="slides")  # t = 0: λ_1 = ω_0
    assert torch.isclose(model.lam, torch.tensor(0.2)) and torch.isclose(model.lam_next, torch.tensor(0.2))
    model.update_lambda(torch.tensor(0.7), alpha=0.8, variant="slides")  # 0.8·0.2 + 0.2·0.7, eval at λ_2
    assert torch.isclose(model.lam, torch.tensor(0.3)) and torch.isclose(model.lam_next, torch.tensor(0.3))
    with pytest.raises(ValueError, match='IPRM variant: "paper" is not allowed: must be one of code, slides'):
        IPRM(variant="paper")


def test_iprm_step_loss_is_three_cross_entropies_and_updates_lambda():
    model = IPRM().prepare_model(make_model("segment"))
    lazy = IPRMModel(make_model("segment"), dim=None)  # no z_dim: lazy heads
    data = segment_data()
    batch = data.batch(torch.arange(6))
    iprm = IPRM(alpha=0.8)
    res = iprm.training_loss(model, batch)
    omega = res.logs["omega_audio"]
    fused, la, lv = model.heads(*model.encode(batch.audio, batch.visual), omega)
    ce = [F.cross_entropy(x.reshape(-1, 4), batch.labels.reshape(-1)) for x in (fused, la, lv)]
    assert torch.isclose(res.loss, sum(ce), atol=1e-6)
    assert torch.isclose(model.lam_next, 0.8 * 0.5 + 0.2 * omega) and res.logs["lambda"] == 0.5
    assert model.lam == 0.5  # evaluation at the last probed λ
    del lazy.base.z_dim
    assert torch.isfinite(IPRM().training_loss(lazy, batch).loss)
    with pytest.raises(ValueError, match="IPRM trains the model returned by IPRM.prepare_model"):
        iprm.training_loss(make_model("clip"), clip_data().batch(torch.arange(2)))


# ------------------------------------------------------------------------------------- every balancer


def _options(name: str) -> dict:
    return {"pmr": {"subset": 1.0}, "opm": {"warmup": 0}, "ogm": {"warmup": 0}}.get(name, {})


def _teachers(kind: str) -> dict[str, AVModel]:
    """Frozen toy models standing in for UMT's uni-modal teachers (seeded apart from the student)."""
    torch.manual_seed(1)
    teachers = {m: make_model(kind).eval() for m in ("audio", "visual")}
    for t in teachers.values():
        t.requires_grad_(False)
    return teachers


def _build(name: str, kind: str):
    balancer = build_balancer(name, **_options(name))
    if name == "umt":
        balancer.teachers = _teachers(kind)
    return balancer


def _run(name: str, kind: str, steps: int = 3) -> tuple[list[float], AVModel, object]:
    model = make_model(kind)
    data = segment_data(12) if kind == "segment" else clip_data()
    balancer = _build(name, kind)
    model = balancer.prepare_model(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    balancer.on_epoch_start(model, DataSplits(data, data, data), 0)
    losses = []
    for step in range(steps):
        batch = data.batch(torch.arange(step, step + 4))
        result = balancer.training_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        result.loss.backward()
        balancer.before_optimizer_step(model, result)
        opt.step()
        assert all(v.dim() == 0 and not v.requires_grad for v in result.logs.values())
        assert all(torch.isfinite(v) for v in result.logs.values())
        losses.append(float(result.loss.detach()))
    return losses, model, balancer


@pytest.mark.parametrize("kind", ["clip", "segment"])
@pytest.mark.parametrize("name", list(BALANCERS))
def test_three_steps_are_deterministic_and_state_round_trips(name, kind):
    first, model, balancer = _run(name, kind)
    second, _, _ = _run(name, kind)
    assert first == second and all(math.isfinite(x) for x in first)
    # a balancer restored from state_dict computes the same next loss as the original
    restored = _build(name, kind)
    restored.load_state_dict(copy.deepcopy(balancer.state_dict()))
    twin = copy.deepcopy(model)
    data = segment_data(12) if kind == "segment" else clip_data()
    batch = data.batch(torch.arange(8, 12))
    assert torch.equal(balancer.training_loss(model, batch).loss, restored.training_loss(twin, batch).loss)
