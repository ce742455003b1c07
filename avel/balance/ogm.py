"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022), and
OGM, its TPAMI 2024 form (Wei, Hu, Du, Wen) as its released code runs it: BML_TPAMI2024's
``scripts/train_ogm.sh`` passes no ``--modulation``, so the code's default OGM_GE runs, noise included, after
a warm-up of 6 epochs (``epoch <= 5``); ``ge=False`` is the noise-free variant the paper describes.

Per batch, each modality's score is s^u = Σ_i softmax(out_u)_i[y_i] from the split logits of the fused
classifier; ρ_v = s^v/s^a, ρ_a = 1/ρ_v; the dominant modality (ρ_dom > 1) gets k = 1 − tanh(α ρ_dom), the
other 1. After backward, inside the modulation window, the dominant branch's gradients are multiplied
by k; OGM-GE then adds Gaussian noise N(0, std(g)) to both branches' modulated gradients.

Deviations from the released code (github.com/GeWu-Lab/OGM-GE_CVPR2022):
- the modulated parameters are a branch's conv weights (4-D), as in the code; a branch without conv weights
  (AVEL on precomputed features: linear layers and LSTMs) has all its parameters modulated instead;
- the noise std is the std of the gradient before scaling (as the code: ``g*k + N(0, std(g))``), drawn from
  a seeded ``torch.Generator`` on the gradients' device; the code's ``+1e-8`` on the std is kept;
- on AVEL, scores sum over event segments only (background segments have weight 0);
- ρ and k stay device tensors (no ``.item()`` per step); the window is inclusive, ``start <= epoch <= end``
  (the code's test), and OGM's warm-up skips epochs ``< warmup``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from avel.balance.base import (
    NON_NEGATIVE,
    UNSET,
    WINDOW,
    BalancerHooks,
    DeviceGenerator,
    StepResult,
    option,
    output_loss,
)
from avel.collectives import all_reduce_sum
from avel.models.base import AVModel, ModelOutput, event_weights

if TYPE_CHECKING:
    from avel.data.splits import Batch

EPS = 1e-8


def fusion_name(model: AVModel) -> str:
    """A readable name of the model's fusion for error messages."""
    name = getattr(model, "fusion_name", None)
    if isinstance(name, str) and name:
        return name
    fusion = getattr(model, "fusion", None)
    if isinstance(fusion, str):
        return fusion
    if isinstance(fusion, nn.Module):
        return type(fusion).__name__.lower()
    return "this"


def split_logits_reason(method: str, model: AVModel) -> str | None:
    """None when the fusion splits its logits (or cannot be told up front), else why ``method`` cannot run."""
    if getattr(model, "splits_logits", None) is False:
        name = fusion_name(model)
        return f"{method} needs split logits (concat or sum fusion); {name} fusion does not split them"
    return None


def modality_scores(
    out: ModelOutput, labels: Tensor, background: int | None, method: str
) -> tuple[Tensor, Tensor]:
    """(s^a, s^v): Σ_i w_i softmax(out_u)_i[y_i] over the participating samples (of every rank)."""
    if out.logits_audio is None or out.logits_visual is None:
        raise ValueError(
            f"{method} needs split logits (concat or sum fusion); the model's fusion returned none"
        )
    y = labels.reshape(-1)
    w = event_weights(y, background)
    y = torch.where(w > 0, y, 0)
    scores = []
    for logits in (out.logits_audio, out.logits_visual):
        p = torch.softmax(logits.detach().reshape(-1, logits.shape[-1]).float(), dim=-1)
        scores.append((p.gather(1, y[:, None]).squeeze(1) * w).sum())
    s_a, s_v = all_reduce_sum(torch.stack(scores))  # the global batch's scores under several processes
    return s_a, s_v


def ogm_coefficients(s_a: Tensor, s_v: Tensor, alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    """(k_a, k_v, ρ_a): k = 1 − tanh(α ρ_dom) for the dominant modality (ρ_dom > 1), 1 for the other.

    ρ_a = s^a / s^v is returned as the logged ``score_ratio`` (same direction as PMR's ρ).
    """
    rho_v = torch.where(s_a > 0, s_v / s_a.clamp_min(EPS), torch.ones_like(s_a))  # ρ_v = s^v / s^a
    rho_a = 1.0 / rho_v.clamp_min(EPS)
    one = torch.ones_like(rho_v)
    k_a = torch.where(rho_a > 1, 1.0 - torch.tanh(alpha * rho_a), one)  # k^u = 1 − tanh(α ρ^u)
    k_v = torch.where(rho_v > 1, 1.0 - torch.tanh(alpha * rho_v), one)
    return k_a, k_v, rho_a


def modulated_parameters(model: AVModel, modality: str) -> list[nn.Parameter]:
    """A branch's conv weights (4-D), or all its parameters where it has no conv (feature-based AVEL)."""
    params = [p for _, p in model.branch_parameters(modality)]
    conv = [p for p in params if p.dim() == 4]
    return conv or params


def modulate_gradients(params: list[nn.Parameter], k: Tensor, noise: torch.Generator | None) -> None:
    """g ← g·k (+ N(0, std(g)) with the pre-scaling std when ``noise`` is a generator: GE)."""
    for p in params:
        g = p.grad
        if g is None:
            continue
        std = g.float().std() + 1e-8 if noise is not None and g.numel() > 1 else None
        g.mul_(k.to(g.dtype))
        if std is not None:
            g.add_((torch.randn(g.shape, generator=noise, device=g.device) * std).to(g.dtype))


@dataclass(frozen=True)
class OGMOptions:  # OGM-GE's and OGM's, one table: [ogm]
    alpha: float = option(0.1, "α of k = 1 − tanh(α ρ)", NON_NEGATIVE)
    window: list[int] = option([0, 50], "epochs [start, end] of modulation, inclusive", WINDOW)
    ge: bool = option(True, "GE noise (on for ogm-ge and ogm, as BML's script runs it; false: noise-free)")
    warmup: int = option(
        UNSET,
        "epochs without modulation; -1: the method's own (0 for ogm-ge, 6 for ogm)",
        (lambda v: v >= 0 or v == UNSET, ">= 0, or -1 for the method's own"),
    )


class OGMGE(BalancerHooks):
    """OGM-GE: gradient modulation of the dominant branch plus Gaussian noise (GE)."""

    name = "ogm-ge"
    weighs_event_segments = True
    runs_forward = True
    method = "OGM-GE"
    Options = OGMOptions
    table = "ogm"
    own_warmup = 0  # the warm-up when the option is left at -1

    def __init__(self, options: OGMOptions | None = None, *, seed: int = 0, **values: Any) -> None:
        super().__init__(options, seed=seed, **values)
        o = self.options
        self.alpha, self.ge = float(o.alpha), bool(o.ge)
        self.warmup = self.own_warmup if o.warmup == UNSET else int(o.warmup)
        self.window = (int(o.window[0]), int(o.window[1]))
        self.rng = DeviceGenerator(seed)
        self.epoch = 0

    def applies_to(self, model: AVModel) -> str | None:
        return split_logits_reason(self.method, model)

    @property
    def modulating(self) -> bool:
        return self.window[0] <= self.epoch <= self.window[1] and self.epoch >= self.warmup

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        out = model(batch.audio, batch.visual)
        loss = output_loss(out, batch.labels)
        s_a, s_v = modality_scores(out, batch.labels, model.background, self.method)
        k_a, k_v, rho_a = ogm_coefficients(s_a, s_v, self.alpha)
        logs = {"loss_ce": loss.detach(), "coef_audio": k_a, "coef_visual": k_v, "score_ratio": rho_a}
        return StepResult(loss, out, logs)

    def before_optimizer_step(self, model: AVModel, result: StepResult) -> None:
        if not self.modulating:
            return
        for modality, key in (("audio", "coef_audio"), ("visual", "coef_visual")):
            params = modulated_parameters(model, modality)
            noise = self.rng.get(params[0].device) if self.ge and params else None
            modulate_gradients(params, result.logs[key], noise)


class OGM(OGMGE):
    """OGM (TPAMI 2024) as BML's script runs it: OGM-GE's modulation and noise after ``warmup`` epochs."""

    name = "ogm"
    method = "OGM"
    own_warmup = 6  # the released code's `epoch <= 5`
    grid_rows = ()  # not in PMR's Table 2


__all__ = [
    "OGM",
    "OGMGE",
    "OGMOptions",
    "modality_scores",
    "modulate_gradients",
    "modulated_parameters",
    "ogm_coefficients",
]
