"""The one output record and the one structure every model in avel shares.

Both model families (the AVEL temporal localizer and the ResNet18 clip classifiers) split into
``encode`` (each modality on its own, up to the representation before fusion) and ``fuse``. Balancers
only use this contract: PMR reads the representations, OGM-GE the split logits and the branch
parameters, OPM calls ``encode`` then ``fuse`` with dropped features, IPRM replaces ``fuse``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class ModelOutput:
    """What every model returns.

    Shapes: clip classifiers (B, ·); the AVEL localizer is per segment (B, T, ·).
    """

    logits: Tensor  # fused logits, (B, C) or (B, T, C)
    z_audio: Tensor  # audio representation before fusion, (B, D) or (B, T, D): h^a_t on AVEL
    z_visual: Tensor  # visual representation before fusion: h^v_t on AVEL
    logits_audio: Tensor | None = None  # each modality's share of the logits where the fusion splits
    logits_visual: Tensor | None = None  # (concat, sum; AVEL concat by its halves), else None
    # extra heads trained with the task loss but not part of the prediction (CentralNet's uni-modal heads)
    aux_logits: tuple[Tensor, ...] = ()


class AVModel(nn.Module):
    """Base class: ``forward = fuse(*encode(audio, visual))``.

    Subclasses set ``num_classes`` (logit width), ``background`` (index of the background label for
    per-segment models, ``None`` for clip classifiers), ``audio_branch`` / ``visual_branch`` (the modules
    that only see one modality: OGM-GE edits their gradients) and implement ``encode`` / ``fuse``.
    """

    num_classes: int
    background: int | None = None
    per_segment: bool = False
    fusion_name: str = ""  # concat | sum | film | gated | dmrn | audio | visual
    splits_logits: bool = False  # ModelOutput.logits_audio / logits_visual are set (OGM-GE needs them)
    z_dim: int | None = None  # width D of z_audio / z_visual (IPRM's heads)

    def encode(self, audio: Tensor, visual: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def fuse(self, z_audio: Tensor, z_visual: Tensor) -> ModelOutput:
        raise NotImplementedError

    def forward(self, audio: Tensor, visual: Tensor) -> ModelOutput:
        return self.fuse(*self.encode(audio, visual))

    def branch_parameters(self, modality: str) -> list[tuple[str, nn.Parameter]]:
        """Named parameters that belong to one modality's branch ('audio' or 'visual')."""
        branch = {"audio": "audio_branch", "visual": "visual_branch"}[modality]
        module = getattr(self, branch)
        return [(n, p) for n, p in module.named_parameters() if p.requires_grad]

    @property
    def backbone(self) -> AVModel:
        """The model that holds the encoders: itself, or the model a balancer's wrapper wraps."""
        return self

    @property
    def prototype_classes(self) -> int:
        """Number of classes that get prototypes: the event classes (background excluded)."""
        return self.num_classes - (1 if self.background is not None else 0)


class WrappedModel(AVModel):
    """A balancer's model around a base model (IPRM's, Gradient-Blending's heads): the base's encoders,
    branches and label layout, its own heads; the base's state_dict keys stay under ``base.``."""

    def __init__(self, base: AVModel) -> None:
        super().__init__()
        self.base = base
        self.num_classes, self.background = base.num_classes, base.background
        self.per_segment, self.fusion_name = base.per_segment, base.fusion_name

    @property
    def backbone(self) -> AVModel:
        return self.base

    @property
    def audio_branch(self) -> nn.Module:
        return self.base.audio_branch

    @property
    def visual_branch(self) -> nn.Module:
        return self.base.visual_branch

    def encode(self, audio: Tensor, visual: Tensor) -> tuple[Tensor, Tensor]:
        return self.base.encode(audio, visual)


def flatten_samples(z: Tensor) -> Tensor:
    """(B, D) or (B, T, D) -> (N, D): per-segment models become N = B·T samples."""
    return z.reshape(-1, z.shape[-1])


def event_weights(labels: Tensor, background: int | None) -> Tensor:
    """1.0 for samples that take part in rebalancing, 0.0 for background segments, shape (N,).

    A weight mask (not boolean indexing) keeps shapes static: no host synchronisation, and a batch
    without any event segment gives zero weight everywhere instead of a division by zero.
    """
    y = labels.reshape(-1)
    if background is None:
        return torch.ones_like(y, dtype=torch.float32)
    return (y != background).float()


def fill_missing(z_audio: Tensor | None, z_visual: Tensor | None) -> tuple[Tensor, Tensor]:
    """Both representations of a model; the one a uni-modal model lacks (None) is zeros like the other."""
    if z_audio is None:
        return torch.zeros_like(z_visual), z_visual
    if z_visual is None:
        return z_audio, torch.zeros_like(z_audio)
    return z_audio, z_visual


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "AVModel",
    "ModelOutput",
    "WrappedModel",
    "count_parameters",
    "event_weights",
    "fill_missing",
    "flatten_samples",
]
