"""Uni-modal heads that several balancers add to a model: h_a(z^a), h_v(z^v), linear, on the
representations before fusion (MMPareto's ``head_audio`` / ``head_video``, UME's uni-modal classifiers).

``UniHeadsModel`` keeps the base model's encoders and fusion; its output's ``logits_audio`` /
``logits_visual`` are the heads' logits (not a split of the fused logits). ``predict="fused"``: the prediction
is the base model's fused logits (MMPareto); ``predict="heads"``: the sum h_a(z^a) + h_v(z^v) (UME's
ensemble; the base model's fusion layers stay in the model, unused).
"""

from __future__ import annotations

from torch import Tensor, nn

from avel.models.base import AVModel, ModelOutput, WrappedModel
from avel.rules import check, one_of

PREDICT = ("fused", "heads")


def linear_head(dim: int | None, num_classes: int) -> nn.Module:
    """A linear classifier D -> C; lazy (D from the first batch) when the width is not known."""
    return nn.Linear(dim, num_classes) if dim else nn.LazyLinear(num_classes)


class UniHeadsModel(WrappedModel):
    """A base model plus a linear head on each modality's representation."""

    def __init__(self, base: AVModel, predict: str = "fused", dim: int | None = None) -> None:
        check("uni-modal heads predict", predict, one_of(*PREDICT))
        super().__init__(base)
        self.predict = predict
        self.z_dim = dim = dim or base.z_dim
        self.head_audio = linear_head(dim, base.num_classes)  # h_a
        self.head_visual = linear_head(dim, base.num_classes)  # h_v
        self.splits_logits = True

    def heads(self, z_audio: Tensor, z_visual: Tensor) -> tuple[ModelOutput, Tensor, Tensor]:
        """(the base model's fused output, h_a(z^a), h_v(z^v))."""
        return self.base.fuse(z_audio, z_visual), self.head_audio(z_audio), self.head_visual(z_visual)

    def fuse(self, z_audio: Tensor, z_visual: Tensor) -> ModelOutput:
        logits_a, logits_v = self.head_audio(z_audio), self.head_visual(z_visual)
        if self.predict == "heads":  # the base's fusion is not run (its layers get no gradient)
            return ModelOutput(logits_a + logits_v, z_audio, z_visual, logits_a, logits_v)
        fused = self.base.fuse(z_audio, z_visual)
        return ModelOutput(fused.logits, z_audio, z_visual, logits_a, logits_v, fused.aux_logits)


__all__ = ["UniHeadsModel", "linear_head"]
