"""Sample-level modality valuation (Wei, Feng, Zhao, Li, Hu, CVPR 2024, "Enhancing Multimodal Cooperation via
Sample-level Modality Valuation"), as its released code runs it
(github.com/GeWu-Lab/Valuate-and-Enhance-Multimodal-Cooperation, ``code/sample_level.py``,
``code/datasets/dataloader.py``: ``AV_KS_Dataset_sample_level``, ``code/models/models.py``: ``exec_drop``).

After each epoch from ``warmup − 1`` on, every train sample is valued (eval mode, no gradients): with the
fused prediction on (z^a, z^v), on (z^a, 0) and on (0, z^v) (the other modality's *feature* zeroed),

    v(∅) = 0,  v({a}) = 1[ŷ(z^a, 0) = y],  v({v}) = 1[ŷ(0, z^v) = y],  v({a, v}) = 2 · 1[ŷ(z^a, z^v) = y]
    φ^a = (v({a}) + v({a, v}) − v({v})) / 2,   φ^v = (v({v}) + v({a, v}) − v({a})) / 2       (Shapley)

and the next epoch trains on every sample once plus extra copies that train one modality alone: a sample
gets n(φ^a) copies with the visual feature zeroed and n(φ^v) copies with the audio feature zeroed,

    n(φ) = 1 if 0.4 < φ < 1,  2 if −0.1 < φ < 0.4,  3 if φ < −0.1,  else 0   (φ ∈ {−½, 0, ½, 1, 3/2})

so the samples where a modality contributes little get more training of that modality alone. The first
``warmup`` epochs (5) train on the plain train split.

``level="modality"`` is the paper's modality-level method (``code/modality_level.py``, BalanceBenchmark's
default): the mean contributions φ̄^a, φ̄^v over a random ``part`` (0.2) of train drawn with replacement give
the gaps g^m = 1 − φ̄^m; ⌊d N⌋ rows drawn with replacement, d = α · (2/3) |g^a − g^v| (α = 1), are added as
copies that train the modality with the larger gap alone (the other's feature zeroed).

In avel the copies are rows repeated in the epoch's row list (``train_indices``); the k-th time a row comes
up in the shuffled epoch it takes the k-th entry of its list [none, visual dropped × n(φ^a), audio dropped ×
n(φ^v)] (copies of one sample are exchangeable: the same distribution of (position, drop) as shuffling
distinct copies). Clip classifiers only (AVEL localizes per segment: a clip has no single value); one
process only (each rank's resampled shard would take a different number of steps).

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

from avel.balance.base import NON_NEGATIVE, BalancerHooks, StepResult, one_of, option, output_loss
from avel.collectives import world_size
from avel.models.base import AVModel, ModelOutput

if TYPE_CHECKING:
    from avel.data.splits import Batch, DataSplits, SplitData

NONE, DROP_AUDIO, DROP_VISUAL = 0, 1, 2  # the code's drop flags: 1 zeroes audio, 2 zeroes visual
LEVELS = ("sample", "modality")


def contributions(right_a: Tensor, right_v: Tensor, right_av: Tensor) -> tuple[Tensor, Tensor]:
    """(φ^a, φ^v) per sample from the correctness of the audio-only, visual-only and fused predictions."""
    v_a, v_v, v_av = right_a.float(), right_v.float(), 2.0 * right_av.float()
    return (v_a + v_av - v_v) / 2, (v_v + v_av - v_a) / 2


def copies(phi: Tensor) -> Tensor:
    """n(φ): 1 on (0.4, 1), 2 on (−0.1, 0.4), 3 below −0.1, else 0 (strict bounds, as the code)."""
    n = torch.zeros_like(phi, dtype=torch.long)
    n = torch.where((phi > 0.4) & (phi < 1), 1, n)
    n = torch.where((phi > -0.1) & (phi < 0.4), 2, n)
    return torch.where(phi < -0.1, 3, n)


def drop_table(phi_a: Tensor, phi_v: Tensor) -> tuple[Tensor, Tensor]:
    """(count per sample, (N, 7) drop flag of each occurrence): [none, visual × n(φ^a), audio × n(φ^v)]."""
    n_a, n_v = copies(phi_a), copies(phi_v)
    k = torch.arange(7, device=phi_a.device)[None]
    table = torch.where(k == 0, NONE, torch.where(k <= n_a[:, None], DROP_VISUAL, DROP_AUDIO))
    count = 1 + n_a + n_v
    return count, torch.where(k < count[:, None], table, NONE)


def modality_level_table(
    phi_a: Tensor, phi_v: Tensor, part: float, alpha: float, generator: torch.Generator
) -> tuple[Tensor, Tensor, dict[str, float]]:
    """(count, drop table, logs) of the modality-level re-sampling (the code's ``modality_level.py``)."""
    n = len(phi_a)
    subset = torch.randint(n, (max(1, int(n * part)),), generator=generator)  # np.random.choice: replace
    gap_a, gap_v = 1.0 - float(phi_a[subset].mean()), 1.0 - float(phi_v[subset].mean())
    d = abs(gap_a - gap_v) / 3 * 2 * alpha  # the code's linear ``difference``
    picks = torch.randint(n, (int(d * n),), generator=generator)
    extra = torch.bincount(picks, minlength=n)
    flag = DROP_VISUAL if gap_a > gap_v else DROP_AUDIO  # train the modality with the larger gap alone
    count = 1 + extra
    k = torch.arange(int(count.max()))[None]
    table = torch.where((k > 0) & (k < count[:, None]), flag, NONE)
    return count, table, {"gap_audio": gap_a, "gap_visual": gap_v, "resample_share": d}


def occurrence(rows: Tensor, seen: Tensor) -> Tensor:
    """How many times each of ``rows`` came before it in this epoch (earlier batches: ``seen``; this batch:
    earlier positions), on the device."""
    sorted_rows, perm = rows.sort(stable=True)
    pos = torch.arange(len(rows), device=rows.device)
    new = torch.ones_like(sorted_rows, dtype=torch.bool)
    new[1:] = sorted_rows[1:] != sorted_rows[:-1]
    start = torch.cummax(torch.where(new, pos, 0), 0).values
    occ_sorted = seen[sorted_rows] + (pos - start)
    occ = torch.empty_like(occ_sorted)
    occ[perm] = occ_sorted
    return occ


@torch.no_grad()
def value_samples(model: AVModel, split: SplitData, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """(φ^a, φ^v) of every row of ``split`` in row order (eval mode)."""
    was = model.training
    model.eval()
    phis = []
    try:
        for batch in split.batches(batch_size):
            z_a, z_v = model.encode(batch.audio, batch.visual)
            y = batch.labels
            right = [
                model.fuse(a, v).logits.argmax(-1) == y
                for a, v in ((z_a, torch.zeros_like(z_v)), (torch.zeros_like(z_a), z_v), (z_a, z_v))
            ]
            phis.append(torch.stack(contributions(*right), 1))
    finally:
        model.train(was)
    phi = torch.cat(phis)
    return phi[:, 0], phi[:, 1]


@dataclass(frozen=True)
class ValuationOptions:
    warmup: int = option(5, "sample-level valuation: epochs on the plain train split first", NON_NEGATIVE)
    level: str = option(
        "sample",
        "sample | modality (the paper's modality-level method)",
        one_of(*LEVELS),
    )
    part: float = option(
        0.2,
        "modality level: share of train whose mean contributions give the gaps",
        (lambda v: 0 < v <= 1, "in (0, 1]"),
    )
    alpha: float = option(1.0, "modality level: re-sampled share = alpha * 2/3 |gap_a - gap_v|", NON_NEGATIVE)


class Valuation(BalancerHooks):
    """Re-sample train each epoch by each sample's Shapley modality contributions."""

    name = "valuation"
    method = "Valuation"
    Options = ValuationOptions
    grid_rows = (("valuation", {}),)

    def __init__(self, options: ValuationOptions | None = None, *, seed: int = 0, **values: Any) -> None:
        super().__init__(options, seed=seed, **values)
        o = self.options
        warmup, level, part, alpha = o.warmup, o.level, o.part, o.alpha
        self.warmup, self.level, self.part, self.alpha = int(warmup), level, float(part), float(alpha)
        self.generator = torch.Generator().manual_seed(int(seed))  # the modality level's draws
        self.epoch = 0
        self.count: Tensor | None = None  # occurrences per row in this epoch
        self.table: Tensor | None = None  # drop flag of each occurrence
        self.seen: Tensor | None = None
        self.shares: dict[str, float] = {}

    def applies_to(self, model: AVModel) -> str | None:
        if model.per_segment:
            return "valuation values and re-samples whole clips; the AVEL localizer predicts per segment"
        if world_size() > 1:
            return "valuation re-samples each epoch's rows: processes would take different step counts"
        return None

    def on_epoch_start(self, model: AVModel, data: DataSplits, epoch: int) -> None:
        self.epoch, self.count, self.table, self.seen, self.shares = epoch, None, None, None, {}
        if epoch < self.warmup or data is None:
            return
        phi_a, phi_v = value_samples(model, data.train)  # the model after epoch − 1
        self.shares = {"contrib_audio": float(phi_a.mean()), "contrib_visual": float(phi_v.mean())}
        if self.level == "sample":
            self.count, self.table = drop_table(phi_a, phi_v)
        else:
            self.count, self.table, extra = modality_level_table(
                phi_a.cpu(), phi_v.cpu(), self.part, self.alpha, self.generator
            )
            self.count, self.table = self.count.to(phi_a.device), self.table.to(phi_a.device)
            self.shares |= extra
        self.seen = torch.zeros_like(self.count)
        self.shares["resampled_rows"] = float(self.count.sum())

    def train_indices(self, train: SplitData) -> Tensor | None:
        if self.count is None:
            return None
        return torch.repeat_interleave(torch.arange(len(self.count), device=self.count.device), self.count)

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        z_a, z_v = model.encode(batch.audio, batch.visual)
        drop = torch.zeros_like(batch.index)
        if self.table is not None:
            rows = batch.index.to(self.table.device)
            occ = occurrence(rows, self.seen).clamp_max(self.table.shape[1] - 1)
            drop = self.table[rows, occ].to(z_a.device)
            self.seen.index_add_(0, rows, torch.ones_like(rows))
        shape = (-1, *([1] * (z_a.dim() - 1)))  # one flag per clip (per video on a per-segment model)
        keep_a = (drop != DROP_AUDIO).to(z_a.dtype).reshape(shape)
        keep_v = (drop != DROP_VISUAL).to(z_v.dtype).reshape(shape)
        out = model.fuse(z_a * keep_a, z_v * keep_v)
        loss = output_loss(out, batch.labels)
        logs = {"loss_ce": loss.detach(), "dropped": (drop != NONE).float().mean()}
        return StepResult(loss, ModelOutput(out.logits, z_a, z_v, out.logits_audio, out.logits_visual), logs)

    def epoch_logs(self) -> dict[str, float]:
        return dict(self.shares)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state.get("epoch", 0))
        if "generator" in state:
            self.generator.set_state(state["generator"])


__all__ = [
    "Valuation",
    "contributions",
    "copies",
    "drop_table",
    "modality_level_table",
    "occurrence",
    "value_samples",
]
