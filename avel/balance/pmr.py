"""PMR: prototypical modal rebalance (Fan et al., CVPR 2023, §4).

Each modality gets class prototypes (Eq. 6/12), computed without gradients at the start of every epoch on
a fixed subset of the training data. The prototype classifier (Eq. 7) measures how well each modality
alone separates the classes; their ratio ρ (Eq. 8) sets coefficients (Eq. 11) that add the prototypical
cross-entropy of the slower modality to the loss (Eqs. 9–10) and, in the first E_r epochs, push up the
entropy of the dominant modality's prototype distribution (PER, Eq. 13).

On per-segment models (AVEL, paper §5.3) only event segments take part: prototypes of the event classes
(``model.prototype_classes``), ρ, PCE and PER are weighted by ``event_weights``; background segments and
videos without an event segment contribute nothing.

Deviations from the released code (github.com/fanyunfeng-bit/Modal-Imbalance-PMR):
- coefficients follow Eq. 11 by default; the code's step rule (weight α on the weaker modality's PCE, 0 on
  the other) is ``coef="step"``;
- PER (Eq. 13) is implemented from the paper; the code has none (``mu=0`` removes it);
- ρ, β, γ and the logs stay device tensors (no ``.item()`` per step); the code branches on Python floats;
- outside the PMR window the loss is the plain task loss, but prototypes, ρ and the prototype accuracies
  are still computed and logged so that ρ can be plotted over the whole run (PMR Fig. 4);
- classes absent from the prototype subset (no prototype yet) are masked out of the prototype softmax, PCE
  and ρ (``absent="mask"``); ``absent="zero"`` keeps their zero prototype at the origin in every softmax
  (the literal Eq. 6; the released code divides by a zero count and gets NaN prototypes);
- ``proto_every`` / ``pce_cap`` (off by default) are a guard for high learning rates, not in the paper;
- ``frames`` (clip files): the prototype pass encodes that many evenly spaced stored frames per clip; the
  default (0) encodes the evaluation's frames (all 10 stored on CREMA-D), the released code the 3 frames
  of its training loader (3.3× fewer visual forwards per clip with ``frames=3``);
- ``subset="test"`` is the released CG-MNIST script's source (a fresh random tenth of the **test** split
  every epoch, its shuffled test loader's first tenth of batches): only under ``protocol = "released"``;
- ``redraw=True`` draws a fresh random subset of train every epoch, as the released script's other branches
  (CREMA-D, KS, VGGSound: its shuffled train loader's first tenth of batches, main_Prototype_grad.py
  L539/L557, L429); the default is one fixed subset D_s, drawn once (paper §4).

The window is inclusive, ``start <= epoch <= end``, as the released code's test. Besides the epoch mean of
ρ (the released code's log), the epoch logs hold the mean of log ρ and the median of ρ over the steps,
which outlier batches do not dominate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from avel.balance.base import (
    NON_NEGATIVE,
    UNIT_OPEN,
    WINDOW,
    BalancerHooks,
    StepResult,
    check,
    one_of,
    option,
    output_loss,
    weighted_mean,
)
from avel.collectives import all_reduce_sum
from avel.families import FAMILIES
from avel.models.base import AVModel, event_weights, flatten_samples
from avel.models.prototypes import compute_prototypes, prototype_logits

if TYPE_CHECKING:
    from avel.data.splits import Batch, DataSplits

EPS = 1e-8
COEF = one_of("paper", "step")  # β, γ of Eq. 11, or the released code's step rule
RELEASED_FRACTION = 0.1  # the released script's tenth of the loader's batches (all_num // 10)


def released_source(model: str) -> str:
    """'test' or 'train': where the released protocol takes the prototypes from for the model family
    ``model`` (its ``released_prototypes``; an unknown name keeps the CG-MNIST rule)."""
    family = FAMILIES.get(model)
    return family.released_prototypes if family is not None else "test"


def released_rows(
    n: int, seed: int, epoch: int, device: torch.device | str = "cpu", fraction: float = RELEASED_FRACTION
) -> Tensor:
    """The prototype rows of epoch ``epoch``: a fresh random ``fraction`` of ``n`` rows (the released script
    draws them from a shuffled loader before every epoch), seeded (seed, epoch) so that the released
    protocol's per-epoch test evaluation sees the same prototypes as the next epoch's PMR."""
    k = max(1, round(fraction * n))
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g)[:k].sort().values.to(device)


released_test_rows = released_rows  # the test split's rows (the CG-MNIST script's source)


def update_prototypes(old: Tensor | None, new: Tensor, counts: Tensor, momentum: float) -> Tensor:
    """c ← ε c_old + (1 − ε) c_new for classes seen in the subset; an absent class keeps c_old (Eq. 12)."""
    if old is None:  # first epoch: an unseen class stays at the zero row of ``new``
        return new.clone()
    old = old.to(new.device, new.dtype)
    blended = momentum * old + (1.0 - momentum) * new  # Eq. 12
    return torch.where((counts > 0)[:, None], blended, old)


def entropy(p: Tensor) -> Tensor:
    """Entropy of each row of a probability matrix (N, K) -> (N,); finite gradients where p underflows."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1)


def true_class_score(p: Tensor, labels: Tensor) -> Tensor:
    """p_i[y_i] for each row; labels outside [0, K) (background) are read at class 0 (their weight is 0)."""
    y = labels.reshape(-1)
    y = torch.where((y >= 0) & (y < p.shape[-1]), y, 0)
    return p.gather(1, y[:, None]).squeeze(1)


def imbalance_ratio(p_a: Tensor, p_v: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
    """ρ = Σ_i w_i p^a_i[y_i] / Σ_i w_i p^v_i[y_i] (Eq. 8); 1 when no sample takes part. Under several
    training processes the sums run over the global batch (every rank's rows)."""
    s_a = (true_class_score(p_a, labels) * weights).sum()
    s_v = (true_class_score(p_v, labels) * weights).sum()
    s_a, s_v, total = all_reduce_sum(torch.stack([s_a, s_v, weights.sum()]))  # over every rank's batch
    rho = s_a / s_v.clamp_min(EPS)  # Eq. 8
    return torch.where(total > 0, rho, torch.ones_like(rho))


def pmr_coefficients(rho: Tensor, coef: str = "paper") -> tuple[Tensor, Tensor]:
    """(β, γ): the weights of the audio and visual PCE (Eq. 11), without branching on tensor values.

    "paper": ρ<1: β = clip(1/ρ − 1, 0, 1), γ = 0; ρ≥1: β = 0, γ = clip(ρ − 1, 0, 1).
    "step" (released code): β = 1 if ρ<1, γ = 1 if ρ>1, else 0.
    """
    check("PMR coef", coef, COEF)
    rho = torch.as_tensor(rho, dtype=torch.float32)
    zero = torch.zeros_like(rho)
    if coef == "paper":
        beta = torch.where(rho < 1, (1.0 / rho.clamp_min(EPS) - 1.0).clamp(0.0, 1.0), zero)  # Eq. 11
        gamma = torch.where(rho >= 1, (rho - 1.0).clamp(0.0, 1.0), zero)  # Eq. 11
        return beta, gamma
    return (rho < 1).float(), (rho > 1).float()  # "step"


def prototype_terms(
    z: Tensor, prototypes: Tensor, labels: Tensor, weights: Tensor, present: Tensor | None = None
) -> dict[str, Tensor]:
    """One modality's prototype classifier on a batch: probabilities, PCE (Eq. 9), entropy, accuracy.

    ``z`` (N, D) keeps its graph (PCE trains the encoder); ``prototypes`` are constants. ``present`` (K,)
    masks classes without a prototype out of the softmax (``weights`` already exclude their samples).
    """
    logits = prototype_logits(z, prototypes.detach())  # (N, K), Eq. 7
    if present is not None:  # a finite floor: no inf × 0 = NaN for samples of absent classes (weight 0)
        logits = logits.masked_fill(~present.to(logits.device), torch.finfo(logits.dtype).min / 2)
    log_p = F.log_softmax(logits, dim=-1)
    y = labels.reshape(-1)
    y_safe = torch.where(weights > 0, y, 0)
    pce = weighted_mean(F.nll_loss(log_p, y_safe, reduction="none"), weights)  # Eq. 9
    p = log_p.exp()
    correct = (logits.argmax(-1) == y).float()
    return {
        "p": p,
        "pce": pce,
        "entropy": weighted_mean(entropy(p), weights),
        "acc": weighted_mean(correct, weights),
    }


def capped(term: Tensor, cap: float, reference: Tensor) -> Tensor:
    """``term`` scaled by min(1, cap·reference/term) (a constant factor): its value never exceeds
    cap × reference, its gradient keeps its direction (the high-lr guard's bounded PCE; 0 = off)."""
    if cap <= 0:
        return term
    scale = (cap * reference.detach() / term.detach().clamp_min(EPS)).clamp(max=1.0)
    return term * scale


def _fraction_or_val(v: Any) -> bool:
    try:
        return v in ("val", "test") or 0 < float(v) <= 1
    except (TypeError, ValueError):
        return False


SUBSET = (_fraction_or_val, "'val', 'test' (protocol = 'released') or a fraction of train in (0, 1]")


@dataclass(frozen=True)
class PMROptions:
    alpha: float = option(2.0, "α of Eq. 10 (PCE weight)", NON_NEGATIVE)
    mu: float = option(1e-3, "μ of Eq. 13 (PER weight; 0: no PER)", NON_NEGATIVE)
    reg_epochs: int = option(10, "E_r: PER in the first E_r epochs", NON_NEGATIVE)
    window: list[int] = option([0, 70], "epochs [start, end] PMR is active in, inclusive", WINDOW)
    subset: str = option(
        "0.1", "prototype subset: a fraction of train, 'val', or 'test' (protocol released)", SUBSET
    )
    momentum: float = option(0.0, "prototype momentum ε of Eq. 12", UNIT_OPEN)
    redraw: bool = option(
        False, "a fresh random train subset every epoch (the released CREMA-D script), not one fixed D_s"
    )
    coef: str = option("paper", "β, γ: paper (Eq. 11) | step (the released code)", COEF)
    absent: str = option(
        "mask",
        "classes without a prototype: mask (out of softmax/PCE/ρ) | zero (literal)",
        one_of("mask", "zero"),
    )
    proto_every: int = option(
        0, "high-lr guard: prototypes also from the batches every N steps (0 = off)", NON_NEGATIVE
    )
    pce_cap: float = option(
        0.0, "high-lr guard: each PCE term at most cap × the task loss (0 = off)", NON_NEGATIVE
    )
    frames: int = option(
        0, "clip files: frames per clip in the prototype pass, evenly spaced (0 = evaluation's)", NON_NEGATIVE
    )


class PMR(BalancerHooks):
    """Prototypical modal rebalance: L = L_CE + αβ PCE^a + αγ PCE^v − μγ H(p^a) − μβ H(p^v) (Eqs. 10, 13)."""

    name = "pmr"
    method = "PMR"
    Options = PMROptions
    grid_rows = (("PMR w/o PER", {"pmr_mu": 0.0}), ("PMR", {}))  # μ = 0 removes Eq. 13's term
    weighs_event_segments = True
    runs_forward = True

    def __init__(
        self, options: PMROptions | None = None, *, seed: int = 0, batch_size: int = 256, **values: Any
    ) -> None:
        super().__init__(options, seed=seed, **values)
        o = self.options
        self.alpha, self.mu, self.reg_epochs = float(o.alpha), float(o.mu), int(o.reg_epochs)
        self.window = (int(o.window[0]), int(o.window[1]))
        self.subset = o.subset if o.subset in ("val", "test") else float(o.subset)
        self.momentum, self.coef, self.redraw = float(o.momentum), o.coef, bool(o.redraw)
        self.absent, self.proto_every, self.pce_cap = o.absent, int(o.proto_every), float(o.pce_cap)
        self.frames = int(o.frames)  # prototype pass: frames per clip (0: the split's evaluation frames)
        self.batch_size = int(batch_size)  # rows per forward pass when computing prototypes
        self.present: Tensor | None = None  # (K,) classes that have a prototype
        self.running: list[Tensor] | None = None  # guard: [sums_a, sums_v, counts] since the last refresh
        self.steps = 0  # training steps in this epoch
        self.rho_steps: list[Tensor] = []  # ρ of each step of the epoch (median in epoch_logs)
        self.epoch = 0
        self.indices: Tensor | None = None  # the fixed train subset D_s
        self.prototypes: tuple[Tensor, Tensor] | None = None  # (c_audio (K, D), c_visual (K, D))
        self.counts: Tensor | None = None

    def event_splits(self) -> tuple[str, ...]:
        return ("train", "val") if self.subset == "val" else ("train",)  # prototypes from val's events

    @property
    def active(self) -> bool:
        return self.window[0] <= self.epoch <= self.window[1]  # inclusive, as the released code

    def subset_indices(self, n: int, device: torch.device) -> Tensor:
        """A fixed random subset of ``n`` train rows, drawn once from ``seed``."""
        if self.indices is None:
            k = max(1, round(float(self.subset) * n))
            g = torch.Generator().manual_seed(self.seed)
            self.indices = torch.randperm(n, generator=g)[:k].sort().values
        self.indices = self.indices.to(device)
        return self.indices

    def on_epoch_start(self, model: AVModel, data: DataSplits, epoch: int) -> None:
        self.epoch = epoch
        if self.subset == "val":
            split, indices = data.val, None
        elif self.subset == "test":  # the released protocol: reads the test split while training
            split = data.test
            indices = released_test_rows(len(split), self.seed, epoch, split.device)
            self.indices = indices
        elif self.redraw:  # the released CREMA-D script: a fresh tenth of its shuffled train loader
            split = data.train
            indices = released_rows(len(split), self.seed, epoch, split.device, float(self.subset))
            self.indices = indices
        else:
            split = data.train
            indices = self.subset_indices(len(split), split.device)
        c_a, c_v, counts = compute_prototypes(
            model, split, model.prototype_classes, model.background, indices, self.batch_size, self.frames
        )
        old_a, old_v = self.prototypes if self.prototypes is not None else (None, None)
        self.prototypes = (
            update_prototypes(old_a, c_a, counts, self.momentum),  # Eq. 12
            update_prototypes(old_v, c_v, counts, self.momentum),
        )
        self.counts = counts
        seen = counts > 0
        self.present = seen if self.present is None else self.present.to(seen.device) | seen
        self.running, self.steps, self.rho_steps = None, 0, []

    def class_mask(self) -> Tensor | None:
        """(K,) classes in the softmax: those with a prototype ("mask"), or None for all ("zero")."""
        return self.present if self.absent == "mask" else None

    @torch.no_grad()
    def refresh(self, z_a: Tensor, z_v: Tensor, labels: Tensor, weights: Tensor) -> None:
        """Guard: add the batch's representations to per-class sums; every ``proto_every`` steps the
        prototypes of the classes seen since the last refresh become their means (no extra pass)."""
        y = torch.where(weights > 0, labels, 0)
        if self.running is None:
            k = self.prototypes[0].shape[0]
            self.running = [
                z_a.new_zeros(k, z_a.shape[-1]),
                z_v.new_zeros(k, z_v.shape[-1]),
                z_a.new_zeros(k),
            ]
        sums_a, sums_v, counts = self.running
        sums_a.index_add_(0, y, z_a.detach().float() * weights[:, None])
        sums_v.index_add_(0, y, z_v.detach().float() * weights[:, None])
        counts.index_add_(0, y, weights)
        if self.steps % self.proto_every:
            return
        sums_a, sums_v, counts = (all_reduce_sum(t) for t in self.running)  # every rank's batches
        seen = (counts > 0)[:, None]
        denom = counts.clamp_min(1.0)[:, None]
        self.prototypes = tuple(
            torch.where(seen, sums / denom, old.to(sums.device))
            for sums, old in zip((sums_a, sums_v), self.prototypes, strict=True)
        )
        self.present = self.present.to(counts.device) | (counts > 0)
        self.running = None

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        out = model(batch.audio, batch.visual)
        loss_ce = output_loss(out, batch.labels)
        logs = {"loss_ce": loss_ce.detach()}
        if self.prototypes is None:  # on_epoch_start not called: plain joint training
            return StepResult(loss_ce, out, logs)
        labels = batch.labels.reshape(-1)
        z_a, z_v = flatten_samples(out.z_audio), flatten_samples(out.z_visual)
        w = event_weights(labels, model.background)
        self.steps += 1
        if self.proto_every:
            self.refresh(z_a, z_v, labels, w)
        mask = self.class_mask()
        if mask is not None:  # samples of a class without a prototype take no part
            mask = mask.to(labels.device)
            w = w * mask[torch.where(w > 0, labels, 0)].float()
        audio = prototype_terms(z_a, self.prototypes[0], labels, w, mask)
        visual = prototype_terms(z_v, self.prototypes[1], labels, w, mask)
        rho = imbalance_ratio(audio["p"].detach(), visual["p"].detach(), labels, w)  # Eq. 8
        self.rho_steps.append(rho.detach())
        beta, gamma = pmr_coefficients(rho, self.coef)  # Eq. 11, constants
        loss = loss_ce
        if self.active:
            pce_a = capped(audio["pce"], self.pce_cap, loss_ce)
            pce_v = capped(visual["pce"], self.pce_cap, loss_ce)
            loss = loss + self.alpha * beta * pce_a + self.alpha * gamma * pce_v  # Eq. 10
            if self.epoch < self.reg_epochs and self.mu > 0:
                per = gamma * audio["entropy"] + beta * visual["entropy"]
                loss = loss - self.mu * per  # Eq. 13
        logs.update(
            rho=rho,
            log_rho=torch.log(rho.clamp_min(EPS)),
            beta=beta,
            gamma=gamma,
            pce_audio=audio["pce"].detach(),
            pce_visual=visual["pce"].detach(),
            per_audio=audio["entropy"].detach(),
            per_visual=visual["entropy"].detach(),
            proto_acc_audio=audio["acc"],
            proto_acc_visual=visual["acc"],
        )
        return StepResult(loss, out, logs)

    def epoch_logs(self) -> dict[str, float]:
        if self.counts is None:
            return {}
        logs = {"prototypes_missing": (self.counts == 0).sum().float()}
        if self.rho_steps:
            logs["rho_median"] = torch.stack(self.rho_steps).float().median()
        self.rho_steps = []
        keys = list(logs)
        return dict(zip(keys, torch.stack([logs[k] for k in keys]).tolist(), strict=True))  # one transfer

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "indices": None if self.indices is None else self.indices.cpu(),
            "prototypes": None if self.prototypes is None else tuple(c.cpu() for c in self.prototypes),
            "counts": None if self.counts is None else self.counts.cpu(),
            "present": None if self.present is None else self.present.cpu(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state.get("epoch", 0))
        self.indices = state.get("indices")
        protos = state.get("prototypes")
        self.prototypes = None if protos is None else (protos[0], protos[1])
        self.counts = state.get("counts")
        self.present = state.get("present")
        if self.present is None and self.counts is not None:  # a checkpoint from before `present`
            self.present = self.counts > 0


__all__ = [
    "PMR",
    "capped",
    "entropy",
    "imbalance_ratio",
    "pmr_coefficients",
    "prototype_terms",
    "released_rows",
    "released_source",
    "released_test_rows",
    "update_prototypes",
]
