"""MLA: multimodal learning with alternating unimodal adaptation (Zhang, Yoon, Bansal, Yao, CVPR 2024,
"Multimodal Representation Learning by Alternating Unimodal Adaptation"), as its released code runs it
(github.com/Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation, ``main.py`` with
``--gs_flag``, ``utils/utils.py``: ``GSPlugin``).

``prepare_model`` wraps the model in ``MLAModel``: one head h shared by the modalities on z^a, z^v (the base
model's own fusion layers stay, unused). Training alternates per batch: an optimizer step on CE(h(z^a), y),
then one on CE(h(z^v), y) (``steps_per_batch = 2``: the loop runs both on the same batch).

Gradient modification of the shared head (MLA §3.2, orthogonal weight modification), before each step but
the very first: with r the batch mean of the step's features and α_b = 0.1^(1 + b/n_b) (b the batch index
in the epoch, n_b the batches per epoch),

    k = P rᵀ,   P ← P − k kᵀ / (α_b + r k),   P ← P / ‖P‖_F,   ∇W ← ∇W P      (P_0 = I)

``projection="paper"`` applies it. The released code never does: its test ``n == "module.weight"`` does not
match the names of the ``nn.Linear`` it is given (``weight``, ``bias``), so P stays I and the gradient is
untouched; ``projection="none"`` (default) runs as the code runs. ``projection="balancemm"`` is
BalanceBenchmark's form, ∇W ← ∇W + ∇W Pᵀ.

Test-time fusion (MLA §3.3, uncertainty-based): e^m = −Σ_k p^m_k log p^m_k of p^m = softmax(h(z^m)),
λ^m = exp(max_j e^j − e^m) / Σ_j exp(max_j e^j − e^{j'}), prediction Σ_m λ^m h(z^m); per sample
(``fusion="sample"``, the paper and BalanceBenchmark) or, as the released code computes it, one entropy per
batch from a softmax over the batch dimension (``fusion="batch"``: a clip's prediction then depends on the
other clips of its batch). The fusion is the model's forward: ``avel evaluate`` and ``avel predict`` use it.

Paper numbering: not verified. The paper's full text could not be read from this project (its stored
copies give the title, abstract and the start of the introduction only: docs/deviations.md, "Equation
numbers of the BalanceBenchmark methods"), so no formula here carries an equation number and any §
reference is unchecked; the formulas follow the code named above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from avel.balance.base import BalancerHooks, StepResult, check, one_of, option, task_loss
from avel.collectives import all_reduce_sum
from avel.models.base import AVModel, ModelOutput, WrappedModel, flatten_samples

if TYPE_CHECKING:
    from avel.data.splits import Batch, DataSplits

FUSIONS = ("sample", "batch")
PROJECTIONS = ("none", "paper", "balancemm")
MODALITIES = ("audio", "visual")


def entropy(logits: Tensor, over: str = "sample") -> Tensor:
    """−Σ p log p of the softmax over classes per sample (…, 1); "batch": over the batch dim, summed."""
    if over == "batch":
        flat = flatten_samples(logits.float())
        p = torch.softmax(flat, dim=0)
        return -(p * torch.log(p)).sum()
    p = torch.softmax(logits.float(), dim=-1)
    return -(p * torch.log(p)).sum(-1, keepdim=True)


def gating_weights(logits_a: Tensor, logits_v: Tensor, over: str = "sample") -> tuple[Tensor, Tensor]:
    """(λ^a, λ^v) = softmax(−e) written as exp(max e − e^m) / Σ (MLA §3.3)."""
    e_a, e_v = entropy(logits_a, over), entropy(logits_v, over)
    top = torch.maximum(e_a, e_v)
    g_a, g_v = torch.exp(top - e_a), torch.exp(top - e_v)
    return g_a / (g_a + g_v), g_v / (g_a + g_v)


def owm_update(P: Tensor, r: Tensor, alpha: float) -> Tensor:
    """P − k kᵀ/(α + r k), k = P rᵀ, then divided by its Frobenius norm; r is (1, D)."""
    k = P @ r.T
    P = P - (k @ k.T) / (alpha + r @ k)
    return P / torch.linalg.matrix_norm(P)


def owm_alpha(batch_index: int, batches: int) -> float:
    """α_b = 0.1^(b/n_b + 1) (the code's ``lamda``)."""
    return 0.1 ** (batch_index / max(batches, 1) + 1)


class MLAModel(WrappedModel):
    """The base model's encoders, one head h shared by both modalities, uncertainty-weighted fusion."""

    def __init__(self, base: AVModel, fusion: str = "sample", dim: int | None = None) -> None:
        check("MLA fusion", fusion, one_of(*FUSIONS))
        super().__init__(base)
        self.fusion = fusion
        self.z_dim = dim = dim or base.z_dim
        self.head = nn.Linear(dim, base.num_classes) if dim else nn.LazyLinear(base.num_classes)

    def fuse(self, z_audio: Tensor, z_visual: Tensor) -> ModelOutput:
        la, lv = self.head(z_audio), self.head(z_visual)
        w_a, w_v = gating_weights(la.detach(), lv.detach(), self.fusion)
        logits = la * w_a.to(la.dtype) + lv * w_v.to(lv.dtype)
        return ModelOutput(logits, z_audio, z_visual, la, lv)


@dataclass(frozen=True)
class MLAOptions:
    fusion: str = option(
        "sample",
        "MLA test-time entropy fusion: sample (paper) | batch (released code)",
        one_of(*FUSIONS),
    )
    projection: str = option(
        "none",
        "none (released code: its test never matches) | paper | balancemm",
        one_of(*PROJECTIONS),
    )


class MLA(BalancerHooks):
    """Alternating uni-modal steps through a shared head; test-time entropy-weighted fusion."""

    name = "mla"
    method = "MLA"
    Options = MLAOptions
    steps_per_batch = 2  # one optimizer step per modality on each batch

    def __init__(
        self, options: MLAOptions | None = None, *, seed: int = 0, dim: int | None = None, **values: Any
    ) -> None:
        super().__init__(options, seed=seed, **values)
        o = self.options
        fusion, projection = o.fusion, o.projection
        self.fusion, self.projection, self.dim = fusion, projection, dim
        self.epoch = 0
        self.turn = 0  # 0: the audio step of a batch, 1: its visual step
        self.batch_index, self.batches, self.rows = 0, 0, 0
        self.updates = 0  # the code's exp_count: modality steps so far
        self.P: Tensor | None = None
        self.features: Tensor | None = None  # r of the current step

    def applies_to(self, model: AVModel) -> str | None:
        return None  # brings its own shared head (z^a and z^v have one width in every avel model)

    def prepare_model(self, model: AVModel) -> AVModel:
        return model if isinstance(model, MLAModel) else MLAModel(model, self.fusion, self.dim)

    def on_epoch_start(self, model: AVModel, data: DataSplits, epoch: int) -> None:
        self.epoch, self.turn, self.batch_index, self.batches = epoch, 0, 0, 0
        self.rows = len(data.train) if data is not None else 0

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        if not isinstance(model, MLAModel):
            raise ValueError("MLA trains the model returned by MLA.prepare_model (it adds the shared head)")
        if self.batches == 0:  # n_b of the epoch, from the first batch (the last may be smaller)
            self.batches = max(1, math.ceil(self.rows / max(len(batch.index), 1)))
        modality = MODALITIES[self.turn]
        z_a, z_v = model.encode(batch.audio, batch.visual)
        z = z_a if modality == "audio" else z_v
        logits = model.head(z)
        loss = task_loss(logits, batch.labels)
        flat = flatten_samples(z.detach().float())
        sums = all_reduce_sum(torch.cat([flat.sum(0), flat.new_tensor([flat.shape[0]])]))
        self.features = (sums[:-1] / sums[-1].clamp_min(1.0))[None]  # r: the global batch's mean (1, D)
        out = ModelOutput(logits, z_a, z_v)
        return StepResult(loss, out, {f"loss_{modality}": loss.detach()})

    def before_optimizer_step(self, model: AVModel, result: StepResult) -> None:
        if self.projection != "none" and self.updates > 0 and isinstance(model, MLAModel):
            w = model.head.weight
            r = self.features.to(w.device)
            if self.P is None or self.P.device != w.device:
                self.P = (self.P if self.P is not None else torch.eye(r.shape[1])).to(w.device)
            self.P = owm_update(self.P, r, owm_alpha(self.batch_index, self.batches))
            if w.grad is not None:
                g = w.grad.float()
                projected = g @ self.P.T
                w.grad.copy_((projected if self.projection == "paper" else g + projected).to(w.grad.dtype))
        self.updates += 1
        self.turn = 1 - self.turn
        if self.turn == 0:
            self.batch_index += 1

    def state_dict(self) -> dict:
        P = None if self.P is None else self.P.detach().cpu().clone()
        where = {k: getattr(self, k) for k in ("turn", "batch_index", "batches", "rows")}
        return {"epoch": self.epoch, "updates": self.updates, "P": P, **where}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.updates = int(state.get("epoch", 0)), int(state.get("updates", 0))
        for k in ("turn", "batch_index", "batches", "rows"):
            setattr(self, k, int(state.get(k, 0)))
        P = state.get("P")
        self.P = None if P is None else P.float().clone()


__all__ = ["MLA", "MLAModel", "entropy", "gating_weights", "owm_alpha", "owm_update"]
