"""OPM: on-the-fly prediction modulation (Wei, Hu, Du, Wen, TPAMI 2024), as its released code runs it.

Per batch, from the scores s^u = Σ_i softmax(out_u)_i[y_i] (event segments only on AVEL): r_u =
tanh(ReLU(s_u / s_other − 1)) and q_u = clip(q_base (1 + λ r_u), 0, 1) where r_u > 0, else 0 — only the
dominant modality gets a drop probability, and equal scores drop nothing. With probability p_exe the batch
is modulated: each sample's (sample-segment's on AVEL) feature of modality u is zeroed with probability
q_u, and the features of **both** modalities are scaled by 1/(1 − θ), θ = Σ_u d_u q_u / Σ_u d_u (d_u the
feature sizes: θ = q/2 for two equal sizes), in the forward pass and the backward pass alike. Samples
that lose both modalities are removed from the loss. The first ``warmup`` epochs train without
modulation (the released code: ``epoch <= 5``, 6 epochs). The loss is the task loss on ``model.fuse`` of
the dropped features.

Scores come, without gradients, from the fusion's split logits on the undropped features; where the
fusion does not split its logits (FiLM, gated, DMRN) from fusing each modality with the other zeroed,
``fuse(z_a, 0)`` and ``fuse(0, z_v)`` (ours: the released code has concat only).

Options beyond the released code (github.com/GeWu-Lab/BML_TPAMI2024, ``models/Classifier.py``):
``rescale="dominant"`` scales only the kept features of the dropped modality by 1/(1 − q_u) (avel's
earlier reading of the paper); ``drop_both=True`` also drops the other modality with probability q_base.
The execution draw, the masks and the scores stay on the device (a 0/1 tensor multiplies the masks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from avel.balance.base import (
    NON_NEGATIVE,
    UNIT,
    BalancerHooks,
    DeviceGenerator,
    StepResult,
    one_of,
    option,
    sample_mask_shape,
    weighted_mean,
)
from avel.balance.ogm import modality_scores
from avel.models.base import AVModel

if TYPE_CHECKING:
    from avel.data.splits import Batch

EPS = 1e-8


def drop_probability(s_a: Tensor, s_v: Tensor, q_base: float, lam: float) -> tuple[Tensor, Tensor]:
    """(q_a, q_v): q_u = clip(q_base (1 + λ r_u), 0, 1) if r_u = tanh(ReLU(s_u/s_other − 1)) > 0, else 0."""
    qs = []
    for s_u, s_o in ((s_a, s_v), (s_v, s_a)):
        r = torch.tanh(F.relu(s_u / s_o.clamp_min(EPS) - 1.0))  # discrepancy ratio
        q = (q_base * (1.0 + lam * r)).clamp(0.0, 1.0)  # drop probability of the dominant modality
        qs.append(torch.where(r > 0, q, torch.zeros_like(q)))
    return qs[0], qs[1]


def drop_share(q_a: Tensor, q_v: Tensor, d_a: int, d_v: int) -> Tensor:
    """θ = (d_a q_a + d_v q_v) / (d_a + d_v): the expected share of dropped feature entries."""
    return (d_a * q_a + d_v * q_v) / (d_a + d_v)


def keep_masks(
    shape: tuple[int, ...],
    q_a: Tensor,
    q_v: Tensor,
    execute: Tensor,
    generator: torch.Generator,
    device: torch.device,
    theta: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Scaled keep masks: 0 where dropped (probability q·execute); kept entries 1/(1 − θ) when executed
    (both modalities), or each modality's 1/(1 − q_u) when ``theta`` is None (``rescale="dominant"``)."""
    masks = []
    for q in (q_a, q_v):
        drop = (torch.rand(shape, generator=generator, device=device) < q).float() * execute
        share = q if theta is None else theta
        scale = torch.where(execute > 0, 1.0 / (1.0 - share).clamp_min(EPS), torch.ones_like(share))
        masks.append((1.0 - drop) * scale)
    return masks[0], masks[1]


@dataclass(frozen=True)
class OPMOptions:
    q_base: float = option(0.5, "q_base: the drop probability's base", UNIT)
    lam: float = option(0.5, "λ: how fast q grows with the dominance", NON_NEGATIVE)
    p_exe: float = option(0.7, "probability that a batch is modulated at all", UNIT)
    warmup: int = option(6, "epochs without modulation (the released code: epoch <= 5)", NON_NEGATIVE)
    rescale: str = option("code", "kept features' scale: code | dominant", one_of("code", "dominant"))
    drop_both: bool = option(False, "drop either modality, not only the dominant one")


class OPM(BalancerHooks):
    """Drop the dominant modality's features with probability q in the forward pass."""

    name = "opm"
    method = "OPM"
    Options = OPMOptions
    weighs_event_segments = True

    def __init__(self, options: OPMOptions | None = None, *, seed: int = 0, **values: Any) -> None:
        super().__init__(options, seed=seed, **values)
        o = self.options
        self.q_base, self.lam, self.p_exe = float(o.q_base), float(o.lam), float(o.p_exe)
        self.warmup, self.drop_both, self.rescale = int(o.warmup), bool(o.drop_both), o.rescale
        self.rng = DeviceGenerator(seed)
        self.epoch = 0

    def applies_to(self, model: AVModel) -> str | None:
        return None  # without split logits the scores come from the zeroed-modality proxy

    @torch.no_grad()
    def scores(self, model: AVModel, z_a: Tensor, z_v: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(s^a, s^v) on the undropped features, from split logits or the zeroed-modality proxy."""
        z_a, z_v = z_a.detach(), z_v.detach()
        full = model.fuse(z_a, z_v)
        if full.logits_audio is None or full.logits_visual is None:
            full.logits_audio = model.fuse(z_a, torch.zeros_like(z_v)).logits
            full.logits_visual = model.fuse(torch.zeros_like(z_a), z_v).logits
        return modality_scores(full, labels, model.background, "OPM")

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        z_a, z_v = model.encode(batch.audio, batch.visual)
        s_a, s_v = self.scores(model, z_a, z_v, batch.labels)
        q_a, q_v = drop_probability(s_a, s_v, self.q_base, self.lam)
        if self.drop_both:  # ours: the other modality too, with probability q_base
            other = torch.full_like(q_a, self.q_base)
            q_a, q_v = (
                torch.where((q_a == 0) & (q_v > 0), other, q_a),
                torch.where((q_v == 0) & (q_a > 0), other, q_v),
            )
        g = self.rng.get(z_a.device)
        on = float(self.epoch >= self.warmup)
        execute = (torch.rand((), generator=g, device=z_a.device) < self.p_exe).float() * on
        theta = drop_share(q_a, q_v, z_a.shape[-1], z_v.shape[-1]) if self.rescale == "code" else None
        keep_a, keep_v = keep_masks(sample_mask_shape(z_a), q_a, q_v, execute, g, z_a.device, theta)
        out = model.fuse(z_a * keep_a.to(z_a.dtype), z_v * keep_v.to(z_v.dtype))
        present = 1.0 - ((keep_a == 0) & (keep_v == 0)).float().reshape(-1)  # both dropped: removed
        logits = out.logits.reshape(-1, out.logits.shape[-1]).float()
        loss = weighted_mean(F.cross_entropy(logits, batch.labels.reshape(-1), reduction="none"), present)
        logs = {
            "loss_ce": loss.detach(),
            "drop_prob": torch.maximum(q_a, q_v),
            "drop_rate_audio": (keep_a == 0).float().mean(),
            "drop_rate_visual": (keep_v == 0).float().mean(),
            "score_ratio": s_a / s_v.clamp_min(EPS),
            "executed": execute,
        }
        return StepResult(loss, out, logs)


__all__ = ["OPM", "drop_probability", "drop_share", "keep_masks"]
