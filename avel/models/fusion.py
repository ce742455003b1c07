"""Fusions: the clip classifiers' heads on pooled a, v ∈ R^D (the OGM-GE / PMR code's fusions), and DMRN,
the AVEL localizer's residual fusion of the per-segment h^a_t, h^v_t.

Each classifier fusion returns ``(logits, logits_audio, logits_visual)``; the per-modality logits are
``None`` where the fusion does not split them (FiLM, gated), which is what OGM-GE needs to know.
``CLASSIFIER_FUSIONS`` maps a fusion name to its class.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

Split = tuple[Tensor, Tensor | None, Tensor | None]


class SumFusion(nn.Module):
    """fc_a(a) + fc_v(v): each head is that modality's logits."""

    splits = True

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.fc_a, self.fc_v = nn.Linear(dim, num_classes), nn.Linear(dim, num_classes)

    def forward(self, a: Tensor, v: Tensor) -> Split:
        la, lv = self.fc_a(a), self.fc_v(v)
        return la + lv, la, lv


class MeanFusion(nn.Module):
    """(fc_a(a) + fc_v(v)) / 2: the late head of the released MMTM model (two uni-modal heads averaged)."""

    splits = True

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.fc_a, self.fc_v = nn.Linear(dim, num_classes), nn.Linear(dim, num_classes)

    def forward(self, a: Tensor, v: Tensor) -> Split:
        la, lv = self.fc_a(a) / 2, self.fc_v(v) / 2
        return la + lv, la, lv


class ConcatFusion(nn.Module):
    """fc([a; v]); split exactly: W[:, :D] a + b/2 and W[:, D:] v + b/2 sum to the fused logits."""

    splits = True

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.dim, self.fc = dim, nn.Linear(2 * dim, num_classes)

    def forward(self, a: Tensor, v: Tensor) -> Split:
        w, b = self.fc.weight, self.fc.bias
        la = a @ w[:, : self.dim].T + b / 2
        lv = v @ w[:, self.dim :].T + b / 2
        return la + lv, la, lv


class FiLMFusion(nn.Module):
    """Audio conditions vision: [γ, β] = Linear(D, 2D)(a); out = fc(γ ⊙ v + β)."""

    splits = False

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.film, self.fc = nn.Linear(dim, 2 * dim), nn.Linear(dim, num_classes)

    def forward(self, a: Tensor, v: Tensor) -> Split:
        gamma, beta = self.film(a).chunk(2, dim=-1)
        return self.fc(gamma * v + beta), None, None


class GatedFusion(nn.Module):
    """out = fc(σ(fc_a(a)) ⊙ fc_v(v)), fc_a, fc_v: D → D."""

    splits = False

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.fc_a, self.fc_v = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, a: Tensor, v: Tensor) -> Split:
        return self.fc(torch.sigmoid(self.fc_a(a)) * self.fc_v(v)), None, None


class UniModal(nn.Module):
    """A linear classifier on one modality (the uni-modal baselines)."""

    splits = False

    def __init__(self, dim: int, num_classes: int, modality: str):
        super().__init__()
        self.modality, self.fc = modality, nn.Linear(dim, num_classes)

    def forward(self, a: Tensor, v: Tensor) -> Split:
        return self.fc(a if self.modality == "audio" else v), None, None


class DMRN(nn.Module):
    """One dual multimodal residual block (DMRN, Tian et al. 2018).

    m = (U_v h^v + U_a h^a)/2; h^v' = tanh(h^a + m), h^a' = tanh(h^v + m); out = (h^v' + h^a')/2.
    """

    def __init__(self, dim: int = 256):
        super().__init__()
        self.U_v = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, dim))
        self.U_a = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, dim))

    def forward(self, h_a: Tensor, h_v: Tensor) -> Tensor:
        m = (self.U_v(h_v) + self.U_a(h_a)) / 2
        h_v2 = torch.tanh(h_a + m)  # the cross-over of the reference: each adds the other's residual
        h_a2 = torch.tanh(h_v + m)
        return (h_v2 + h_a2) / 2


CLASSIFIER_FUSIONS: dict[str, type[nn.Module]] = {
    "concat": ConcatFusion,
    "sum": SumFusion,
    "film": FiLMFusion,
    "gated": GatedFusion,
}
