"""Tiny real torch models shared by the balancer tests: concat fusion whose logits split per modality."""

from __future__ import annotations

from torch import nn

from avel.models.base import AVModel, ModelOutput


class ConcatModel(AVModel):
    """Linear encoders (or small conv encoders), concat fusion with split logits (bias / 2 each).

    Inputs (B, da) and (B, dv), or (B, 1, 6, 6) and (B, 3, 6, 6) with ``conv``; per-segment (AVEL-like)
    when a ``background`` class is given.
    """

    splits_logits = True
    fusion_name = "concat"

    def __init__(
        self,
        d: int = 4,
        c: int = 3,
        background: int | None = None,
        conv: bool = False,
        da: int = 5,
        dv: int = 6,
    ):
        super().__init__()
        self.num_classes, self.background, self.d = c, background, d
        self.per_segment = background is not None
        self.z_dim = d
        if conv:
            self.audio_branch = nn.Sequential(
                nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, d)
            )
            self.visual_branch = nn.Sequential(
                nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, d)
            )
        else:
            self.audio_branch, self.visual_branch = nn.Linear(da, d), nn.Linear(dv, d)
        self.fc = nn.Linear(2 * d, c)

    def encode(self, audio, visual):
        return self.audio_branch(audio), self.visual_branch(visual)

    def fuse(self, z_audio, z_visual):
        w, b = self.fc.weight, self.fc.bias
        la = z_audio @ w[:, : self.d].T + b / 2
        lv = z_visual @ w[:, self.d :].T + b / 2
        return ModelOutput(la + lv, z_audio, z_visual, la, lv)
