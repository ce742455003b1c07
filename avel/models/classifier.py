"""ResNet18 audio-visual clip classifiers (SPEC §4; the PMR / OGM-GE setting).

Audio: a 1-channel ResNet18 on the (1, 257, L) log-spectrogram, average-pooled to D. Visual: a ResNet18 on
each of K frames, average-pooled jointly over frames and space to D. D = 8·width (512 for the standard
ResNet18). Fusion: concat / sum / FiLM / gated (``avel.models.fusion``) or one modality alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avel.models.base import AVModel, ModelOutput
from avel.models.encoders import CGConvNet, ResNet18, load_imagenet
from avel.models.fusion import CLASSIFIER_FUSIONS, UniModal


class AudioEncoder(nn.Module):
    """(B, 1, F, L) → (B, D)."""

    def __init__(self, width: int):
        super().__init__()
        self.net = ResNet18(1, width)

    def forward(self, audio: Tensor) -> Tensor:
        return self.net(audio.contiguous(memory_format=torch.channels_last)).mean((-2, -1))


class VisualEncoder(nn.Module):
    """(B, K, 3, S, S) → (B, D): frames folded into the batch, pooled over frames and space together."""

    def __init__(self, width: int, pretrained: bool = False):
        super().__init__()
        self.net = ResNet18(3, width)
        if pretrained:
            load_imagenet(self.net)

    def forward(self, visual: Tensor) -> Tensor:
        b, k = visual.shape[:2]
        x = self.net(visual.flatten(0, 1).contiguous(memory_format=torch.channels_last))  # (BK, D, h, w)
        return x.view(b, k, *x.shape[1:]).mean((1, 3, 4))


class AVClassifier(AVModel):
    """Two ResNet18 encoders and a fusion head; ``modality`` 'audio' / 'visual' keeps one encoder only."""

    def __init__(
        self,
        fusion: str,
        *,
        num_classes: int,
        modality: str = "both",
        width: int = 64,
        pretrained: bool = False,
    ):
        super().__init__()
        self.num_classes, self.background, self.modality = num_classes, None, modality
        self.fusion_name = fusion if modality == "both" else modality
        audio, visual, d = self.make_encoders(width, pretrained)
        self.z_dim = d
        self.audio_branch = audio if modality in ("both", "audio") else nn.Identity()
        self.visual_branch = visual if modality in ("both", "visual") else nn.Identity()
        head = (
            CLASSIFIER_FUSIONS[fusion](d, num_classes)
            if modality == "both"
            else UniModal(d, num_classes, modality)
        )
        self.head = head
        self.splits_logits = bool(head.splits)

    def make_encoders(self, width: int, pretrained: bool) -> tuple[nn.Module, nn.Module, int]:
        """(first-slot encoder, second-slot encoder, representation width D)."""
        return AudioEncoder(width), VisualEncoder(width, pretrained), 8 * width

    def encode(self, audio: Tensor, visual: Tensor) -> tuple[Tensor, Tensor]:
        z_a = self.audio_branch(audio) if self.modality != "visual" else None
        z_v = self.visual_branch(visual) if self.modality != "audio" else None
        ref = z_a if z_a is not None else z_v
        zeros = torch.zeros_like(ref)  # the missing modality of a uni-modal model
        return (z_a if z_a is not None else zeros), (z_v if z_v is not None else zeros)

    def fuse(self, z_audio: Tensor, z_visual: Tensor) -> ModelOutput:
        logits, la, lv = self.head(z_audio, z_visual)
        return ModelOutput(logits, z_audio, z_visual, la, lv)


class CGClassifier(AVClassifier):
    """The CG-MNIST classifier of PMR (Table 1): two 4-conv encoders (``CGConvNet``, D = 512), gray in the
    first (audio) slot and colored in the second (visual) slot, as the released code's ``fusion(g, c)``;
    any fusion of ``avel.models.fusion``. ``width`` and ``pretrained`` do not apply (ignored)."""

    def make_encoders(self, width: int, pretrained: bool) -> tuple[nn.Module, nn.Module, int]:
        return CGConvNet(1), CGConvNet(3), 512
