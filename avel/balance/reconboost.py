"""ReconBoost: boosting that alternates the modalities (Hua, Xu, Yang, Zhang, Huang, ICML 2024, "ReconBoost:
Boosting Can Achieve Modality Reconcilement"), as its released code runs it (github.com/huacong/ReconBoost,
``train.py``, ``models/dynamic_net.py``: ``DynamicNet``, ``schedule.py``).

``prepare_model`` wraps the model in ``ReconBoostModel``: each modality's learner is its encoder and one
head h shared by both (the code's ``common_space``: Linear(D, 256), ReLU, Linear(256, C)); the ensemble's
prediction is F(x) = β Σ_{m ∈ ensemble} h(z^m) with a learned boost rate β (initially ``boost_rate`` = 1);
the model's forward (evaluate, predict) is F. Training runs in stages; stage s trains modality m_s = audio
(s even) or visual (s odd) for ``boost_epochs`` epochs, adds it to the ensemble, then corrects the whole
ensemble for ``correct_epochs`` epochs (the code: 4 and 4, so one stage is 8 avel epochs):

    boosting (only m's learner; F_{−m} the ensemble without m, no gradient; q = softmax(F_{−m}(x))):
        ℓ = −(w₁/C) log p^m_y + (w₂/C) q_y log p^m_y  [+ α · MSE(softmax f^m, softmax f^{m'})]    (§3.2)
        p^m = softmax(h(z^m)); q_y = 1 while the ensemble is empty (the code: softmax of a constant c₀)
    correction ("global rectification"): CE(F(x), y) through every learner, h and β

with w₁ = 5, w₂ = 1, α = 0.5. The reconcilement term compares the learner with the other modality's (from
stage 1 on). The released code detaches both sides of it (``out_obj.detach()``), so it adds no gradient:
``reconcile="code"`` (default) runs it so (logged only); ``reconcile="paper"`` lets its gradient through the
current learner.

Deviations: the code builds a fresh SGD optimizer for each phase (momentum reset) and decays both learning
rates by stage; here the run's one optimizer continues (parameters without a gradient in a phase are not
stepped) and the run's schedule applies per epoch. The code selects its best stage on test; avel on val.

Paper numbering: not verified. The paper's full text could not be read from this project (its stored
copies give the title, abstract and the start of the introduction only: docs/deviations.md, "Equation
numbers of the BalanceBenchmark methods"), so no formula here carries an equation number and any §
reference is unchecked; the formulas follow the code named above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avel.balance.base import AT_LEAST_1, NON_NEGATIVE, BalancerHooks, StepResult, one_of, option, task_loss
from avel.models.base import AVModel, ModelOutput, WrappedModel, flatten_samples

if TYPE_CHECKING:
    from avel.data.splits import Batch, DataSplits

MODALITIES = ("audio", "visual")
RECONCILE = ("code", "paper")


class ReconBoostModel(WrappedModel):
    """The base's encoders, a head shared by the modalities, the ensemble F = β Σ_{m ∈ ensemble} h(z^m)."""

    def __init__(self, base: AVModel, boost_rate: float = 1.0, dim: int | None = None, hidden: int = 256):
        super().__init__(base)
        self.z_dim = dim = dim or base.z_dim
        first = nn.Linear(dim, hidden) if dim else nn.LazyLinear(hidden)
        self.head = nn.Sequential(first, nn.ReLU(), nn.Linear(hidden, base.num_classes))
        self.boost_rate = nn.Parameter(torch.tensor(float(boost_rate)))
        self.register_buffer("members", torch.zeros(2, dtype=torch.bool))  # audio, visual in the ensemble

    def learner(self, z: Tensor) -> Tensor:
        return self.head(z)

    def ensemble(self, z_audio: Tensor, z_visual: Tensor, without: int | None = None) -> Tensor:
        """β Σ h(z^m) over the members (but ``without``); zeros when none."""
        total = None
        for i, z in enumerate((z_audio, z_visual)):
            if i != without:
                out = self.learner(z) * self.members[i].to(z.dtype)
                total = out if total is None else total + out
        return self.boost_rate * total

    def fuse(self, z_audio: Tensor, z_visual: Tensor) -> ModelOutput:
        la, lv = self.learner(z_audio), self.learner(z_visual)
        logits = self.boost_rate * (la * self.members[0].to(la.dtype) + lv * self.members[1].to(lv.dtype))
        return ModelOutput(logits, z_audio, z_visual, la, lv)


def boosting_loss(
    logits: Tensor, join: Tensor | None, labels: Tensor, w1: float, w2: float
) -> tuple[Tensor, Tensor]:
    """Per-sample −(w₁/C) log p_y + (w₂/C) q_y log p_y, q = softmax(join) (q_y = 1 for ``join=None``)."""
    logits = flatten_samples(logits.float())
    y = labels.reshape(-1)
    c = logits.shape[-1]
    log_p = F.log_softmax(logits, -1).gather(1, y[:, None]).squeeze(1)
    if join is None:
        q = torch.ones_like(log_p)
    else:
        q = F.softmax(flatten_samples(join.detach().float()), -1).gather(1, y[:, None]).squeeze(1)
    return (-w1 * log_p + w2 * q * log_p) / c, q


@dataclass(frozen=True)
class ReconBoostOptions:
    boost_epochs: int = option(4, "ReconBoost: epochs boosting one modality per stage ...", AT_LEAST_1)
    correct_epochs: int = option(4, "... then epochs correcting the ensemble", NON_NEGATIVE)
    w1: float = option(5.0, "w1", NON_NEGATIVE)
    w2: float = option(1.0, "w2", NON_NEGATIVE)
    alpha: float = option(0.5, "weight of the reconcilement term", NON_NEGATIVE)
    boost_rate: float = option(1.0, "initial beta")
    reconcile: str = option(
        "code",
        "code: the term detached on both sides (no gradient) | paper",
        one_of(*RECONCILE),
    )


class ReconBoost(BalancerHooks):
    """Alternating modality boosting with correction phases; the model predicts with the ensemble."""

    name = "reconboost"
    method = "ReconBoost"
    Options = ReconBoostOptions

    def __init__(
        self,
        options: ReconBoostOptions | None = None,
        *,
        seed: int = 0,
        dim: int | None = None,
        **values: Any,
    ) -> None:
        super().__init__(options, seed=seed, **values)
        o = self.options
        boost_epochs, correct_epochs, w1, w2, alpha, boost_rate, reconcile = (
            o.boost_epochs,
            o.correct_epochs,
            o.w1,
            o.w2,
            o.alpha,
            o.boost_rate,
            o.reconcile,
        )
        self.boost_epochs, self.correct_epochs = int(boost_epochs), int(correct_epochs)
        self.w1, self.w2, self.alpha, self.boost_rate = float(w1), float(w2), float(alpha), float(boost_rate)
        self.reconcile, self.dim = reconcile, dim
        self.epoch = 0

    def prepare_model(self, model: AVModel) -> AVModel:
        if isinstance(model, ReconBoostModel):
            return model
        return ReconBoostModel(model, self.boost_rate, self.dim)

    def phase(self, epoch: int) -> tuple[int, str, int]:
        """(stage, "boost" | "correct", the stage's modality index) of an epoch."""
        length = self.boost_epochs + self.correct_epochs
        stage, pos = divmod(epoch, length)
        return stage, "boost" if pos < self.boost_epochs else "correct", stage % 2

    def on_epoch_start(self, model: AVModel, data: DataSplits, epoch: int) -> None:
        self.epoch = epoch
        stage, kind, m = self.phase(epoch)
        if isinstance(model, ReconBoostModel):  # learners of earlier stages, and this one once it boosted
            model.members[0] = stage > 1 or (stage == 1 and m == 1) or (stage == 0 and kind == "correct")
            model.members[1] = stage > 1 or (stage == 1 and kind == "correct")

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        if not isinstance(model, ReconBoostModel):
            raise ValueError(
                "ReconBoost trains the model returned by ReconBoost.prepare_model (it adds h, β)"
            )
        stage, kind, m = self.phase(self.epoch)
        z_a, z_v = model.encode(batch.audio, batch.visual)
        if kind == "correct":
            out = model.fuse(z_a, z_v)
            loss = task_loss(out.logits, batch.labels)
            return StepResult(
                loss, out, {"loss_correct": loss.detach(), "boost_rate": model.boost_rate.detach()}
            )
        z = (z_a, z_v)
        logits = model.learner(z[m])
        with torch.no_grad():  # the other modality joined the ensemble in the previous stage
            join = model.ensemble(z_a.detach(), z_v.detach(), without=m) if stage > 0 else None
        per_sample, q = boosting_loss(logits, join, batch.labels, self.w1, self.w2)
        loss = per_sample.mean()
        logs = {f"loss_boost_{MODALITIES[m]}": loss.detach(), "ensemble_q": q.mean().detach()}
        if stage > 0:
            p_now = F.softmax(flatten_samples(logits.float()), -1)
            with torch.no_grad():
                p_prev = F.softmax(flatten_samples(model.learner(z[1 - m].detach()).float()), -1)
            ga = F.mse_loss(p_now if self.reconcile == "paper" else p_now.detach(), p_prev)
            loss = loss + self.alpha * ga
            logs["loss_reconcile"] = ga.detach()
        out = ModelOutput(logits, z_a, z_v)
        return StepResult(loss, out, logs)


__all__ = ["ReconBoost", "ReconBoostModel", "boosting_loss"]
