"""CML: calibrating multimodal learning (Ma, Zhang, Zhang, Wu, Fu, Zhou, Hu, ICML 2023).

Principle: the confidence of a prediction should not increase when a modality is removed. With
Conf(x) = max_c softmax(f(x))_c, f(x) the logits on both modalities and f(x^{-m}) those with modality m
removed (its representation zeroed before fusion), CML adds to the task loss the penalty on confidence
that rises when m is removed.

As BalanceBenchmark's ``CMLTrainer`` runs it (github.com/GeWu-Lab/BalanceBenchmark) for two modalities:
the removed modality m is drawn once per epoch (a seeded shuffle of the modalities, the last one removed);
f(x^{-m}) on a linear concat head is z^{m'} W^{m'} + b, which ``model.fuse`` with z^m = 0 gives for every
fusion; the loss is

    L = (CE(f(x), y) + CE(f(x^{-m}), y)) / 2 + λ · max(0, Σ_i (Conf(x_i^{-m}) − Conf(x_i)))

with λ = 0.1 and the sum over the batch *inside* the max (``reduce="batch"``); BalanceMM computes the
authors' "trick 1" mask and discards it. ``reduce="sample"`` is the penalty as the authors' release
computes it (github.com/QingyangZhang/CML, ``cpm/CPM_Nets.py`` ``rank_loss``, on CPM-Nets: no audio-visual
code): the per-sample hinge Σ_i s_i max(0, Conf(x_i^{-m}) − Conf(x_i)), where s_i = 0 for a sample that
the fewer modalities classify right and all of them wrong (trick 1), else 1.
Under several processes the batch sum is the global batch's (all-reduced); each rank backpropagates
world · 1[Σ_global > 0] · Σ_local so that the averaged gradient equals one process's.

On AVEL every segment is a sample (background included: its confidence is calibrated too).

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
from avel.collectives import all_reduce_sum, world_size
from avel.models.base import AVModel, flatten_samples

if TYPE_CHECKING:
    from avel.data.splits import Batch, DataSplits

MODALITIES = ("audio", "visual")
REDUCE = ("batch", "sample")


def confidence(logits: Tensor) -> Tensor:
    """Conf = max_c softmax(logits)_c per sample, (N,) (keeps the graph)."""
    return torch.softmax(flatten_samples(logits).float(), dim=-1).max(-1).values


def trick_mask(logits_full: Tensor, logits_removed: Tensor, labels: Tensor) -> Tensor:
    """s_i: 0 where the prediction without modality m is right and the full one wrong, else 1 (trick 1)."""
    y = labels.reshape(-1)
    right_removed = flatten_samples(logits_removed).argmax(-1) == y
    wrong_full = flatten_samples(logits_full).argmax(-1) != y
    return (~(right_removed & wrong_full)).float()


def confidence_penalty(
    conf_full: Tensor, conf_removed: Tensor, reduce: str = "batch", mask: Tensor | None = None
) -> Tensor:
    """ "batch": max(0, Σ_i (c^{-m}_i − c_i)) over the global batch, as a term whose gradient, averaged
    over ranks, is one process's; "sample": Σ_i s_i max(0, c^{-m}_i − c_i) (``mask`` = s, default all 1;
    a sum over rows, scaled by the ranks: the loop averages their gradients)."""
    diff = conf_removed - conf_full
    if reduce == "sample":
        hinge = torch.relu(diff) * (mask if mask is not None else 1.0)
        return hinge.sum() * world_size()
    check("CML reduce", reduce, one_of(*REDUCE))
    local = diff.sum()
    total = all_reduce_sum(local.detach())
    gate = (total > 0).to(local.dtype)
    # value: max(0, Σ_global) / world on each rank's share; gradient: 1[Σ_global > 0] · ∂Σ_local
    return gate * (local - local.detach() + total / world_size()) * world_size()


def removed_modality(seed: int, epoch: int) -> str:
    """The modality CML removes in ``epoch``: a seeded shuffle of (audio, visual), the last one."""
    g = torch.Generator().manual_seed(seed * 1000003 + epoch)
    order = torch.randperm(len(MODALITIES), generator=g).tolist()
    return MODALITIES[order[-1]]


@dataclass(frozen=True)
class CMLOptions:
    lam: float = option(0.1, "λ of the confidence penalty", NON_NEGATIVE)
    window: list[int] = option([0, 80], "epochs [start, end] of the penalty, inclusive", WINDOW)
    reduce: str = option("batch", "batch (max(0, Σ_i), the code) | sample (Σ_i max(0, ·))", one_of(*REDUCE))


class CML(BalancerHooks):
    """Task loss on both and on one modality, plus λ · the confidence that rises when it is removed."""

    name = "cml"
    method = "CML"
    Options = CMLOptions
    grid_rows = ()  # BalanceBenchmark's rows: avel.experiments.ablate._balance_benchmark_cells

    def __init__(self, options: CMLOptions | None = None, *, seed: int = 0, **values: Any) -> None:
        super().__init__(options, seed=seed, **values)
        self.lam, self.reduce = float(self.options.lam), self.options.reduce
        self.window = (int(self.options.window[0]), int(self.options.window[1]))
        self.epoch = 0

    def on_epoch_start(self, model: AVModel, data: DataSplits, epoch: int) -> None:
        self.epoch = epoch

    @property
    def removed(self) -> str:
        return removed_modality(self.seed, self.epoch)

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        z_a, z_v = model.encode(batch.audio, batch.visual)
        out = model.fuse(z_a, z_v)
        if not self.window[0] <= self.epoch <= self.window[1]:
            loss = output_loss(out, batch.labels)
            return StepResult(loss, out, {"loss_ce": loss.detach()})
        kept = (z_a, torch.zeros_like(z_v)) if self.removed == "visual" else (torch.zeros_like(z_a), z_v)
        partial = model.fuse(*kept)  # f(x^{-m}): modality m removed
        loss_ce = output_loss(out, batch.labels)
        loss_partial = task_loss(partial.logits, batch.labels)
        conf_full, conf_removed = confidence(out.logits), confidence(partial.logits)
        mask = trick_mask(out.logits, partial.logits, batch.labels) if self.reduce == "sample" else None
        penalty = confidence_penalty(conf_full, conf_removed, self.reduce, mask)
        loss = (loss_ce + loss_partial) / 2 + self.lam * penalty
        logs = {
            "loss_ce": loss_ce.detach(),
            "loss_removed": loss_partial.detach(),
            "cml_penalty": penalty.detach(),
            "conf": conf_full.detach().mean(),
            "conf_removed": conf_removed.detach().mean(),
        }
        return StepResult(loss, out, logs)


__all__ = ["CML", "confidence", "confidence_penalty", "removed_modality", "trick_mask"]
