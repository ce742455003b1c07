"""Diagnosing & re-learning (Wei, Li, Hu, ECCV 2024, "Diagnosing and Re-learning for Balanced Multimodal
Learning"), as its released code runs it (github.com/GeWu-Lab/Diagnosing_Relearning_ECCV2024,
``code/ours.py``, ``code/script/ours.sh``).

Plain joint training (CE on the fused logits); after epoch e with e > 0 and e % ``every`` = 0 (the script:
every 20 epochs, at most ``times`` = 3 times) each uni-modal encoder is diagnosed and softly re-initialised:

    features z^m of train and of val (eval mode), each feature scaled to [−1, 1] over its split
    k-means with C clusters on each; purity P = (1/N) Σ_clusters max_class |cluster ∩ class|
    gap^m = |P^m_train − P^m_val|,   α^m = tanh(λ gap^m)                   (λ = ``lam`` = 3)
    θ^m ← α^m θ^m_0 + (1 − α^m) θ^m                                          θ^m_0: the initial parameters

A modality that learned "too well" on train relative to val (a large purity gap) is pulled back harder
towards its initialisation. The optimizer state is kept (as the code). θ_0 is the model at
``prepare_model`` (after ``--init`` / ``--init-from``) and travels in the balancer's checkpoint state.

Deviations: the code runs scikit-learn's ``KMeans(random_state=0)`` (k-means++ with local trials); here a
plain k-means++ and Lloyd iterations in torch, seeded (``seed``), one run; on AVEL the clustering takes the
event segments of each split (C = the event classes); under several processes every rank clusters the
whole split (features gathered over the ranks, each row once, in row order: the one-process result).
The re-initialisation happens at the start of epoch e + 1 (the loop's hook), the same point in training.

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

from avel.balance.base import AT_LEAST_1, NON_NEGATIVE, BalancerHooks, StepResult, option, output_loss
from avel.collectives import world_size
from avel.models.base import AVModel, event_weights

if TYPE_CHECKING:
    from avel.data.splits import Batch, DataSplits, SplitData

MODALITIES = ("audio", "visual")


def minmax_scale(x: Tensor) -> Tensor:
    """Each column to [−1, 1] (scikit-learn's MinMaxScaler; a constant column goes to −1)."""
    lo, hi = x.min(0).values, x.max(0).values
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return 2 * (x - lo) / span - 1


def kmeans(x: Tensor, k: int, seed: int, iters: int = 300, tol: float = 1e-4) -> Tensor:
    """Cluster index of each row: k-means++ seeding from ``seed``, then Lloyd iterations until the centres
    move less than ``tol`` × the mean feature variance (scikit-learn's stopping rule)."""
    g = torch.Generator().manual_seed(seed)
    x = x.double().cpu()
    n = len(x)
    k = min(k, n)
    centres = [x[torch.randint(n, (1,), generator=g)].squeeze(0)]
    d2 = (x - centres[0]).square().sum(1)
    for _ in range(1, k):
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full((n,), 1.0 / n, dtype=x.dtype)
        pick = torch.multinomial(probs, 1, generator=g).item()
        centres.append(x[pick])
        d2 = torch.minimum(d2, (x - x[pick]).square().sum(1))
    c = torch.stack(centres)
    limit = tol * x.var(0).mean()
    assign = torch.cdist(x, c).argmin(1)
    for _ in range(iters):
        new = torch.stack([x[assign == j].mean(0) if (assign == j).any() else c[j] for j in range(k)])
        shift = (new - c).square().sum()
        c = new
        assign = torch.cdist(x, c).argmin(1)
        if shift <= limit:
            break
    return assign


def purity(labels: Tensor, clusters: Tensor) -> float:
    """(1/N) Σ_clusters max_class |cluster ∩ class| (the code's ``purity_score``)."""
    total = 0
    for j in clusters.unique():
        total += int(torch.bincount(labels[clusters == j]).max())
    return total / max(len(labels), 1)


def reinit_strength(gap: float, lam: float) -> float:
    """α = tanh(λ · gap)."""
    return float(torch.tanh(torch.tensor(lam * gap)))


@torch.no_grad()
def split_features(model: AVModel, split: SplitData, batch_size: int = 256) -> tuple[Tensor, Tensor, Tensor]:
    """(z^a, z^v, labels) of every row (every event segment on AVEL) of ``split`` in eval mode, on the CPU,
    gathered over the ranks (each row once, in row order)."""
    was = model.training
    model.eval()
    za, zv, ys, rows = [], [], [], []
    try:
        for batch in split.batches(batch_size):
            z_a, z_v = model.encode(batch.audio, batch.visual)
            za.append(z_a.float().cpu())
            zv.append(z_v.float().cpu())
            ys.append(batch.labels.cpu())
            rows.append(split.rows[batch.index.cpu()])
    finally:
        model.train(was)
    z_a, z_v, y, r = _in_row_order(torch.cat(za), torch.cat(zv), torch.cat(ys), torch.cat(rows))
    if y.dim() > 1:  # per segment: the event segments
        keep = event_weights(y, model.background) > 0
        z_a, z_v = z_a.reshape(-1, z_a.shape[-1])[keep], z_v.reshape(-1, z_v.shape[-1])[keep]
        y = y.reshape(-1)[keep]
    return z_a, z_v, y


def _in_row_order(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Every rank's rows (the last tensor holds the row ids), each row once, sorted by row id."""
    if world_size() > 1:
        import torch.distributed as dist

        gathered = []
        for t in tensors:
            parts: list = [None] * world_size()
            dist.all_gather_object(parts, t)
            gathered.append(torch.cat(parts))
        tensors = tuple(gathered)
    rows = tensors[-1]
    order = torch.argsort(rows, stable=True)
    rows_sorted = rows[order]
    first = torch.ones_like(rows_sorted, dtype=torch.bool)
    first[1:] = rows_sorted[1:] != rows_sorted[:-1]
    pick = order[first]
    return tuple(t[pick] for t in tensors)


def diagnose(z_train: Tensor, y_train: Tensor, z_val: Tensor, y_val: Tensor, k: int, seed: int) -> tuple:
    """(purity on train, purity on val) of k-means with ``k`` clusters on the scaled features of each."""
    p_train = purity(y_train, kmeans(minmax_scale(z_train), k, seed))
    p_val = purity(y_val, kmeans(minmax_scale(z_val), k, seed))
    return p_train, p_val


@dataclass(frozen=True)
class ReLearningOptions:
    lam: float = option(3.0, "ReLearning: alpha = tanh(lam * purity gap)", NON_NEGATIVE)
    every: int = option(20, "re-initialise after epochs e > 0 with e % every == 0 ...", AT_LEAST_1)
    times: int = option(3, "... at most this many times", NON_NEGATIVE)


class ReLearning(BalancerHooks):
    """Diagnose each encoder by its train/val clustering purity gap and softly re-initialise it."""

    name = "relearning"
    method = "ReLearning"
    Options = ReLearningOptions
    runs_forward = True

    def __init__(self, options: ReLearningOptions | None = None, *, seed: int = 0, **values: Any) -> None:
        super().__init__(options, seed=seed, **values)
        o = self.options
        lam, every, times = o.lam, o.every, o.times
        self.lam, self.every, self.times, self.seed = float(lam), int(every), int(times), int(seed)
        self.epoch = 0
        self.done = 0
        self.initial: dict[str, list[Tensor]] | None = None  # θ^m_0 per modality, in branch order
        self.last: dict[str, float] = {}

    def prepare_model(self, model: AVModel) -> AVModel:
        if self.initial is None:
            self.initial = {
                m: [p.detach().cpu().clone() for _, p in model.branch_parameters(m)] for m in MODALITIES
            }
        return model

    def due(self, epoch: int) -> bool:
        """Re-learn before ``epoch``: after epoch e = epoch − 1 > 0 with e % every = 0, at most ``times``."""
        e = epoch - 1
        return e > 0 and e % self.every == 0 and self.done < self.times

    def on_epoch_start(self, model: AVModel, data: DataSplits, epoch: int) -> None:
        self.epoch = epoch
        self.last = {}
        if not self.due(epoch):
            return
        train_a, train_v, y_train = split_features(model, data.train)
        val_a, val_v, y_val = split_features(model, data.val)
        k = model.prototype_classes
        for m, z_train, z_val in (("audio", train_a, val_a), ("visual", train_v, val_v)):
            p_train, p_val = diagnose(z_train, y_train, z_val, y_val, k, self.seed)
            alpha = reinit_strength(abs(p_train - p_val), self.lam)
            self.last |= {f"purity_train_{m}": p_train, f"purity_val_{m}": p_val, f"reinit_{m}": alpha}
            self.reinit(model, m, alpha)
        self.done += 1

    @torch.no_grad()
    def reinit(self, model: AVModel, modality: str, alpha: float) -> None:
        """θ ← α θ_0 + (1 − α) θ for the branch of ``modality``."""
        params = [p for _, p in model.branch_parameters(modality)]
        for p, p0 in zip(params, self.initial[modality], strict=True):
            p.copy_(alpha * p0.to(p.device, p.dtype) + (1 - alpha) * p)

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        out = model(batch.audio, batch.visual)
        loss = output_loss(out, batch.labels)
        return StepResult(loss, out, {"loss_ce": loss.detach()})

    def epoch_logs(self) -> dict[str, float]:
        return dict(self.last)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "done": self.done, "initial": self.initial}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.done = int(state.get("epoch", 0)), int(state.get("done", 0))
        if state.get("initial") is not None:
            self.initial = {m: [t.clone() for t in ts] for m, ts in state["initial"].items()}


__all__ = ["ReLearning", "diagnose", "kmeans", "minmax_scale", "purity", "reinit_strength"]
