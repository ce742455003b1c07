"""OPM: on-the-fly prediction modulation (Wei, Hu, Du, Wen, TPAMI 2024).

Per batch, the dominant modality's representation is dropped with a dynamic probability before fusion:
r = tanh(ReLU(s_dom / s_other − 1)), q = clip(q_base (1 + λ r), 0, 1). With probability p_exe the batch is
modulated: each sample's (sample-segment's on AVEL) feature of the dominant modality is zeroed with
probability q and the kept ones are scaled by 1/(1 − θ), θ = q the mean drop probability. With
``drop_both=True`` the other modality is also dropped, with probability q_base; samples that lose both
modalities get weight 0 in the loss. The loss is the task loss on ``model.fuse`` of the dropped features.

Scores s^u = Σ_i softmax(out_u)_i[y_i] (event segments only on AVEL) come, without gradients, from the
fusion's split logits on the undropped features; where the fusion does not split its logits (FiLM, gated,
DMRN) from fusing each modality with the other zeroed, ``fuse(z_a, 0)`` and ``fuse(0, z_v)``.

Deviations from the released code (github.com/GeWu-Lab/BML_TPAMI2024): the execution draw, the drop masks
and the scores stay on the device (a 0/1 tensor multiplies the masks instead of a Python ``if``); no
warm-up modulation in the first ``warmup`` epochs (plain task loss); the zeroed-modality proxy for
fusions without split logits is ours.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from avel.balance.base import BalancerHooks, DeviceGenerator, StepResult, sample_mask_shape, weighted_mean
from avel.balance.ogm import modality_scores
from avel.models.base import AVModel

if TYPE_CHECKING:
    from avel.data import Batch

EPS = 1e-8


def drop_probability(s_a: Tensor, s_v: Tensor, q_base: float, lam: float) -> tuple[Tensor, Tensor]:
    """(q, audio_dominant): q = clip(q_base (1 + λ tanh(ReLU(s_dom/s_other − 1))), 0, 1)."""
    audio_dominant = (s_a > s_v).float()
    dom = torch.maximum(s_a, s_v)
    other = torch.minimum(s_a, s_v)
    r = torch.tanh(F.relu(dom / other.clamp_min(EPS) - 1.0))  # discrepancy ratio
    q = (q_base * (1.0 + lam * r)).clamp(0.0, 1.0)  # drop probability
    return q, audio_dominant


def keep_masks(
    shape: tuple[int, ...],
    q_a: Tensor,
    q_v: Tensor,
    execute: Tensor,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Scaled keep masks: 0 where dropped (probability q·execute), 1/(1 − q) where kept when executed."""
    masks = []
    for q in (q_a, q_v):
        drop = (torch.rand(shape, generator=generator, device=device) < q).float() * execute
        scale = torch.where(execute > 0, 1.0 / (1.0 - q).clamp_min(EPS), torch.ones_like(q))
        masks.append((1.0 - drop) * scale)  # kept features scaled by 1/(1 − θ)
    return masks[0], masks[1]


class OPM(BalancerHooks):
    """Drop the dominant modality's features with probability q in the forward pass."""

    name = "opm"

    def __init__(
        self,
        *,
        q_base: float = 0.5,
        lam: float = 0.5,
        p_exe: float = 0.7,
        warmup: int = 5,
        drop_both: bool = False,
        seed: int = 0,
    ) -> None:
        for key, value in (("q_base", q_base), ("p_exe", p_exe)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"OPM {key} must be in [0, 1], got {value!r}")
        self.q_base, self.lam, self.p_exe = float(q_base), float(lam), float(p_exe)
        self.warmup, self.drop_both = int(warmup), bool(drop_both)
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
        q, audio_dom = drop_probability(s_a, s_v, self.q_base, self.lam)
        g = self.rng.get(z_a.device)
        on = float(self.epoch >= self.warmup)
        execute = (torch.rand((), generator=g, device=z_a.device) < self.p_exe).float() * on
        q_other = torch.full_like(q, self.q_base if self.drop_both else 0.0)
        q_a = torch.where(audio_dom > 0, q, q_other)
        q_v = torch.where(audio_dom > 0, q_other, q)
        keep_a, keep_v = keep_masks(sample_mask_shape(z_a), q_a, q_v, execute, g, z_a.device)
        out = model.fuse(z_a * keep_a.to(z_a.dtype), z_v * keep_v.to(z_v.dtype))
        present = 1.0 - ((keep_a == 0) & (keep_v == 0)).float().reshape(-1)  # both dropped: removed
        logits = out.logits.reshape(-1, out.logits.shape[-1]).float()
        loss = weighted_mean(F.cross_entropy(logits, batch.labels.reshape(-1), reduction="none"), present)
        logs = {
            "loss_ce": loss.detach(),
            "drop_prob": q,
            "drop_rate_audio": (keep_a == 0).float().mean(),
            "drop_rate_visual": (keep_v == 0).float().mean(),
            "score_ratio": s_a / s_v.clamp_min(EPS),
            "executed": execute,
        }
        return StepResult(loss, out, logs)


__all__ = ["OPM", "drop_probability", "keep_masks"]
