"""Modality dropout: a DropPathway-style baseline (PMR paper, Table 2).

``variant="sample"`` (default): per sample (per sample-segment on AVEL), with probability ``p`` one
modality, chosen uniformly, has its representation zeroed before fusion; never both.
``variant="droppathway"``: the method PMR's Table 2 compares with as "Modality-drop", DropPathway (Xiao et
al., Audiovisual SlowFast Networks, 2020; the PMR code has no implementation): at each training iteration
the audio pathway of the whole batch is dropped with probability ``p``.
Kept features are NOT rescaled: a dropped modality plays a missing modality, and at test time both are
always present, so the kept one keeps its test-time scale. The loss is the task loss on ``model.fuse`` of
the dropped representations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from avel.balance.base import (
    UNIT_OPEN,
    BalancerHooks,
    DeviceGenerator,
    StepResult,
    one_of,
    option,
    output_loss,
    sample_mask_shape,
)
from avel.models.base import AVModel

if TYPE_CHECKING:
    from avel.data.splits import Batch


@dataclass(frozen=True)
class DropoutOptions:
    p: float = option(0.3, "probability that a sample loses a modality", UNIT_OPEN)
    variant: str = option(
        "sample",
        "sample (per sample, either modality) | droppathway (audio, per batch)",
        one_of("sample", "droppathway"),
    )


class ModalityDropout(BalancerHooks):
    """With probability p per sample, zero the audio or the visual representation (uniform choice)."""

    name = "dropout"
    Options = DropoutOptions

    def __init__(self, options: DropoutOptions | None = None, *, seed: int = 0, **values: Any) -> None:
        super().__init__(options, seed=seed, **values)
        self.p, self.variant = float(self.options.p), self.options.variant
        self.rng = DeviceGenerator(seed)
        self.epoch = 0

    def drop_masks(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(keep_audio, keep_visual, dropped) float masks of shape (B, 1) or (B, T, 1)."""
        g = self.rng.get(z.device)
        shape = sample_mask_shape(z)
        if self.variant == "droppathway":  # one draw per iteration, audio only (Xiao et al. 2020)
            dropped = (torch.rand((), generator=g, device=z.device) < self.p).float().expand(shape)
            return 1.0 - dropped, torch.ones(shape, device=z.device), dropped
        dropped = (torch.rand(shape, generator=g, device=z.device) < self.p).float()
        audio = (torch.rand(shape, generator=g, device=z.device) < 0.5).float()
        return 1.0 - dropped * audio, 1.0 - dropped * (1.0 - audio), dropped

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        z_a, z_v = model.encode(batch.audio, batch.visual)
        keep_a, keep_v, dropped = self.drop_masks(z_a)
        out = model.fuse(z_a * keep_a.to(z_a.dtype), z_v * keep_v.to(z_v.dtype))
        loss = output_loss(out, batch.labels)
        logs = {
            "loss_ce": loss.detach(),
            "drop_rate": dropped.mean(),
            "drop_rate_audio": (1.0 - keep_a).mean(),
            "drop_rate_visual": (1.0 - keep_v).mean(),
        }
        return StepResult(loss, out, logs)
