"""The AVEL localizer of Tian et al. (ECCV 2018), wired exactly as the reference: an assembly of the blocks of
``encoders`` (e2e), ``temporal`` (attention, bi-LSTMs) and ``fusion`` (DMRN) with the concat head.

Per segment t: audio vector a_t and visual map v_t (R regions × C) → audio-guided visual attention → one
bi-LSTM per modality (h^a_t, h^v_t ∈ R^256, the representations PMR and the other balancers read) →
``concat`` (A+V-att) or ``dmrn`` fusion → logits over the event classes + background, per segment.

Inputs come precomputed (``input_mode="features"``: VGGish / VGG19 pool5 on AVE) or from ResNet18 encoders
trained end to end on each second of log-spectrogram and the segment's frames (``input_mode="e2e"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avel.models.base import AVModel, ModelOutput, fill_missing
from avel.models.encoders import AudioEncoder, FeatureMap, VisualEncoder
from avel.models.fusion import DMRN
from avel.models.temporal import AudioGuidedAttention, bilstm


class AVELocalizer(AVModel):
    """AVEL (Tian et al. 2018): attention + bi-LSTMs + concat / DMRN, or a uni-modal baseline."""

    per_segment = True

    def __init__(
        self,
        fusion: str,
        *,
        input_mode: str,
        num_classes: int,
        audio_dim: int,
        visual_dim: int,
        regions: int,
        modality: str = "both",
        width: int = 64,
        pretrained: bool = False,
        hidden: int = 128,
        audio_pool: str = "mean",
    ):
        super().__init__()
        self.num_classes, self.background = num_classes, num_classes - 1
        self.modality, self.input_mode = modality, input_mode
        self.fusion_name = fusion if modality == "both" else modality
        self.splits_logits = self.fusion_name == "concat"
        self.z_dim = d = 2 * hidden
        if input_mode == "e2e":
            audio_dim = visual_dim = 8 * width
            # visual only: the unused audio encoder is still built (as before the audio pool existed), with
            # the pool that draws no parameters, so the visual encoder's initialisation never depends on it
            a_enc: nn.Module = AudioEncoder(width, audio_pool if modality != "visual" else "mean")
            v_enc: nn.Module = VisualEncoder(width, pretrained)
        else:
            a_enc, v_enc = nn.Identity(), FeatureMap()
        self.audio_branch, self.visual_branch = nn.ModuleDict(), nn.ModuleDict()
        if modality in ("both", "audio"):
            self.audio_branch["encoder"] = a_enc
            self.audio_branch["lstm"] = bilstm(audio_dim, hidden)
        if modality in ("both", "visual"):
            self.visual_branch["encoder"] = v_enc
            self.visual_branch["lstm"] = bilstm(visual_dim, hidden)
        if modality == "both":
            self.visual_branch["attention"] = AudioGuidedAttention(audio_dim, visual_dim, regions)
        if self.fusion_name == "concat":
            self.L1, self.L2 = nn.Linear(2 * d, 64), nn.Linear(64, num_classes)
        elif self.fusion_name == "dmrn":
            self.dmrn, self.L2 = DMRN(d), nn.Linear(d, num_classes)
        else:
            self.fc = nn.Linear(d, num_classes)
        self.last_attention: Tensor | None = None

    def segment_features(self, audio: Tensor, visual: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """The encoders' outputs: a_t (B, T, Da) and the visual map (B, T, h, w, C) (None where absent)."""
        a = self.audio_branch["encoder"](audio) if "encoder" in self.audio_branch else None
        v = self.visual_branch["encoder"](visual) if "encoder" in self.visual_branch else None
        return a, v

    def encode(self, audio: Tensor, visual: Tensor) -> tuple[Tensor, Tensor]:
        a, v = self.segment_features(audio, visual)
        h_a = self.audio_branch["lstm"](a)[0] if a is not None else None  # raw a_t into the LSTM
        h_v = None
        if v is not None:
            v = v.flatten(2, 3)  # (B, T, R, C)
            if a is not None:
                c, alpha = self.visual_branch["attention"](a, v)
            else:  # visual only: nothing guides the attention; average the regions
                c = v.mean(2)
                alpha = torch.full(v.shape[:3], 1.0 / v.shape[2], device=v.device, dtype=v.dtype)
            self.last_attention = alpha.detach()
            h_v = self.visual_branch["lstm"](c)[0]
        return fill_missing(h_a, h_v)

    def fuse(self, z_audio: Tensor, z_visual: Tensor) -> ModelOutput:
        if self.fusion_name == "concat":
            x = F.relu(torch.cat([z_audio, z_visual], -1))
            logits = self.L2(F.relu(self.L1(x)))  # y_t = L2(ReLU(L1(ReLU([h^a; h^v]))))
            return ModelOutput(logits, z_audio, z_visual, *self._split_logits(z_audio, z_visual))
        if self.fusion_name == "dmrn":
            return ModelOutput(self.L2(self.dmrn(z_audio, z_visual)), z_audio, z_visual)
        z = z_audio if self.modality == "audio" else z_visual
        return ModelOutput(self.fc(z), z_audio, z_visual)

    def _split_logits(self, z_audio: Tensor, z_visual: Tensor) -> tuple[Tensor, Tensor]:
        """Each modality's logits through its half of L1 (bias halved) and L2 (bias halved).

        L1's ReLU makes the fused logits non-additive, so this is the per-modality-halves approximation
        OGM-GE uses for AVEL concat: each half alone, as if the other modality's input were zero.
        """
        d = z_audio.shape[-1]
        w1, b1, w2, b2 = self.L1.weight, self.L1.bias, self.L2.weight, self.L2.bias
        la = F.linear(F.relu(F.linear(F.relu(z_audio), w1[:, :d], b1 / 2)), w2, b2 / 2)
        lv = F.linear(F.relu(F.linear(F.relu(z_visual), w1[:, d:], b1 / 2)), w2, b2 / 2)
        return la, lv

    @torch.no_grad()
    def reference_init(self) -> None:
        """AVE-ECCV18's initialisation: Xavier-uniform weights of the attention's five layers, L1 and L2 of
        the concat model (``att_Net.init_weights``), of L2 only for DMRN (``TBMRF_Net``); the rest keep
        PyTorch's defaults, as there."""
        if self.modality != "both":
            raise ValueError(
                "--init reference: the AVEL reference has no uni-modal model (use --init default)"
            )
        if self.fusion_name == "concat":
            att = self.visual_branch["attention"]
            for layer in (att.W_v, att.W_a, att.U_v, att.U_g, att.w_h, self.L1, self.L2):
                nn.init.xavier_uniform_(layer.weight)
        else:
            nn.init.xavier_uniform_(self.L2.weight)
