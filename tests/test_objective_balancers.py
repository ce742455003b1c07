"""BalanceBenchmark's objective-level methods (MMCosine, UMT / UME, MBSD, CML, MMPareto, LFM): each key
quantity against a hand computation on a small batch, and their refusals."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_balancers import FilmModel, clip_data, make_model
from torch import nn

from avel.balance import build_balancer
from avel.balance.cml import CML, confidence, confidence_penalty, removed_modality, trick_mask
from avel.balance.heads import UniHeadsModel
from avel.balance.lfm import LFM, alignment, alpha_gradient, lfm_loss
from avel.balance.mbsd import mbsd_terms
from avel.balance.mmcosine import MMCosineModel, cosine_logits
from avel.balance.mmpareto import MMPareto, min_norm_2, pareto_gradient, pareto_weights
from avel.balance.umt import UME, UMT, distillation_loss
from avel.data.splits import DataSplits
from avel.models.base import AVModel, ModelOutput
from avel.models.fusion import ConcatFusion, SumFusion


class HeadModel(AVModel):
    """Linear encoders and a clip classifier's fusion head (``head``: concat or sum), as AVClassifier."""

    def __init__(self, fusion: str = "concat", d: int = 4, c: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.num_classes, self.z_dim, self.fusion_name = c, d, fusion
        self.audio_branch, self.visual_branch = nn.Linear(5, d), nn.Linear(6, d)
        self.head = {"concat": ConcatFusion, "sum": SumFusion}[fusion](d, c)
        self.splits_logits = True

    def encode(self, audio, visual):
        return self.audio_branch(audio), self.visual_branch(visual)

    def fuse(self, z_audio, z_visual):
        return ModelOutput(
            *self.head(z_audio, z_visual)[:1], z_audio, z_visual, *self.head(z_audio, z_visual)[1:]
        )


# -------------------------------------------------------------------------------------------- MMCosine


def test_cosine_logits_by_hand():
    z = torch.tensor([[3.0, 4.0]])  # unit: (0.6, 0.8)
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])  # unit rows: e1, e2, −e1
    assert torch.allclose(cosine_logits(z, w, 15.0), torch.tensor([[9.0, 12.0, -9.0]]))


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_mmcosine_uses_each_modalitys_share_of_the_fused_head(fusion):
    model = MMCosineModel(HeadModel(fusion), scale=10.0)
    assert not model.own  # the model's own weights, no new parameter
    batch = clip_data().batch(torch.arange(4))
    with torch.no_grad():
        out = model(batch.audio, batch.visual)
        z_a, z_v = model.encode(batch.audio, batch.visual)
    head = model.base.head
    if fusion == "concat":
        w_a, w_v = head.fc.weight[:, :4].detach(), head.fc.weight[:, 4:].detach()
    else:
        w_a, w_v = head.fc_a.weight.detach(), head.fc_v.weight.detach()
    for i in range(4):
        for c in range(3):
            ca = float((z_a[i] @ w_a[c]) / (z_a[i].norm() * w_a[c].norm()))
            cv = float((z_v[i] @ w_v[c]) / (z_v[i].norm() * w_v[c].norm()))
            assert out.logits[i, c].item() == pytest.approx(10 * (ca + cv), abs=1e-5)  # no bias
            assert out.logits_audio[i, c].item() == pytest.approx(10 * ca, abs=1e-5)


def test_mmcosine_applies_to_and_avel_own_weights():
    assert build_balancer("mmcosine").applies_to(FilmModel()) == (
        "MMCosine normalises each modality's share of a linear fused head (concat or sum); "
        "film fusion has none"
    )
    segment = make_model("segment")  # per-segment (AVEL-like): MMCosine brings class weights
    assert build_balancer("mmcosine").applies_to(segment) is None
    wrapped = build_balancer("mmcosine").prepare_model(segment)
    assert wrapped.own and wrapped.weight_audio.shape == (4, 4)


def test_mmcosine_loss_is_ce_on_cosine_logits_inside_the_window():
    mm = build_balancer("mmcosine", scale=15.0, window=(0, 2))
    model = mm.prepare_model(HeadModel())
    batch = clip_data().batch(torch.arange(6))
    res = mm.training_loss(model, batch)
    assert torch.isclose(res.loss, F.cross_entropy(res.output.logits, batch.labels))
    mm.on_epoch_start(model, None, 3)  # outside: the fused head with its bias
    res = mm.training_loss(model, batch)
    plain = model.base(batch.audio, batch.visual).logits
    assert torch.isclose(res.loss, F.cross_entropy(plain, batch.labels))


# ------------------------------------------------------------------------------------------------- CML


def test_cml_penalty_by_hand():
    full = torch.tensor([0.9, 0.5], requires_grad=True)
    removed = torch.tensor([0.7, 0.8], requires_grad=True)
    batch = confidence_penalty(full, removed, "batch")  # max(0, −0.2 + 0.3)
    assert batch.item() == pytest.approx(0.1)
    batch.backward()
    assert removed.grad.tolist() == [1.0, 1.0] and full.grad.tolist() == [-1.0, -1.0]
    assert confidence_penalty(full, removed, "sample").item() == pytest.approx(0.3)  # relu(−0.2) + relu(0.3)
    masked = confidence_penalty(full, removed, "sample", torch.tensor([1.0, 0.0]))  # trick 1 drops row 2
    assert masked.item() == 0.0
    full_logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])  # predicts 0, 1, 0
    removed_logits = torch.tensor([[0.0, 2.0], [0.0, 2.0], [0.0, 2.0]])  # predicts 1, 1, 1
    # labels 1, 1, 0: row 0 is right only without the modality (s = 0); rows 1 (both right), 2 (only full)
    assert trick_mask(full_logits, removed_logits, torch.tensor([1, 1, 0])).tolist() == [0.0, 1.0, 1.0]
    down = confidence_penalty(torch.tensor([0.9, 0.9]), torch.tensor([0.1, 0.95]), "batch")
    assert down.item() == 0  # the batch sum is negative: no penalty, although one sample rose
    assert confidence(torch.log(torch.tensor([[0.2, 0.7, 0.1]]))).item() == pytest.approx(0.7)


def test_cml_step_by_hand_and_the_removed_modality_per_epoch():
    model = HeadModel()
    batch = clip_data().batch(torch.arange(6))
    removed = {removed_modality(0, e) for e in range(20)}
    assert removed == {"audio", "visual"} and removed_modality(3, 7) == removed_modality(3, 7)
    cml = CML(lam=0.1, seed=0)
    cml.on_epoch_start(model, None, 0)
    res = cml.training_loss(model, batch)
    z_a, z_v = model.encode(batch.audio, batch.visual)
    kept = (z_a, torch.zeros_like(z_v)) if cml.removed == "visual" else (torch.zeros_like(z_a), z_v)
    full, part = model.fuse(z_a, z_v).logits, model.fuse(*kept).logits
    w = model.head.fc.weight
    if cml.removed == "visual":  # f(x^{-v}) = z^a W^a + b on a linear concat head (BalanceBenchmark)
        assert torch.allclose(part, z_a @ w[:, :4].T + model.head.fc.bias, atol=1e-6)
    diff = (part.softmax(-1).max(-1).values - full.softmax(-1).max(-1).values).sum()
    expected = (F.cross_entropy(full, batch.labels) + F.cross_entropy(part, batch.labels)) / 2
    expected = expected + 0.1 * diff.clamp_min(0)
    assert torch.isclose(res.loss, expected, atol=1e-6)
    sample = CML(reduce="sample", seed=0)  # the release's per-sample hinge with trick 1
    mask = trick_mask(full, part, batch.labels)
    hinge = (part.softmax(-1).max(-1).values - full.softmax(-1).max(-1).values).clamp_min(0) * mask
    expected = (
        F.cross_entropy(full, batch.labels) + F.cross_entropy(part, batch.labels)
    ) / 2 + 0.1 * hinge.sum()
    assert torch.isclose(sample.training_loss(model, batch).loss, expected, atol=1e-6)


# ------------------------------------------------------------------------------------------------ MBSD


def test_mbsd_terms_by_hand():
    la = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 3.0]])
    lv = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    y = torch.tensor([0, 1, 0])
    t = mbsd_terms(la, lv, y)
    s_a0 = math.exp(2) / (math.exp(2) + 1)  # sample 0: audio right (0.881), visual 0.5
    s_v1 = math.e / (1 + math.e)  # sample 1: visual right (0.731), audio 0.5
    w = [s_a0 - 0.5, s_v1 - 0.5, 0.0]  # sample 2: both wrong -> weight 0
    rs = [(4 + 0) / 2, (0 + 1) / 2, 0.0]  # (1/C) Σ_c (l^a − l^v)²
    kl = [0.5 * (math.log(0.5) - s_a0), 0.5 * (math.log(0.5) - s_v1)]  # pw (log pw − ps)
    assert t["w"].tolist() == pytest.approx(w, abs=1e-6)
    assert t["rs"].tolist() == pytest.approx(rs, abs=1e-6)
    assert t["kl"][:2].tolist() == pytest.approx(kl, abs=1e-6)
    assert t["loss_rs"].item() == pytest.approx((w[0] * rs[0] + w[1] * rs[1]) / 3, abs=1e-6)
    assert t["loss_kl"].item() == pytest.approx((w[0] * kl[0] + w[1] * kl[1]) / 3, abs=1e-6)
    bern = mbsd_terms(la, lv, y, kl="scores")["kl"][0].item()
    assert bern == pytest.approx(0.5 * math.log(0.5 / s_a0) + 0.5 * math.log(0.5 / (1 - s_a0)), abs=1e-6)


def test_mbsd_loss_and_refusal():
    model = HeadModel()
    batch = clip_data().batch(torch.arange(6))
    res = build_balancer("mbsd").training_loss(model, batch)
    out = model(batch.audio, batch.visual)
    t = mbsd_terms(out.logits_audio, out.logits_visual, batch.labels)
    ce = [F.cross_entropy(x, batch.labels) for x in (out.logits, out.logits_audio, out.logits_visual)]
    assert torch.isclose(res.loss, sum(ce) + t["loss_rs"] + t["loss_kl"], atol=1e-6)
    assert build_balancer("mbsd").applies_to(FilmModel()).startswith("MBSD needs split logits")


# ------------------------------------------------------------------------------------------- UMT / UME


def test_umt_loss_is_ce_plus_scaled_feature_mse():
    student, batch = HeadModel(), clip_data().batch(torch.arange(6))
    torch.manual_seed(5)
    teachers = {m: HeadModel().requires_grad_(False) for m in ("audio", "visual")}
    umt = UMT(scale=10.0, teacher_audio="a.pt", teacher_visual="v.pt")
    umt.teachers = teachers
    res = umt.training_loss(student, batch)
    out = student(batch.audio, batch.visual)
    t_a = teachers["audio"].encode(batch.audio, batch.visual)[0]
    t_v = teachers["visual"].encode(batch.audio, batch.visual)[1]
    mse = ((out.z_audio - t_a) ** 2).mean() + ((out.z_visual - t_v) ** 2).mean()
    assert torch.isclose(res.loss, F.cross_entropy(out.logits, batch.labels) + 10 * mse, atol=1e-6)
    assert torch.isclose(distillation_loss(torch.ones(2, 2), torch.zeros(2, 2)), torch.tensor(1.0))


def test_umt_refuses_without_teachers_and_names_the_option(tmp_path):
    assert UMT().applies_to(HeadModel()) == (
        "UMT distils uni-modal teachers: set umt_teacher_audio to the best.pt of an "
        "`avel train --modality audio` run of the same model"
    )
    umt = UMT(teacher_audio=str(tmp_path / "none.pt"), teacher_visual=str(tmp_path / "none.pt"))
    with pytest.raises(ValueError, match=r"none.pt: no such checkpoint \(umt_teacher_audio\)"):
        umt.training_loss(HeadModel(), clip_data().batch(torch.arange(2)))


def test_ume_trains_two_independent_uni_modal_models_and_sums_their_logits():
    ume = UME()
    model = ume.prepare_model(HeadModel())
    assert isinstance(model, UniHeadsModel)
    batch = clip_data().batch(torch.arange(6))
    res = ume.training_loss(model, batch)
    z_a, z_v = model.encode(batch.audio, batch.visual)
    la, lv = model.head_audio(z_a), model.head_visual(z_v)
    assert torch.allclose(res.output.logits, la + lv)  # the ensemble's prediction
    assert torch.isclose(res.loss, F.cross_entropy(la, batch.labels) + F.cross_entropy(lv, batch.labels))
    res.loss.backward()
    assert all(p.grad is None for p in model.base.head.parameters())  # the fusion is not trained
    # the visual encoder's gradient is that of the visual loss alone: the models are independent
    loss_v = F.cross_entropy(model.head_visual(model.visual_branch(batch.visual)), batch.labels)
    g = torch.autograd.grad(loss_v, model.visual_branch.weight)[0]
    assert torch.allclose(model.visual_branch.weight.grad, g, atol=1e-6)
    assert ume.applies_to(make_model("clip")) is None


# -------------------------------------------------------------------------------------------- MMPareto


def test_min_norm_and_pareto_weights_by_hand():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # cos < 0
    k = min_norm_2(g1, g2)  # (‖g2‖² − g1·g2) / ‖g1 − g2‖² = 3/5
    assert k.item() == pytest.approx(0.6)
    grid = torch.linspace(0, 1, 1001)
    norms = torch.stack([(c * g1 + (1 - c) * g2).norm() for c in grid])
    assert grid[norms.argmin()].item() == pytest.approx(0.6, abs=1e-3)
    k_mm, k_u, cos = pareto_weights(g1, g2)
    assert k_mm.item() == pytest.approx(0.6) and k_u.item() == pytest.approx(0.4) and cos < 0
    k_mm, k_u, _ = pareto_weights(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0]))  # agree: ½, ½
    assert k_mm == 0.5 and k_u == 0.5
    assert min_norm_2(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0])).item() == pytest.approx(0.999)
    half = torch.tensor(0.5)
    # ĝ = g_mm + g_u = (2, 0); ‖g‖ = 3 > 2: rescaled to 3, times γ
    out = pareto_gradient(
        torch.tensor([3.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]), half, half, 1.5
    )
    assert out.tolist() == pytest.approx([4.5, 0.0])
    out = pareto_gradient(
        torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]), half, half, 1.5
    )
    assert out.tolist() == pytest.approx([3.0, 0.0])  # ‖g‖ < ‖ĝ‖: ĝ kept
    zero = pareto_gradient(torch.ones(2), torch.zeros(2), torch.zeros(2), half, half, 1.5)
    assert torch.equal(zero, torch.zeros(2))  # no NaN where ĝ = 0


def test_mmpareto_step_replaces_encoder_gradients():
    mp = MMPareto(gamma=1.5)
    model = mp.prepare_model(HeadModel())
    batch = clip_data().batch(torch.arange(6))
    res = mp.training_loss(model, batch)
    out = model(batch.audio, batch.visual)
    losses = [F.cross_entropy(x, batch.labels) for x in (out.logits, out.logits_audio, out.logits_visual)]
    w = model.audio_branch.weight
    g_mm = torch.autograd.grad(losses[0], w, retain_graph=True)[0]
    g_u = torch.autograd.grad(losses[1], w, retain_graph=True)[0]
    res.loss.backward()
    g_sum = w.grad.clone()
    head_grad = model.head_audio.weight.grad.clone()
    mp.before_optimizer_step(model, res)
    branch = [p for _, p in model.branch_parameters("audio")]
    g_all = [torch.autograd.grad(loss, branch, retain_graph=True) for loss in losses[:2]]
    flat = [torch.cat([g.reshape(-1) for g in gs]) for gs in g_all]
    k_mm, k_u, _ = pareto_weights(*flat)
    new = 2 * k_mm * g_mm + 2 * k_u * g_u
    expected = new * max(1.0, float(g_sum.norm() / new.norm())) * 1.5
    assert torch.allclose(w.grad, expected, atol=1e-6)
    assert torch.equal(model.head_audio.weight.grad, head_grad)  # heads keep the summed gradient
    assert {"cos_audio", "k_mm_audio"} <= res.logs.keys()


# ------------------------------------------------------------------------------------------------- LFM


def test_lfm_alignment_by_hand():
    la = torch.zeros(1, 2)  # p = (0.5, 0.5)
    lv = torch.log(torch.tensor([[0.8, 0.2]]))  # q = (0.8, 0.2); m = (0.65, 0.35)
    p, q, m = [0.5, 0.5], [0.8, 0.2], [0.65, 0.35]

    def kl(a, b):
        return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True))

    assert alignment(la, lv, "code").item() == pytest.approx(0.5 * (kl(m, p) + kl(m, q)), abs=1e-6)
    assert alignment(la, lv, "paper").item() == pytest.approx(0.5 * (kl(p, m) + kl(q, m)), abs=1e-6)
    assert lfm_loss(torch.tensor(2.0), torch.tensor(1.0), (0.95, 0.05)).item() == pytest.approx(2 * 1.95)


def test_lfm_alpha_step_is_the_hessian_vector_product_of_the_first_tensor():
    model = HeadModel()
    data = clip_data(8)
    batch = data.batch(torch.arange(8))
    alpha = (0.95, 0.05)
    params = [p for p in model.parameters()]

    names = [n for n, _ in model.named_parameters()]

    def forward(flat):
        return torch.func.functional_call(
            model, dict(zip(names, flat, strict=True)), (batch.audio, batch.visual)
        )

    def total(*flat):
        out = forward(flat)
        ce = F.cross_entropy(out.logits, batch.labels)
        return alpha[0] * ce + alpha[1] * alignment(out.logits_audio, out.logits_visual)

    def cls(*flat):
        out = forward(flat)
        return F.cross_entropy(out.logits, batch.labels)

    v = torch.autograd.grad(cls(*params), params)
    _, hvp = torch.autograd.functional.hvp(total, tuple(p.detach() for p in params), v)
    assert alpha_gradient(model, batch, alpha) == pytest.approx(hvp[0].mean().item(), rel=1e-4, abs=1e-9)
    lfm = LFM(lr_alpha=0.1, probe_size=8, alpha_data="train")
    splits = DataSplits(data, data, data)
    lfm.on_epoch_start(model, splits, 0)
    assert lfm.alpha[1] == pytest.approx(0.05 - 0.1 * lfm.alpha_grad)
    lfm.on_epoch_start(model, splits, 20)  # every 20th epoch halves η_α, for good
    assert lfm.lr_alpha == pytest.approx(0.05)
    assert build_balancer("lfm").applies_to(FilmModel()).startswith("LFM needs split logits")
