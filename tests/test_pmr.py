"""PMR (avel.balance.pmr) against hand computations on tiny real torch models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from toy_models import ConcatModel

from avel.balance.pmr import (
    PMR,
    capped,
    entropy,
    imbalance_ratio,
    pmr_coefficients,
    prototype_terms,
    update_prototypes,
)
from avel.data.splits import Batch, DataSplits, SplitData
from avel.models.base import event_weights
from avel.models.prototypes import compute_prototypes, prototype_logits


def identity_model(d: int = 2, c: int = 3, background: int | None = None) -> ConcatModel:
    """z_audio = audio, z_visual = visual: prototypes can be computed by hand from the inputs."""
    model = ConcatModel(d, c, background, da=d, dv=d)
    with torch.no_grad():
        for branch in (model.audio_branch, model.visual_branch):
            branch.weight.copy_(torch.eye(d))
            branch.bias.zero_()
    return model


def splits(train: SplitData, val: SplitData | None = None) -> DataSplits:
    return DataSplits(train, val or train, val or train)


# ------------------------------------------------------------------------------------------- prototypes


def test_compute_prototypes_are_class_means_and_restore_train_mode():
    audio = torch.tensor([[0.0, 0.0], [2.0, 4.0], [1.0, 1.0], [3.0, 3.0], [9.0, 9.0]])
    visual = -audio
    labels = torch.tensor([0, 0, 1, 1, 0])
    model = identity_model(c=3).train()
    c_a, c_v, counts = compute_prototypes(model, SplitData(audio, visual, labels), 3, None, batch_size=2)
    assert model.training
    assert torch.equal(counts, torch.tensor([3.0, 2.0, 0.0]))
    assert torch.allclose(c_a, torch.tensor([[11 / 3, 13 / 3], [2.0, 2.0], [0.0, 0.0]]))
    assert torch.allclose(c_v, -c_a)
    # only the chosen rows
    c_a, _, counts = compute_prototypes(
        model, SplitData(audio, visual, labels), 3, None, torch.tensor([1, 3])
    )
    assert torch.equal(counts, torch.tensor([1.0, 1.0, 0.0]))
    assert torch.allclose(c_a[:2], torch.tensor([[2.0, 4.0], [3.0, 3.0]]))


def test_compute_prototypes_per_segment_equals_a_hand_loop():
    torch.manual_seed(0)
    c, bg = 4, 3  # 3 event classes + background
    model = ConcatModel(da=5, dv=6, d=3, c=c, background=bg).eval()
    audio, visual = torch.randn(7, 10, 5), torch.randn(7, 10, 6)
    labels = torch.randint(0, c, (7, 10))
    labels[2] = bg  # a video without an event segment
    c_a, c_v, counts = compute_prototypes(
        model, SplitData(audio, visual, labels), model.prototype_classes, bg, batch_size=3
    )
    assert c_a.shape == (3, 3) and not model.training
    with torch.no_grad():
        z_a, z_v = model.encode(audio, visual)
    for k in range(3):
        rows = [(i, t) for i in range(7) for t in range(10) if labels[i, t] == k]
        assert counts[k] == len(rows)
        assert torch.allclose(c_a[k], torch.stack([z_a[i, t] for i, t in rows]).mean(0), atol=1e-6)
        assert torch.allclose(c_v[k], torch.stack([z_v[i, t] for i, t in rows]).mean(0), atol=1e-6)


def test_update_prototypes_momentum_and_absent_class():
    old = torch.tensor([[1.0, 1.0], [2.0, 2.0], [5.0, 5.0]])
    new = torch.tensor([[3.0, 3.0], [0.0, 0.0], [1.0, 1.0]])
    counts = torch.tensor([2.0, 0.0, 1.0])
    out = update_prototypes(old, new, counts, momentum=0.5)  # ε c_old + (1 − ε) c_new
    assert torch.equal(out, torch.tensor([[2.0, 2.0], [2.0, 2.0], [3.0, 3.0]]))  # class 1 absent: kept
    assert torch.equal(update_prototypes(old, new, counts, momentum=0.0)[0], new[0])
    first = update_prototypes(None, new, counts, momentum=0.5)  # first epoch: unseen class at zero
    assert torch.equal(first, new)
    z = torch.tensor([[0.0, 0.0], [1.0, 2.0]], requires_grad=True)  # a sample right on the zero prototype
    terms = prototype_terms(z, first, torch.tensor([1, 0]), torch.ones(2))
    terms["pce"].backward()
    assert torch.isfinite(terms["pce"]) and torch.isfinite(z.grad).all()


def test_prototype_logits_are_negative_euclidean_distances_not_squared():
    z = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    c = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    expected = torch.tensor([[-5.0, -1.0], [0.0, -math.sqrt(18.0)]])
    assert torch.allclose(prototype_logits(z, c), expected)


# --------------------------------------------------------------------------------------- ρ and Eq. 11


def test_imbalance_ratio_by_hand():
    p_a = torch.tensor([[0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    p_v = torch.tensor([[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]])
    labels = torch.tensor([0, 1, 0])
    rho = imbalance_ratio(p_a, p_v, labels, torch.ones(3))
    assert torch.isclose(rho, torch.tensor((0.6 + 0.7 + 0.5) / (0.2 + 0.5 + 0.9)))
    rho = imbalance_ratio(p_a, p_v, labels, torch.tensor([1.0, 1.0, 0.0]))  # third sample excluded
    assert torch.isclose(rho, torch.tensor(1.3 / 0.7))
    assert imbalance_ratio(p_a, p_v, labels, torch.zeros(3)) == 1.0  # nobody takes part: neutral


@pytest.mark.parametrize(
    "rho,beta,gamma",
    [(0.25, 1.0, 0.0), (0.8, 0.25, 0.0), (1.0, 0.0, 0.0), (1.5, 0.0, 0.5), (3.0, 0.0, 1.0)],
)
def test_eq11_coefficients(rho, beta, gamma):
    b, g = pmr_coefficients(torch.tensor(rho), "paper")
    assert torch.isclose(b, torch.tensor(beta)) and torch.isclose(g, torch.tensor(gamma))


def test_step_coefficients_of_the_released_code():
    assert [float(x) for x in pmr_coefficients(torch.tensor(0.5), "step")] == [1.0, 0.0]
    assert [float(x) for x in pmr_coefficients(torch.tensor(1.0), "step")] == [0.0, 0.0]
    assert [float(x) for x in pmr_coefficients(torch.tensor(2.0), "step")] == [0.0, 1.0]
    with pytest.raises(ValueError, match='PMR coef: "x" is not allowed: must be one of paper, step'):
        pmr_coefficients(torch.tensor(1.0), "x")


def test_pce_is_cross_entropy_of_negative_distances_and_entropy_by_hand():
    torch.manual_seed(1)
    z, c, y = torch.randn(6, 4), torch.randn(3, 4), torch.tensor([0, 1, 2, 2, 1, 0])
    terms = prototype_terms(z, c, y, torch.ones(6))
    assert torch.isclose(terms["pce"], F.cross_entropy(-torch.cdist(z, c), y))
    p = torch.softmax(-torch.cdist(z, c), -1)
    assert torch.allclose(terms["p"], p)
    assert torch.isclose(terms["entropy"], (-(p * p.log()).sum(-1)).mean())
    assert torch.isclose(entropy(torch.tensor([[0.5, 0.5, 0.0]])), torch.tensor([math.log(2.0)]))


# ------------------------------------------------------------------------------------------ the loss


def dominant_audio_data(n: int = 24, seed: int = 0) -> SplitData:
    """3 classes; audio sits near well separated class centres, visual is noise: ρ > 1 (γ > 0)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.tensor([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]])
    audio = centres[labels] + 0.3 * torch.randn(n, 2, generator=g)
    visual = torch.randn(n, 2, generator=g)
    return SplitData(audio, visual, labels)


def pmr_ready(data: SplitData, epoch: int = 0, **options) -> tuple[PMR, ConcatModel, Batch]:
    torch.manual_seed(0)
    model = identity_model(c=3)
    pmr = PMR(subset=1.0, **options)
    pmr.on_epoch_start(model, splits(data), epoch)
    return pmr, model, data.batch(torch.arange(len(data)))


def test_loss_is_eq10_plus_eq13_and_per_raises_the_dominant_entropy():
    data = dominant_audio_data()
    pmr, model, batch = pmr_ready(data, mu=0.5, alpha=2.0)
    res = pmr.training_loss(model, batch)
    logs = res.logs
    assert logs["rho"] > 1 and logs["gamma"] > 0 and logs["beta"] == 0
    expected = (
        logs["loss_ce"]
        + 2.0 * logs["beta"] * logs["pce_audio"]
        + 2.0 * logs["gamma"] * logs["pce_visual"]
        - 0.5 * (logs["gamma"] * logs["per_audio"] + logs["beta"] * logs["per_visual"])
    )
    assert torch.isclose(res.loss, expected)
    assert logs["proto_acc_audio"] == 1.0  # audio is separable around its prototypes

    def audio_entropy_after_step(mu: float) -> torch.Tensor:
        pmr, model, batch = pmr_ready(data, mu=mu)
        opt = torch.optim.SGD(model.audio_branch.parameters(), lr=0.5)
        pmr.training_loss(model, batch).loss.backward()
        opt.step()
        return pmr.training_loss(model, batch).logs["per_audio"]

    assert audio_entropy_after_step(mu=5.0) > audio_entropy_after_step(mu=0.0)  # Eq. 13 pushes H(p^a) up


def test_window_and_regularisation_epochs():
    data = dominant_audio_data()
    pmr, model, batch = pmr_ready(data, epoch=3, window=(0, 2))  # outside the window: plain task loss
    res = pmr.training_loss(model, batch)
    assert torch.equal(res.loss, res.logs["loss_ce"]) and res.logs["gamma"] > 0  # ρ still logged
    pmr, model, batch = pmr_ready(data, epoch=3, reg_epochs=3, mu=1.0)  # epoch ≥ E_r: no PER
    logs = pmr.training_loss(model, batch).logs
    expected = logs["loss_ce"] + 2.0 * logs["gamma"] * logs["pce_visual"]
    assert torch.isclose(pmr.training_loss(model, batch).loss, expected)


def test_pce_audio_gradients_reach_only_the_audio_branch():
    torch.manual_seed(0)
    model = ConcatModel(2, da=3, dv=4)
    data = SplitData(torch.randn(12, 3), torch.randn(12, 4), torch.arange(12) % 3)
    pmr = PMR(subset=1.0)
    pmr.on_epoch_start(model, splits(data), 0)
    batch = data.batch(torch.arange(12))
    out = model(batch.audio, batch.visual)
    y = batch.labels
    pce_a = prototype_terms(out.z_audio, pmr.prototypes[0], y, torch.ones(12))["pce"]
    names = [n for n, _ in model.named_parameters()]
    grads = torch.autograd.grad(pce_a, list(model.parameters()), allow_unused=True)
    for name, g in zip(names, grads, strict=True):
        if name.startswith("audio_branch"):
            assert g is not None and g.abs().sum() > 0, name
        else:
            assert g is None or g.abs().sum() == 0, name


# --------------------------------------------------------------------------------- per-segment (AVEL)


def segment_data(seed: int = 0) -> SplitData:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (6, 10), generator=g)  # background = 3
    labels[0, :] = 3
    labels[1, :3] = 3
    return SplitData(torch.randn(6, 10, 5, generator=g), torch.randn(6, 10, 6, generator=g), labels)


def test_background_segments_change_nothing_and_no_event_batch_is_finite():
    torch.manual_seed(0)
    model = ConcatModel(da=5, dv=6, d=3, c=4, background=3)
    data = segment_data()
    pmr = PMR(subset=1.0, mu=1e-2)
    pmr.on_epoch_start(model, splits(data), 0)
    assert pmr.prototypes[0].shape == (3, 3)  # event classes only
    batch = data.batch(torch.arange(6))
    logs = pmr.training_loss(model, batch).logs
    bg = (batch.labels == 3)[..., None]
    noisy = Batch(batch.audio + 50.0 * bg, batch.visual - 50.0 * bg, batch.labels, batch.index)
    logs2 = pmr.training_loss(model, noisy).logs
    for key in ("rho", "pce_audio", "pce_visual", "per_audio", "per_visual", "proto_acc_audio"):
        assert torch.allclose(logs[key], logs2[key], atol=1e-6), key
    w = event_weights(batch.labels, 3)
    assert w.sum() == (batch.labels != 3).sum()

    res = pmr.training_loss(model, data.batch(torch.tensor([0])))  # video 0: background only
    assert torch.isfinite(res.loss)
    assert res.logs["pce_audio"] == 0 and res.logs["pce_visual"] == 0 and res.logs["rho"] == 1
    assert res.logs["beta"] == 0 and res.logs["gamma"] == 0
    res.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ------------------------------------------------------------------------------ subset, state, options


def test_subset_is_fixed_by_seed_and_val_subset_uses_val():
    data = dominant_audio_data(n=40)
    model = identity_model(c=3)
    a, b = PMR(subset=0.25, seed=3), PMR(subset=0.25, seed=3)
    a.on_epoch_start(model, splits(data), 0)
    b.on_epoch_start(model, splits(data), 0)
    assert len(a.indices) == 10 and torch.equal(a.indices, b.indices)
    first = a.indices.clone()
    a.on_epoch_start(model, splits(data), 1)
    assert torch.equal(a.indices, first)  # chosen once
    val = SplitData(torch.ones(2, 2), torch.zeros(2, 2), torch.tensor([0, 0]))
    v = PMR(subset="val")
    v.on_epoch_start(model, splits(data, val), 0)
    assert torch.equal(v.prototypes[0][0], torch.ones(2)) and v.epoch_logs() == {"prototypes_missing": 2.0}


def test_state_dict_round_trip_gives_the_same_loss():
    data = dominant_audio_data()
    pmr, model, batch = pmr_ready(data, epoch=1, momentum=0.3)
    restored = PMR(subset=1.0, momentum=0.3)
    restored.load_state_dict(pmr.state_dict())
    assert restored.epoch == 1 and torch.equal(restored.prototypes[0], pmr.prototypes[0])
    assert torch.equal(restored.training_loss(model, batch).loss, pmr.training_loss(model, batch).loss)


def test_invalid_options():
    with pytest.raises(
        ValueError,
        match=r"PMR subset: 0.0 is not allowed: must be 'val', 'test' \(protocol = 'released'\) or a",
    ):
        PMR(subset=0.0)
    with pytest.raises(ValueError, match='PMR coef: "code" is not allowed: must be one of paper, step'):
        PMR(coef="code")


# ------------------------------------------------------ released-code window, absent classes, ρ logs


def test_window_is_inclusive_as_the_released_code():
    data = dominant_audio_data()
    pmr, model, batch = pmr_ready(data, epoch=2, window=(0, 2), mu=0.0)  # epoch == end: still active
    res = pmr.training_loss(model, batch)
    assert torch.isclose(res.loss, res.logs["loss_ce"] + 2.0 * res.logs["gamma"] * res.logs["pce_visual"])


def absent_class_setup(absent: str):
    """Classes 0 and 1 in the prototype subset (val), class 2 absent; the batch holds all three."""
    model = identity_model(c=3)
    val = SplitData(
        torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1])
    )
    train = SplitData(
        torch.tensor([[1.0, 1.0], [0.0, 2.0], [3.0, 0.0]]),
        torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 0.0]]),
        torch.tensor([0, 1, 2]),
    )
    pmr = PMR(subset="val", absent=absent, mu=0.0)
    pmr.on_epoch_start(model, splits(train, val), 0)
    return pmr, model, train.batch(torch.arange(3))


def test_absent_classes_are_masked_out_of_softmax_pce_and_rho():
    pmr, model, batch = absent_class_setup("mask")
    logs = pmr.training_loss(model, batch).logs
    # by hand: classes {0, 1} only, samples of classes 0 and 1 only
    c_a, c_v = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    z_a, z_v = batch.audio[:2], batch.visual[:2]
    y = torch.tensor([0, 1])
    log_pa = F.log_softmax(-torch.cdist(z_a, c_a), -1)
    log_pv = F.log_softmax(-torch.cdist(z_v, c_v), -1)
    assert torch.isclose(logs["pce_audio"], F.nll_loss(log_pa, y))
    assert torch.isclose(logs["pce_visual"], F.nll_loss(log_pv, y))
    rho = log_pa.exp().gather(1, y[:, None]).sum() / log_pv.exp().gather(1, y[:, None]).sum()
    assert torch.isclose(logs["rho"], rho)
    assert torch.isclose(logs["log_rho"], rho.log())


def test_absent_zero_keeps_the_literal_zero_prototype():
    pmr, model, batch = absent_class_setup("zero")
    logs = pmr.training_loss(model, batch).logs
    c_a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # class 2 at the origin
    log_pa = F.log_softmax(-torch.cdist(batch.audio, c_a), -1)
    assert torch.isclose(logs["pce_audio"], F.nll_loss(log_pa, torch.tensor([0, 1, 2])))


def test_epoch_logs_hold_the_median_of_rho_beside_the_mean():
    data = dominant_audio_data()
    pmr, model, _ = pmr_ready(data)
    rhos = [pmr.training_loss(model, data.batch(torch.arange(i, i + 6))).logs["rho"] for i in (0, 6, 12)]
    logs = pmr.epoch_logs()
    assert logs["rho_median"] == pytest.approx(torch.stack(rhos).median().item())
    assert pmr.epoch_logs() == {"prototypes_missing": 0.0}  # the steps' ρ are cleared after each epoch


# ------------------------------------------------------------------------------- the high-lr guard


def test_capped_pce_never_exceeds_cap_times_the_task_loss_and_keeps_its_gradient_direction():
    z = torch.tensor([3.0], requires_grad=True)
    term = (z**2).sum()  # 9
    out = capped(term, 0.5, torch.tensor(4.0))  # at most 0.5 × 4 = 2
    assert torch.isclose(out, torch.tensor(2.0))
    (g,) = torch.autograd.grad(out, z)
    assert torch.isclose(g, torch.tensor([6.0 * 2.0 / 9.0]))  # d(term)/dz scaled by 2/9
    assert capped(term, 0.5, torch.tensor(100.0)) is not term and torch.isclose(
        capped(term, 0.5, torch.tensor(100.0)), term
    )
    assert capped(term, 0.0, torch.tensor(1.0)) is term  # off


def test_guard_refreshes_prototypes_from_the_batches_every_n_steps():
    data = dominant_audio_data(n=12)
    pmr, model, _ = pmr_ready(data, proto_every=2)
    start = pmr.prototypes[0].clone()
    b1, b2 = data.batch(torch.arange(0, 6)), data.batch(torch.arange(6, 12))
    pmr.training_loss(model, b1)
    assert torch.equal(pmr.prototypes[0], start)  # one step: not yet
    pmr.training_loss(model, b2)
    # after two steps: the class means of both batches' (identity) representations
    y = torch.arange(12) % 3
    means = torch.stack([data.audio[y == k].mean(0) for k in range(3)])
    assert torch.allclose(pmr.prototypes[0], means, atol=1e-6)
    assert torch.allclose(pmr.prototypes[1], torch.stack([data.visual[y == k].mean(0) for k in range(3)]))


def test_new_pmr_options_are_checked():
    with pytest.raises(ValueError, match='PMR absent: "drop" is not allowed: must be one of mask, zero'):
        PMR(absent="drop")
    with pytest.raises(ValueError, match="PMR proto_every: -1 is not allowed: must be >= 0"):
        PMR(proto_every=-1)
