"""LFM as BalanceBenchmark's ``LFMTrainer`` implements it (github.com/GeWu-Lab/BalanceBenchmark, method
"learning-fitted"; BalanceBenchmark cites Yang et al., NeurIPS 2024, "Facilitating Multimodal
Classification via Dynamically Learning Modality Gap"): the task loss and an alignment of the two
modalities' predictions, weighted by α = (α_0, α_1), α_1 learned between epochs.

With l^a, l^v the split logits of the fused head, p = softmax(l^a), q = softmax(l^v), m = (p + q)/2:

    JS(l^a, l^v) = ½ (KL(m ‖ p) + KL(m ‖ q))     ``F.kl_div(p.log(), m)``: KL(m‖p), as the code (js="code")
    L = 2 (α_0 CE(l, y) + α_1 JS(l^a, l^v))

``js="paper"`` is the Jensen-Shannon divergence ½ (KL(p ‖ m) + KL(q ‖ m)). α starts at (0.95, 0.05); at the
start of every epoch, on the first ``probe_size`` rows of the validation split (the code: the first quarter
of its first, unshuffled val batch, 32 / 4 = 8 rows at BalanceBenchmark's batch size; ``alpha_data``:
"val" as the code, or the first rows of train), with L_cls = CE and L_total = α_0 L_cls + α_1 JS:

    α_1 ← α_1 − η_α · mean(H(L_total) ∇L_cls)_P,     P = the model's first parameter tensor

(a Hessian-vector product, only its first tensor's mean, as the code); η_α = 1e-4 halves at every epoch
that is a non-zero multiple of 20 (and stays halved). α_0 never changes. The model runs that probe in
training mode, as the code (batch-norm statistics see those rows). The mean over a batch is over every
sample (segment on AVEL); under several processes each rank probes the same rows (the same α).
Needs split logits (concat or sum fusion).

Paper numbering: not verified. The paper's full text could not be read from this project (its stored
copies give the title, abstract and the start of the introduction only: docs/deviations.md, "Equation
numbers of the BalanceBenchmark methods"), so no formula here carries an equation number and any §
reference is unchecked; the formulas follow the code named above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from avel.balance.base import (
    AT_LEAST_1,
    NON_NEGATIVE,
    WINDOW,
    BalancerHooks,
    StepResult,
    check,
    one_of,
    option,
    output_loss,
    task_loss,
)
from avel.balance.ogm import split_logits_reason
from avel.models.base import AVModel, flatten_samples

if TYPE_CHECKING:
    from avel.data.splits import Batch, DataSplits

JS = ("code", "paper")
ALPHA_DATA = ("val", "train")


def alignment(logits_a: Tensor, logits_v: Tensor, js: str = "code") -> Tensor:
    """The code's ½(KL(m‖p) + KL(m‖q)) or the Jensen-Shannon ½(KL(p‖m) + KL(q‖m)), batch mean."""
    check("LFM js", js, one_of(*JS))
    p = torch.softmax(flatten_samples(logits_a).float(), -1)
    q = torch.softmax(flatten_samples(logits_v).float(), -1)
    m = 0.5 * (p + q)
    n = p.shape[0]
    if js == "code":  # F.kl_div(log p, m, 'batchmean') = Σ m (log m − log p) / N
        return 0.5 * ((m * (m.log() - p.log())).sum() + (m * (m.log() - q.log())).sum()) / n
    return 0.5 * ((p * (p.log() - m.log())).sum() + (q * (q.log() - m.log())).sum()) / n  # "paper"


def lfm_loss(loss_cls: Tensor, align: Tensor, alpha: tuple[float, float]) -> Tensor:
    """L = 2 (α_0 L_cls + α_1 JS) (one pair of modalities)."""
    return 2 * (alpha[0] * loss_cls + alpha[1] * align)


def alpha_gradient(model: AVModel, batch: Batch, alpha: tuple[float, float], js: str = "code") -> float:
    """mean((H(L_total) ∇L_cls) of the first parameter tensor): the code's step direction for α_1."""
    out = model(batch.audio, batch.visual)
    loss_cls = task_loss(out.logits, batch.labels)
    total = alpha[0] * loss_cls + alpha[1] * alignment(out.logits_audio, out.logits_visual, js)
    params = [p for p in model.parameters() if p.requires_grad]
    theta = torch.autograd.grad(total, params, create_graph=True, allow_unused=True)
    cls = torch.autograd.grad(loss_cls, params, retain_graph=True, create_graph=True, allow_unused=True)
    used = [(t, c, p) for t, c, p in zip(theta, cls, params, strict=True) if t is not None and c is not None]
    hvp = torch.autograd.grad(
        [t for t, _, _ in used],
        [p for _, _, p in used],
        grad_outputs=[c for _, c, _ in used],
        allow_unused=True,
    )
    first = hvp[0] if hvp[0] is not None else torch.zeros(())
    return float(first.mean())


@dataclass(frozen=True)
class LFMOptions:
    alpha: list[float] = option(
        [0.95, 0.05], "(α_0, α_1) at the start", (lambda v: len(v) == 2, "two numbers")
    )
    lr_alpha: float = option(1e-4, "η_α, halved at every 20th epoch", NON_NEGATIVE)
    js: str = option("code", "code (½(KL(m‖p) + KL(m‖q))) | paper (Jensen-Shannon)", one_of(*JS))
    alpha_data: str = option("val", "rows that fit α_1: val (the code) | train", one_of(*ALPHA_DATA))
    probe_size: int = option(8, "that many first rows", AT_LEAST_1)
    window: list[int] = option([0, 80], "epochs [start, end] of the alignment term, inclusive", WINDOW)


class LFM(BalancerHooks):
    """2(α_0 CE + α_1 alignment of the uni-modal predictions), α_1 fitted by a Hessian-vector step."""

    name = "lfm"
    differentiates_parameters = True  # torch.autograd.grad of its losses w.r.t. the parameters
    method = "LFM"
    Options = LFMOptions
    grid_rows = ()  # BalanceBenchmark's rows: avel.experiments.ablate._balance_benchmark_cells

    def __init__(self, options: LFMOptions | None = None, *, seed: int = 0, **values: Any) -> None:
        super().__init__(options, seed=seed, **values)
        o = self.options
        self.alpha = (float(o.alpha[0]), float(o.alpha[1]))
        self.lr_alpha, self.js, self.alpha_data = float(o.lr_alpha), o.js, o.alpha_data
        self.window = (int(o.window[0]), int(o.window[1]))
        self.probe_size = int(o.probe_size)
        self.alpha_grad = 0.0
        self.epoch = 0

    def applies_to(self, model: AVModel) -> str | None:
        return split_logits_reason("LFM", model)

    def probe_batch(self, data: DataSplits) -> Batch:
        """The first ``probe_size`` rows of val (or train), the same rows every epoch."""
        split = data.val if self.alpha_data == "val" else data.train
        rows = torch.arange(max(1, min(self.probe_size, len(split))))
        return split.batch(rows.to(split.device))

    def on_epoch_start(self, model: AVModel, data: DataSplits, epoch: int) -> None:
        self.epoch = epoch
        if data is None or not self.window[0] <= epoch <= self.window[1]:
            return
        batch = self.probe_batch(data)
        was_training = model.training
        model.train()  # as the code: the probe runs in training mode
        with torch.backends.cudnn.flags(enabled=False):  # cuDNN's LSTM has no double backward
            self.alpha_grad = alpha_gradient(model, batch, self.alpha, self.js)
        model.train(was_training)
        model.zero_grad(set_to_none=True)
        if epoch % 20 == 0 and epoch != 0:
            self.lr_alpha /= 2
        self.alpha = (self.alpha[0], self.alpha[1] - self.lr_alpha * self.alpha_grad)

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        out = model(batch.audio, batch.visual)
        loss_ce = output_loss(out, batch.labels)
        if not self.window[0] <= self.epoch <= self.window[1]:
            return StepResult(loss_ce, out, {"loss_ce": loss_ce.detach()})
        if out.logits_audio is None or out.logits_visual is None:
            raise ValueError(
                "LFM needs split logits (concat or sum fusion); the model's fusion returned none"
            )
        align = alignment(out.logits_audio, out.logits_visual, self.js)
        loss = lfm_loss(loss_ce, align, self.alpha)
        return StepResult(loss, out, {"loss_ce": loss_ce.detach(), "alignment": align.detach()})

    def epoch_logs(self) -> dict[str, float]:
        return {"alpha_1": self.alpha[1], "alpha_grad": self.alpha_grad}

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "alpha": self.alpha,
            "lr_alpha": self.lr_alpha,
            "alpha_grad": self.alpha_grad,
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state.get("epoch", 0))
        self.alpha = tuple(state.get("alpha", self.alpha))
        self.lr_alpha = float(state.get("lr_alpha", self.lr_alpha))
        self.alpha_grad = float(state.get("alpha_grad", 0.0))


__all__ = ["LFM", "alignment", "alpha_gradient", "lfm_loss"]
