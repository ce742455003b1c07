"""Temporal blocks of the AVEL localizer (Tian et al., ECCV 2018): the audio-guided visual attention that
pools each segment's visual map into one vector, and the bi-LSTM that runs over the segments of a modality.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AudioGuidedAttention(nn.Module):
    """Audio-guided visual attention (Tian et al. 2018):
    α_t = softmax_i w_h^T tanh(U_v v'_{t,i} + (U_g a'_t)_i); c_t = Σ_i α_{t,i} v_{t,i}."""

    def __init__(self, audio_dim: int, visual_dim: int, regions: int, hidden: int = 512):
        super().__init__()
        self.W_v = nn.Linear(visual_dim, hidden)  # v' = ReLU(W_v v_t)
        self.W_a = nn.Linear(audio_dim, hidden)  # a' = ReLU(W_a a_t)
        self.U_v = nn.Linear(hidden, regions, bias=False)
        self.U_g = nn.Linear(hidden, regions, bias=False)
        self.w_h = nn.Linear(regions, 1, bias=False)

    def forward(self, a: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """a (B, T, Da), v (B, T, R, C) → c (B, T, C), α (B, T, R)."""
        v_ = F.relu(self.W_v(v))
        a_ = F.relu(self.W_a(a))
        e = self.U_v(v_) + self.U_g(a_).unsqueeze(-1)  # e_{t,i,j}: the audio term indexed by region i
        alpha = torch.softmax(self.w_h(torch.tanh(e)).squeeze(-1), dim=-1)  # z_{t,i} → α over regions
        c = torch.bmm(alpha.flatten(0, 1).unsqueeze(1), v.flatten(0, 1))  # (BT, 1, C)
        return c.view(*v.shape[:2], v.shape[-1]), alpha  # c_t = Σ_i α_{t,i} v_{t,i} of the raw map


def bilstm(input_dim: int, hidden: int) -> nn.LSTM:
    """One bidirectional LSTM over the T segments, (B, T, input_dim) → (B, T, 2·hidden)."""
    return nn.LSTM(input_dim, hidden, batch_first=True, bidirectional=True)
