"""MMPareto (Wei & Hu, ICML 2024, "MMPareto: Boosting Multimodal Learning with Innocent Unimodal
Assistance").

The model trains the multi-modal loss L_mm = CE(f(x), y) and one uni-modal loss per modality,
L_m = CE(h_m(z^m), y). For each modality's encoder θ_m, with g_mm = ∇_{θ_m} L_mm and g_u = ∇_{θ_m} L_m
(over the whole encoder, flattened):

    cos(g_mm, g_u) > 0:  (k_mm, k_u) = (1/2, 1/2)
    otherwise:           (k_mm, k_u) = (k, 1 − k), k = argmin_{k∈[0,1]} ‖k g_mm + (1−k) g_u‖ (min norm):
                         k = (‖g_u‖² − g_mm·g_u) / ‖g_mm − g_u‖², clipped to [0.001, 0.999] (MGDA, 2 tasks)

and for every parameter tensor P of the encoder, with g_P the gradient of L_mm + Σ_m L_m on P:

    ĝ_P = 2 k_mm g_mm,P + 2 k_u g_u,P;   P.grad = γ · max(1, ‖g_P‖ / ‖ĝ_P‖) · ĝ_P        (γ = 1.5)

(a common descent direction, its magnitude raised to at least that of the summed gradient). The heads
(fused and uni-modal) keep the gradient of the summed loss.

As the released code runs it (github.com/GeWu-Lab/MMPareto_ICML2024, ``MMPareto.py``): uni-modal heads
h_a, h_v of their own (``heads="separate"``), norms per parameter tensor, γ = 1.5, prediction = the fused
head. ``heads="split"`` takes the uni-modal logits from the split of the fused head instead, as
BalanceBenchmark's ``MMParetoTrainer`` does (whose conflict branch leaves both weights at 0, so that the
rescaled gradient there is 0/0; not reproduced). A tensor whose ĝ is zero keeps ĝ (the code's 0/0 would
give NaN). Gradients are those of the global batch under several processes (the loop averages the
summed gradient, ``mmpareto_gradients`` all-reduces g_mm and g_u), so every rank makes the same edit.

Paper numbering: not verified. The paper's full text could not be read from this project (its stored
copies give the title, abstract and the start of the introduction only: docs/deviations.md, "Equation
numbers of the BalanceBenchmark methods"), so no formula here carries an equation number and any §
reference is unchecked; the formulas follow the code named above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from avel.balance.base import (
    POSITIVE,
    WINDOW,
    BalancerHooks,
    StepResult,
    one_of,
    option,
    output_loss,
    task_loss,
)
from avel.balance.heads import UniHeadsModel
from avel.balance.ogm import split_logits_reason
from avel.collectives import all_reduce_sum, world_size
from avel.models.base import AVModel

if TYPE_CHECKING:
    from avel.data.splits import Batch

HEADS = ("separate", "split")
MODALITIES = ("audio", "visual")


def min_norm_2(g1: Tensor, g2: Tensor) -> Tensor:
    """k minimising ‖k g1 + (1−k) g2‖ (the two-task MGDA solver as the released code's MinNormSolver)."""
    v11, v12, v22 = g1 @ g1, g1 @ g2, g2 @ g2
    k = (v22 - v12) / (v11 + v22 - 2 * v12).clamp_min(1e-20)
    k = torch.where(v12 >= v22, torch.full_like(k, 0.001), k)
    return torch.where(v12 >= v11, torch.full_like(k, 0.999), k)


def pareto_weights(g_mm: Tensor, g_u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(k_mm, k_u, cos): 1/2 each when the two gradients agree (cos > 0), else the min-norm weights."""
    cos = torch.nn.functional.cosine_similarity(g_mm, g_u, dim=0)
    k = torch.where(cos > 0, torch.full_like(cos, 0.5), min_norm_2(g_mm, g_u))
    return k, 1.0 - k, cos


def pareto_gradient(
    g_total: Tensor, g_mm: Tensor, g_u: Tensor, k_mm: Tensor, k_u: Tensor, gamma: float
) -> Tensor:
    """γ · max(1, ‖g‖/‖ĝ‖) · ĝ with ĝ = 2 k_mm g_mm + 2 k_u g_u, for one parameter tensor."""
    new = 2 * k_mm * g_mm + 2 * k_u * g_u
    new_norm = new.norm()
    ratio = g_total.norm() / new_norm.clamp_min(1e-30)
    scale = torch.where((ratio > 1) & (new_norm > 0), ratio, torch.ones_like(ratio))
    return new * scale * gamma


def encoder_parameters(model: AVModel, modality: str) -> list[nn.Parameter]:
    return [p for _, p in model.branch_parameters(modality)]


def branch_gradients(loss: Tensor, params: list[nn.Parameter]) -> list[Tensor]:
    """∇_P loss for each P (zeros where the loss does not reach P), graph kept for the next loss."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]


def mean_over_ranks(grads: list[Tensor]) -> list[Tensor]:
    """The global batch's gradients: one all-reduce of the flattened list, divided by the ranks."""
    if world_size() == 1 or not grads:
        return grads
    flat = all_reduce_sum(torch.cat([g.reshape(-1).float() for g in grads])) / world_size()
    out, at = [], 0
    for g in grads:
        out.append(flat[at : at + g.numel()].view_as(g).to(g.dtype))
        at += g.numel()
    return out


@dataclass(frozen=True)
class MMParetoOptions:
    gamma: float = option(1.5, "γ: the integrated gradient's scale", POSITIVE)
    heads: str = option(
        "separate", "separate (uni-modal heads, released code) | split (BalanceBenchmark)", one_of(*HEADS)
    )
    window: list[int] = option([0, 80], "epochs [start, end] of the Pareto integration, inclusive", WINDOW)


class MMPareto(BalancerHooks):
    """L_mm + Σ_m L_m, each encoder's gradient replaced by the Pareto integration of g_mm and g_u."""

    name = "mmpareto"
    differentiates_parameters = True  # torch.autograd.grad of its losses w.r.t. the parameters
    method = "MMPareto"
    Options = MMParetoOptions
    grid_rows = ()  # BalanceBenchmark's rows: avel.experiments.ablate._balance_benchmark_cells

    def __init__(self, options: MMParetoOptions | None = None, *, seed: int = 0, **values: Any) -> None:
        super().__init__(options, seed=seed, **values)
        self.gamma, self.heads = float(self.options.gamma), self.options.heads
        self.window = (int(self.options.window[0]), int(self.options.window[1]))
        self.pending: dict[str, tuple[list[Tensor], list[Tensor]]] = {}
        self.epoch = 0

    def applies_to(self, model: AVModel) -> str | None:
        if self.heads == "split":
            return split_logits_reason("MMPareto (heads='split')", model)
        return None

    def prepare_model(self, model: AVModel) -> AVModel:
        if self.heads == "split" or isinstance(model, UniHeadsModel):
            return model
        return UniHeadsModel(model, predict="fused")

    @property
    def active(self) -> bool:
        return self.window[0] <= self.epoch <= self.window[1]

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        out = model(batch.audio, batch.visual)
        if out.logits_audio is None or out.logits_visual is None:
            raise ValueError(
                "MMPareto needs uni-modal logits: heads='separate', or a fusion that splits them"
            )
        loss_mm = output_loss(out, batch.labels)
        loss_a, loss_v = task_loss(out.logits_audio, batch.labels), task_loss(out.logits_visual, batch.labels)
        self.pending = {}
        if self.active and torch.is_grad_enabled():
            for modality, loss_u in (("audio", loss_a), ("visual", loss_v)):
                params = encoder_parameters(model, modality)
                g_mm = mean_over_ranks(branch_gradients(loss_mm, params))
                g_u = mean_over_ranks(branch_gradients(loss_u, params))
                self.pending[modality] = (g_mm, g_u)
        logs = {"loss_ce": loss_mm.detach(), "loss_audio": loss_a.detach(), "loss_visual": loss_v.detach()}
        return StepResult(loss_mm + loss_a + loss_v, out, logs)

    def before_optimizer_step(self, model: AVModel, result: StepResult) -> None:
        """Each encoder tensor's (averaged) summed gradient replaced by the Pareto-integrated one."""
        for modality, (g_mm, g_u) in self.pending.items():
            params = encoder_parameters(model, modality)
            flat_mm = torch.cat([g.reshape(-1).float() for g in g_mm])
            flat_u = torch.cat([g.reshape(-1).float() for g in g_u])
            k_mm, k_u, cos = pareto_weights(flat_mm, flat_u)
            result.logs[f"cos_{modality}"] = cos.detach()
            result.logs[f"k_mm_{modality}"] = k_mm.detach()
            for p, gm, gu in zip(params, g_mm, g_u, strict=True):
                if p.grad is None:
                    continue
                p.grad = pareto_gradient(p.grad.float(), gm.float(), gu.float(), k_mm, k_u, self.gamma).to(
                    p.dtype
                )
        self.pending = {}


__all__ = ["MMPareto", "min_norm_2", "pareto_gradient", "pareto_weights"]
