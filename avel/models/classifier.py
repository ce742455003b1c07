"""Audio-visual clip classifiers (the PMR / OGM-GE setting): an assembly of two encoders
(``avel.models.encoders``) and a fusion head (``avel.models.fusion``).

ResNet18: the audio encoder on the (1, 257, L) log-spectrogram, the visual encoder on K frames pooled over
frames and space, D = 8·width (512 for the standard ResNet18). CG-MNIST: PMR's 4-conv encoders, D = 512.
Fusion: concat / sum / FiLM / gated, or one modality alone, or an intermediate fusion inside the encoders,
MMTM / CentralNet (``avel.models.intermediate``).
"""

from __future__ import annotations

from torch import Tensor, nn

from avel.models import threads
from avel.models.base import AVModel, ModelOutput, fill_missing
from avel.models.encoders import AudioEncoder, CGConvNet, VisualEncoder
from avel.models.fusion import CLASSIFIER_FUSIONS, ConcatFusion, MeanFusion, UniModal
from avel.models.intermediate import CentralBranch, MMTMStreams, StagedEncoder
from avel.rules import check, one_of


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
        compress: bool = False,
    ):
        super().__init__()
        self.num_classes, self.background, self.modality = num_classes, None, modality
        self.compress = compress  # ResNet18 pair: the released backbone's compress / recover block
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
        audio = AudioEncoder(width, compress=self.compress)
        return audio, VisualEncoder(width, pretrained, pooled=True, compress=self.compress), 8 * width

    def encode(self, audio: Tensor, visual: Tensor) -> tuple[Tensor, Tensor]:
        if self.modality == "both" and threads.active():  # encoder_threads = 2: the same numbers
            return threads.encode_pair(self.audio_branch, self.visual_branch, audio, visual)
        z_a = self.audio_branch(audio) if self.modality != "visual" else None
        z_v = self.visual_branch(visual) if self.modality != "audio" else None
        return fill_missing(z_a, z_v)

    def fuse(self, z_audio: Tensor, z_visual: Tensor) -> ModelOutput:
        logits, la, lv = self.head(z_audio, z_visual)
        return ModelOutput(logits, z_audio, z_visual, la, lv)


class CGClassifier(AVClassifier):
    """The CG-MNIST classifier of PMR (Table 1): two 4-conv encoders (``CGConvNet``, D = 512), gray in the
    first (audio) slot and colored in the second (visual) slot, as the released code's ``fusion(g, c)``;
    any fusion of ``avel.models.fusion``. ``width`` and ``pretrained`` do not apply (ignored). ``stem``:
    the encoders' first BN and convolution as modules (``"layers"``) or as one convolution (``"fused"``)."""

    def __init__(self, fusion: str, *, stem: str = "layers", **kwargs):
        self.stem = stem
        super().__init__(fusion, **kwargs)

    def make_encoders(self, width: int, pretrained: bool) -> tuple[nn.Module, nn.Module, int]:
        if self.compress:
            raise ValueError("compress applies to the resnet18 family, not cgmnist")
        return CGConvNet(1, stem=self.stem), CGConvNet(3, stem=self.stem), 512


MMTM_HEADS: dict[str, type[nn.Module]] = {"concat": ConcatFusion, "mean": MeanFusion}


class MMTMClassifier(AVModel):
    """Two staged encoders with MMTMs between their last stages, then a late head (PMR Table 3).

    ``encode`` runs the two streams interleaved (the MMTMs exchange information mid-encoder) and returns
    each stream's pooled output: the uni-modal representations PMR reads. ``fuse`` is the head:
    concatenation (``head="concat"``) or the released code's mean of two uni-modal heads (``"mean"``).
    """

    fusion_name = "mmtm"
    splits_logits = True

    def __init__(
        self,
        audio: StagedEncoder,
        visual: StagedEncoder,
        *,
        num_classes: int,
        dim: int,
        points: tuple[int, ...] = (1, 2, 3),
        gate: str = "paper",
        head: str = "concat",
    ):
        super().__init__()
        check("mmtm_head", head, one_of(*MMTM_HEADS))
        self.num_classes, self.background, self.z_dim = num_classes, None, dim
        self.audio_branch, self.visual_branch = audio, visual
        self.mmtm = MMTMStreams(audio, visual, points, gate)
        self.head = MMTM_HEADS[head](dim, num_classes)

    def encode(self, audio: Tensor, visual: Tensor) -> tuple[Tensor, Tensor]:
        return self.mmtm(self.audio_branch, self.visual_branch, audio, visual)

    def fuse(self, z_audio: Tensor, z_visual: Tensor) -> ModelOutput:
        logits, la, lv = self.head(z_audio, z_visual)
        return ModelOutput(logits, z_audio, z_visual, la, lv)


class CentralNetClassifier(AVModel):
    """Two staged encoders and CentralNet's central branch; the prediction is the central head's.

    ``encode`` returns the streams' pooled outputs (unchanged by the central branch: PMR reads them) and
    keeps the pooled central map of that forward pass for ``fuse``, which takes the last fusion level on
    pooled vectors: logits = fc_C(α_C c + α_A z^a + α_V z^v). With ``unimodal_loss`` (the paper's
    multi-task loss, CentralNet Eq. 2 with unit weights) the uni-modal heads fc_A(z^a), fc_V(z^v) are
    auxiliary logits that the balancers add to the task loss; they are never part of the prediction.
    """

    fusion_name = "centralnet"
    splits_logits = False

    def __init__(
        self,
        audio: StagedEncoder,
        visual: StagedEncoder,
        *,
        num_classes: int,
        dim: int,
        points: tuple[int, ...] = (1, 2, 3),
        unimodal_loss: bool = True,
    ):
        super().__init__()
        self.num_classes, self.background, self.z_dim = num_classes, None, dim
        self.audio_branch, self.visual_branch = audio, visual
        self.central = CentralBranch(audio, visual, dim, points)
        self.head = nn.Linear(dim, num_classes)
        self.head_audio, self.head_visual = nn.Linear(dim, num_classes), nn.Linear(dim, num_classes)
        self.unimodal_loss = unimodal_loss
        self.pooled_central: Tensor | None = None  # of the last ``encode``

    def encode(self, audio: Tensor, visual: Tensor) -> tuple[Tensor, Tensor]:
        z_a, z_v, self.pooled_central = self.central(self.audio_branch, self.visual_branch, audio, visual)
        return z_a, z_v

    def fuse(self, z_audio: Tensor, z_visual: Tensor) -> ModelOutput:
        c = self.pooled_central
        if c is not None and c.shape != z_audio.shape:
            raise RuntimeError("CentralNet: fuse() needs the encode() of the same batch (central branch)")
        logits = self.head(self.central.final_sum(z_audio, z_visual, c))  # CentralNet Eq. 1, last level
        aux = (self.head_audio(z_audio), self.head_visual(z_visual)) if self.unimodal_loss else ()
        return ModelOutput(logits, z_audio, z_visual, aux_logits=aux)
