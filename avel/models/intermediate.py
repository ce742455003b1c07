"""Intermediate fusions that exchange information inside the encoders: MMTM and CentralNet (PMR Table 3).

Both run two *staged* encoders side by side. A staged encoder (``StagedEncoder``) folds its input into a
batch of maps (B·K, C, ...) (K frames per sample, K = 1 for a spectrogram or an image), runs ``stages()``
in order and pools the last map to (B, D). The ResNet18 pair has four stages (stem + layer1, layer2,
layer3, layer4); any encoder with the same four members (e.g. a small conv encoder) works too.

- MMTM (Joze et al., CVPR 2020, §3): after chosen stages, squeeze each stream (global average over frames
  and space), a joint bottleneck FC with ReLU, one excitation FC per stream, gates that rescale each
  stream's channels. The streams stay uni-modal maps, so PMR reads their pooled outputs.
- CentralNet (Vielzeuf et al., ECCV-W 2018, §3): a central branch next to the two streams; at each fusion
  level, h_C^{i+1} = f_C^i(α_C^i h_C^i + α_A^i h_A^i + α_V^i h_V^i) with learned scalars α and central layers
  f_C of the same form as the streams' next stage; the streams themselves are not changed.
"""

from __future__ import annotations

import copy
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avel.rules import check, one_of

MMTM_GATES = {"paper": 2.0, "code": 1.0}  # E = 2σ(·) in the paper, σ(·) in the released code


class StagedEncoder(Protocol):
    stage_channels: tuple[int, ...]

    def fold(self, x: Tensor) -> Tensor: ...  # model input -> (B·K, C, ...) maps
    def stages(self) -> list[nn.Module]: ...
    def pool(self, x: Tensor, batch: int) -> Tensor: ...  # last (B·K, C, ...) map -> (B, D)


def squeeze(x: Tensor, batch: int) -> Tensor:
    """(B·K, C, ...) -> (B, C): the mean over frames and every spatial position (MMTM Eq. 1)."""
    return x.unflatten(0, (batch, -1)).transpose(1, 2).flatten(2).mean(-1)


def excite(x: Tensor, gate: Tensor, batch: int) -> Tensor:
    """Scale each channel of (B·K, C, ...) by its sample's gate (B, C), the same for every frame."""
    shape = (batch, 1, gate.shape[1]) + (1,) * (x.dim() - 2)
    return (x.unflatten(0, (batch, -1)) * gate.view(shape).to(x.dtype)).flatten(0, 1)


class MMTM(nn.Module):
    """One multimodal transfer module between an audio map (C_A channels) and a visual map (C_V).

    Z = ReLU(W[S_A, S_V] + b) (Eq. 2; ReLU as in the released code), E_A = W_A Z + b_A, E_V = W_V Z + b_V
    (Eq. 3), Ã = g σ(E_A) ⊙ A, Ṽ = g σ(E_V) ⊙ V (Eq. 4; g = 2 in the paper, 1 in the released code).
    Bottleneck width C_Z = 2(C_A + C_V)/ratio with ratio 4, as the released code computes it.
    """

    def __init__(self, audio_channels: int, visual_channels: int, ratio: int = 4, gate: str = "paper"):
        super().__init__()
        check("mmtm_gate", gate, one_of(*MMTM_GATES))
        joint = audio_channels + visual_channels
        bottleneck = int(2 * joint / ratio)
        self.gate_scale = MMTM_GATES[gate]
        self.fc_squeeze = nn.Linear(joint, bottleneck)
        self.fc_audio = nn.Linear(bottleneck, audio_channels)
        self.fc_visual = nn.Linear(bottleneck, visual_channels)

    def gates(self, s_audio: Tensor, s_visual: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C_A), (B, C_V) squeezed descriptors -> the two channel gates."""
        z = F.relu(self.fc_squeeze(torch.cat([s_audio, s_visual], dim=1)))  # Eq. 2
        g = self.gate_scale
        return g * torch.sigmoid(self.fc_audio(z)), g * torch.sigmoid(self.fc_visual(z))  # Eqs. 3-4

    def forward(self, audio: Tensor, visual: Tensor, batch: int) -> tuple[Tensor, Tensor]:
        g_a, g_v = self.gates(squeeze(audio, batch).float(), squeeze(visual, batch).float())
        override = self.__dict__.get("gate_override")  # a balancer's edit of the gates (Greedy), or None
        if override is not None:
            g_a, g_v = override(self, g_a, g_v)
        return excite(audio, g_a, batch), excite(visual, g_v, batch)


class CentralSum(nn.Module):
    """α_C h_C + α_A h_A + α_V h_V with learned scalars (CentralNet Eq. 1); α start at 1.

    ``first``: the first fusion level has no central input yet (α_A h_A + α_V h_V).
    """

    def __init__(self, first: bool = False):
        super().__init__()
        self.alpha_audio = nn.Parameter(torch.ones(()))
        self.alpha_visual = nn.Parameter(torch.ones(()))
        self.alpha_central = None if first else nn.Parameter(torch.ones(()))

    def forward(self, h_audio: Tensor, h_visual: Tensor, h_central: Tensor | None = None) -> Tensor:
        out = self.alpha_audio * h_audio + self.alpha_visual * h_visual  # Eq. 1
        if self.alpha_central is not None:
            out = out + self.alpha_central * h_central
        return out


def per_sample_map(x: Tensor, batch: int, size: tuple[int, ...]) -> Tensor:
    """(B·K, C, ...) -> (B, C, *size): frames averaged, space average-pooled to the central grid ``size``."""
    x = x.unflatten(0, (batch, -1)).mean(1)
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.adaptive_avg_pool2d(x, size) if len(size) == 2 else F.adaptive_avg_pool1d(x, size)


def central_grid(h_audio: Tensor, h_visual: Tensor) -> tuple[int, ...]:
    """The central branch's spatial size at a level: the smaller of the two streams' sizes per axis."""
    return tuple(min(a, v) for a, v in zip(h_audio.shape[2:], h_visual.shape[2:], strict=True))


def fresh_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with newly initialised parameters (the central layers' own weights)."""
    clone = copy.deepcopy(module)
    for m in clone.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return clone


def check_points(points: tuple[int, ...], stages: int) -> tuple[int, ...]:
    points = tuple(sorted({int(p) for p in points}))
    if not points or points[0] < 0 or points[-1] >= stages:
        raise ValueError(f"fusion points must be stage indices in [0, {stages}), got {list(points)}")
    return points


class MMTMStreams(nn.Module):
    """Two staged encoders with an MMTM after each stage in ``points`` (default: the last three)."""

    def __init__(
        self,
        audio: StagedEncoder,
        visual: StagedEncoder,
        points: tuple[int, ...] = (1, 2, 3),
        gate: str = "paper",
        ratio: int = 4,
    ):
        super().__init__()
        self.points = check_points(points, len(audio.stage_channels))
        ca, cv = audio.stage_channels, visual.stage_channels
        self.mmtm = nn.ModuleDict({str(i): MMTM(ca[i], cv[i], ratio, gate) for i in self.points})

    def forward(
        self, audio: StagedEncoder, visual: StagedEncoder, x_audio: Tensor, x_visual: Tensor
    ) -> tuple[Tensor, Tensor]:
        batch = x_audio.shape[0]
        a, v = audio.fold(x_audio), visual.fold(x_visual)
        for i, (stage_a, stage_v) in enumerate(zip(audio.stages(), visual.stages(), strict=True)):
            a, v = stage_a(a), stage_v(v)
            if i in self.points:
                a, v = self.mmtm[str(i)](a, v, batch)
        return audio.pool(a, batch), visual.pool(v, batch)


class CentralBranch(nn.Module):
    """CentralNet's central branch over the stages in ``points`` of two staged encoders.

    At the first point p_0: h_C = α_A h_A + α_V h_V. Between points p_j and p_{j+1}: the central layers
    f_C are fresh copies of the visual encoder's stages p_j+1 .. p_{j+1}, and
    h_C ← α_C f_C(h_C) + α_A h_A + α_V h_V. The last level is taken on the D-wide representations,
    ``final_sum(z_a, z_v, c)`` with c the globally averaged last central map (projected by a linear map to
    D where the streams' ``pool`` ends in one, as the CG-MNIST encoder's 64 → 512): for the ResNet18 pair,
    whose ``pool`` is a global average, this equals pooling the summed maps. Stream maps are
    frame-averaged and average-pooled to the smaller of their two grids.
    """

    def __init__(
        self, audio: StagedEncoder, visual: StagedEncoder, dim: int, points: tuple[int, ...] = (1, 2, 3)
    ):
        super().__init__()
        self.points = check_points(points, len(audio.stage_channels))
        last = audio.stage_channels[self.points[-1]]
        self.project = nn.Identity() if last == dim else nn.Linear(last, dim)  # pooled h_C -> D
        if tuple(audio.stage_channels) != tuple(visual.stage_channels):
            raise ValueError("CentralNet needs streams with the same channels per stage (a weighted sum)")
        stages = visual.stages()
        self.sums = nn.ModuleList(CentralSum(first=j == 0) for j in range(len(self.points) - 1))
        self.final_sum = CentralSum(first=len(self.points) == 1)  # the last level, on pooled vectors
        self.layers = nn.ModuleList(
            nn.Sequential(*(fresh_copy(stages[k]) for k in range(p + 1, q + 1)))
            for p, q in zip(self.points[:-1], self.points[1:], strict=True)
        )

    def forward(
        self, audio: StagedEncoder, visual: StagedEncoder, x_audio: Tensor, x_visual: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(z_audio, z_visual, h_C before the last fusion level pooled to (B, D), or None for one point)."""
        batch = x_audio.shape[0]
        a, v = audio.fold(x_audio), visual.fold(x_visual)
        central, level = None, 0
        for i, (stage_a, stage_v) in enumerate(zip(audio.stages(), visual.stages(), strict=True)):
            a, v = stage_a(a), stage_v(v)
            if i not in self.points:
                continue
            if central is not None:  # f_C^j(h_C) reaches this level's grid
                central = self.layers[level - 1](central)
            if level < len(self.sums):
                size = central_grid(a, v)
                h_a, h_v = per_sample_map(a, batch, size), per_sample_map(v, batch, size)
                if central is not None and tuple(central.shape[2:]) != size:
                    central = per_sample_map(central, batch, size)
                central = self.sums[level](h_a, h_v, central)  # Eq. 1
            level += 1
        pooled = None if central is None else self.project(central.flatten(2).mean(-1))
        return audio.pool(a, batch), visual.pool(v, batch), pooled


__all__ = [
    "MMTM",
    "MMTM_GATES",
    "CentralBranch",
    "CentralSum",
    "MMTMStreams",
    "StagedEncoder",
    "excite",
    "fresh_copy",
    "squeeze",
]
