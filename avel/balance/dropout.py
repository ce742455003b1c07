"""Modality dropout: a DropPathway-style baseline (PMR paper, Table 2), plus the seeded device RNG that the
stochastic balancers share.

Per sample (per sample-segment on AVEL), with probability ``p`` one modality, chosen uniformly, has its
representation zeroed before fusion; never both. Kept features are NOT rescaled: a dropped modality plays
a missing modality, and at test time both are always present, so the kept one keeps its test-time scale.
The loss is the task loss on ``model.fuse`` of the dropped representations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from avel.balance.base import BalancerHooks, StepResult, output_loss
from avel.models.base import AVModel

if TYPE_CHECKING:
    from avel.data import Batch


class DeviceGenerator:
    """A ``torch.Generator`` made on the device of first use from ``seed``; its state goes to checkpoints."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.generator: torch.Generator | None = None
        self.pending: Tensor | None = None  # a state loaded before the device was known

    def get(self, device: torch.device) -> torch.Generator:
        device = torch.device(device)
        if self.generator is None or self.generator.device != device:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(self.seed)
            if self.pending is not None:
                try:
                    self.generator.set_state(self.pending)
                except RuntimeError:  # state from another device type: start again from the seed
                    self.generator.manual_seed(self.seed)
                self.pending = None
        return self.generator

    def state(self) -> Tensor | None:
        return self.generator.get_state() if self.generator is not None else self.pending

    def load(self, state: Tensor | None) -> None:
        self.generator, self.pending = None, state


def sample_mask_shape(z: Tensor) -> tuple[int, ...]:
    """One draw per sample (B, 1) or per sample-segment (B, T, 1)."""
    return (*z.shape[:-1], 1)


class ModalityDropout(BalancerHooks):
    """With probability p per sample, zero the audio or the visual representation (uniform choice)."""

    name = "dropout"

    def __init__(self, *, p: float = 0.3, seed: int = 0) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout p must be in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = DeviceGenerator(seed)
        self.epoch = 0

    def drop_masks(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(keep_audio, keep_visual, dropped) float masks of shape (B, 1) or (B, T, 1)."""
        g = self.rng.get(z.device)
        shape = sample_mask_shape(z)
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


__all__ = ["DeviceGenerator", "ModalityDropout"]
