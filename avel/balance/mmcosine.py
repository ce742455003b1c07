"""MMCosine: multi-modal cosine loss (Xu, Feng, Zhang, Hu, ICASSP 2023, §2).

Each modality's logits are the cosines between its L2-normalised representation and the L2-normalised
class weights of its share of the fused linear head, times a scale s; the fused logits are their sum,
and the loss is the cross-entropy on them:

    l^m_c = s · ⟨z^m / ‖z^m‖, W^m_c / ‖W^m_c‖⟩,    l_c = Σ_m l^m_c,    L = CE(l, y)

(no bias). On the clip classifiers the weights are the model's own fused head, split by modality (concat:
the columns of ``fc`` that multiply z^a and z^v; sum: ``fc_a`` and ``fc_v``). The AVEL localizer's head is
a two-layer MLP with no linear split, so MMCosine brings its own class weights W^a, W^v (C × D) on h^a_t,
h^v_t there (the localizer's L1/L2 stay in the model, unused). FiLM, gated and the intermediate fusions have
no per-modality share of a linear head: refused.

As the released code runs it (github.com/GeWu-Lab/MMCosine_ICASSP23, ``main_CD.py --mmcosine True``):
s = 10 (``--scaling``), the cosine loss at every epoch, the cosine logits at evaluation; its optional NCE
term (``--lam``, default 0) is not offered. BalanceBenchmark's ``MMCosineTrainer``
(github.com/GeWu-Lab/BalanceBenchmark) uses s = 15 and a window ``start <= epoch <= end`` (0..80) with
the plain cross-entropy on the fused head (bias included) outside it: ``scale = 15, window = (0, 80)``.

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
import torch.nn.functional as F
from torch import Tensor, nn

from avel.balance.base import POSITIVE, WINDOW, BalancerHooks, StepResult, option, output_loss, task_loss
from avel.models.base import AVModel, ModelOutput, WrappedModel
from avel.models.fusion import ConcatFusion, SumFusion

if TYPE_CHECKING:
    from avel.data.splits import Batch

EVERY_EPOCH = 1_000_000  # the end of a window that never closes (the release has none)


def cosine_logits(z: Tensor, weight: Tensor, scale: float) -> Tensor:
    """s · cos(z, W_c) for every class c: z (…, D), W (C, D) -> (…, C) (MMCosine §2)."""
    return scale * F.normalize(z, dim=-1) @ F.normalize(weight, dim=-1).T


def split_head_weights(model: AVModel) -> tuple[Tensor, Tensor] | None:
    """(W^a, W^v), each (C, D): each modality's share of a clip classifier's linear fused head, or None."""
    head = getattr(model, "head", None)
    if isinstance(head, ConcatFusion):
        w = head.fc.weight
        return w[:, : head.dim], w[:, head.dim :]
    if isinstance(head, SumFusion):
        return head.fc_a.weight, head.fc_v.weight
    return None


class MMCosineModel(WrappedModel):
    """A base model whose ``fuse`` returns the MMCosine logits Σ_m s·cos(z^m, W^m)."""

    def __init__(self, base: AVModel, scale: float = 10.0) -> None:
        super().__init__(base)
        self.scale = float(scale)
        self.z_dim = base.z_dim
        self.splits_logits = True
        self.own = split_head_weights(base) is None  # AVEL: its own class weights
        if self.own:
            c, d = base.num_classes, base.z_dim
            bound = 1.0 / math.sqrt(d)  # nn.Linear's initialisation (the scale cancels in the cosine)
            self.weight_audio = nn.Parameter(torch.empty(c, d).uniform_(-bound, bound))
            self.weight_visual = nn.Parameter(torch.empty(c, d).uniform_(-bound, bound))

    def class_weights(self) -> tuple[Tensor, Tensor]:
        if self.own:
            return self.weight_audio, self.weight_visual
        return split_head_weights(self.base)

    def fuse(self, z_audio: Tensor, z_visual: Tensor) -> ModelOutput:
        w_a, w_v = self.class_weights()
        logits_a = cosine_logits(z_audio, w_a, self.scale)  # l^a
        logits_v = cosine_logits(z_visual, w_v, self.scale)  # l^v
        return ModelOutput(logits_a + logits_v, z_audio, z_visual, logits_a, logits_v)


@dataclass(frozen=True)
class MMCosineOptions:
    scale: float = option(
        10.0,
        "s: logits s·cos(z^m, W^m_c) (the release's --scaling; BalanceBenchmark 15)",
        POSITIVE,
    )
    window: list[int] = option(
        [0, EVERY_EPOCH],
        "epochs [start, end] of the cosine loss: every epoch as the release (BalanceBenchmark: [0, 80])",
        WINDOW,
    )


class MMCosine(BalancerHooks):
    """Cross-entropy on the sum of each modality's scaled cosine logits."""

    name = "mmcosine"
    method = "MMCosine"
    Options = MMCosineOptions
    grid_rows = ()  # BalanceBenchmark's rows: avel.experiments.ablate._balance_benchmark_cells

    def __init__(self, options: MMCosineOptions | None = None, *, seed: int = 0, **values: Any) -> None:
        super().__init__(options, seed=seed, **values)
        self.scale = float(self.options.scale)
        self.window = (int(self.options.window[0]), int(self.options.window[1]))
        self.epoch = 0

    def applies_to(self, model: AVModel) -> str | None:
        if model.per_segment or split_head_weights(model) is not None:
            return None
        name = model.fusion_name or "this"
        return (
            f"MMCosine normalises each modality's share of a linear fused head (concat or sum); "
            f"{name} fusion has none"
        )

    def prepare_model(self, model: AVModel) -> AVModel:
        return model if isinstance(model, MMCosineModel) else MMCosineModel(model, self.scale)

    @property
    def active(self) -> bool:
        return self.window[0] <= self.epoch <= self.window[1]

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        if not isinstance(model, MMCosineModel):
            raise ValueError("MMCosine trains the model returned by MMCosine.prepare_model")
        z_a, z_v = model.encode(batch.audio, batch.visual)
        out = model.fuse(z_a, z_v)
        if self.active:
            loss = task_loss(out.logits, batch.labels)  # CE on Σ_m s·cos(z^m, W^m)
        else:  # outside the window: the model's own fused head, bias included (BalanceMM)
            loss = output_loss(model.base.fuse(z_a, z_v), batch.labels)
        return StepResult(loss, out, {"loss_ce": loss.detach()})


__all__ = ["MMCosine", "MMCosineModel", "cosine_logits", "split_head_weights"]
