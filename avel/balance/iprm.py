"""IPRM: instantaneous probe-and-rebalance (Yang, Wu, Jiang, IJCAI 2025).

``prepare_model`` wraps the model in ``IPRMModel``: the base model's encoders, unimodal heads h_a, h_v and a
fusion head h on the geodesic multimodal mixup (GMM) of the L2-normalised representations,
f(z̄^a, z̄^v, λ) = sin(λθ)/sin θ · z̄^a + sin((1−λ)θ)/sin θ · z̄^v, θ = arccos⟨z̄^a, z̄^v⟩. Its forward (eval,
checkpoints, predict) sums the three heads' logits at the weight ``lam``, a buffer of the model; the next
probe's weight is the buffer ``lam_next``.

Each step: the encoders run once; a probe pass without gradients on the detached features gives
P̄ = softmax(h(f(·, λ_t))), P^a, P^v, D^o = mean KL(P^o ‖ P̄), ω^a = D^v/(D^a + D^v), ω^v = 1 − ω^a; the
learning pass trains CE(h(f(·, ω^a))) + CE(h_a(z^a)) + CE(h_v(z^v)); then λ_{t+1} = α λ_t + (1 − α) ω^a_t.

``variant="code"`` (default) as the released code (github.com/njustkmg/IJCAI25-IPRM, ``main_av.py``) runs
it: λ_0 = 0.5 and the same update from the first step on (λ_1 = α·0.5 + (1 − α) ω^a_0); evaluation uses
the last probed weight λ_T. ``variant="slides"``: λ_1 = ω^a_0, evaluation at λ_{T+1}.

Notes: on AVEL the KL probe averages over event
segments only, the cross-entropies over all segments (the heads also predict background). The base
model's own fusion layers stay in the model, unused. ``logits_audio`` / ``logits_visual`` of the output
are the unimodal heads' logits (they are not a split of the summed logits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avel.balance.base import (
    UNIT,
    BalancerHooks,
    StepResult,
    one_of,
    option,
    task_loss,
)
from avel.collectives import all_reduce_sum
from avel.models.base import AVModel, ModelOutput, WrappedModel, event_weights, flatten_samples

if TYPE_CHECKING:
    from avel.data.splits import Batch

EPS = 1e-8


def geodesic_mixup(za_bar: Tensor, zv_bar: Tensor, lam: Tensor | float) -> Tensor:
    """Spherical interpolation of unit vectors: λ=1 gives z̄^a, λ=0 gives z̄^v (GMM of the slides).

    Computed in float32 (the 1e-7 clamp vanishes in bfloat16, which would give θ = 0 and a zero vector).
    """
    za_bar, zv_bar = za_bar.float(), zv_bar.float()
    cos = (za_bar * zv_bar).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7)
    theta = torch.arccos(cos)  # θ = arccos⟨z̄^a, z̄^v⟩
    sin_theta = torch.sin(theta) + EPS
    lam = torch.as_tensor(lam, dtype=za_bar.dtype, device=za_bar.device)
    return torch.sin(lam * theta) / sin_theta * za_bar + torch.sin((1 - lam) * theta) / sin_theta * zv_bar


def head(dim: int | None, num_classes: int) -> nn.Module:
    return nn.Linear(dim, num_classes) if dim else nn.LazyLinear(num_classes)


class IPRMModel(WrappedModel):
    """A base model with IPRM's heads; ``fuse`` sums h(f(z̄^a, z̄^v, λ)) + h_a(z^a) + h_v(z^v)."""

    def __init__(self, base: AVModel, dim: int | None = None) -> None:
        super().__init__(base)
        dim = dim or getattr(base, "z_dim", None)  # None: lazy heads take D from the first batch
        self.head_audio = head(dim, self.num_classes)  # h_a
        self.head_visual = head(dim, self.num_classes)  # h_v
        self.head_fusion = head(dim, self.num_classes)  # h
        self.register_buffer("lam", torch.tensor(0.5))  # λ of the forward (evaluation)
        self.register_buffer("lam_next", torch.tensor(0.5))  # λ_t of the next probe
        self.register_buffer("steps", torch.tensor(0))  # t
        self._register_load_state_dict_pre_hook(_lam_next_from_lam)

    def heads(self, z_audio: Tensor, z_visual: Tensor, lam: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
        """(h(f(z̄^a, z̄^v, λ)), h_a(z^a), h_v(z^v)) logits."""
        za_bar, zv_bar = F.normalize(z_audio, dim=-1), F.normalize(z_visual, dim=-1)
        fused = self.head_fusion(geodesic_mixup(za_bar, zv_bar, lam))
        return fused, self.head_audio(z_audio), self.head_visual(z_visual)

    def fuse(self, z_audio: Tensor, z_visual: Tensor) -> ModelOutput:
        fused, logits_a, logits_v = self.heads(z_audio, z_visual, self.lam)
        return ModelOutput(fused + logits_a + logits_v, z_audio, z_visual, logits_a, logits_v)

    @torch.no_grad()
    def update_lambda(self, omega_a: Tensor, alpha: float, variant: str = "code") -> None:
        """λ_{t+1} = α λ_t + (1 − α) ω^a_t ("slides": λ_1 = ω^a_0); ``lam`` becomes λ_t ("code": the last
        probed weight, as the released code evaluates) or λ_{t+1} ("slides")."""
        probed = self.lam_next.clone()
        omega_a = omega_a.to(probed.dtype)
        nxt = alpha * probed + (1 - alpha) * omega_a  # EMA of λ
        if variant == "slides":
            nxt = torch.where(self.steps == 0, omega_a, nxt)
        self.lam_next.copy_(nxt)
        self.lam.copy_(probed if variant == "code" else nxt)
        self.steps.add_(1)


def _lam_next_from_lam(state: dict, prefix: str, *args) -> None:
    """Checkpoints from before ``lam_next`` existed: their ``lam`` was the next probe's weight."""
    if prefix + "lam" in state and prefix + "lam_next" not in state:
        state[prefix + "lam_next"] = state[prefix + "lam"].clone()


def kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(P ‖ Q) per row from log-probabilities: Σ_k P_k (log P_k − log Q_k)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


@torch.no_grad()
def probe(model: IPRMModel, z_audio: Tensor, z_visual: Tensor, weights: Tensor) -> dict[str, Tensor]:
    """Probing pass at λ_t without gradients: D^a, D^v and ω^a = D^v / (D^a + D^v)."""
    fused, logits_a, logits_v = model.heads(z_audio.detach(), z_visual.detach(), model.lam_next)
    log_bar, log_a, log_v = (
        F.log_softmax(flatten_samples(x).float(), dim=-1) for x in (fused, logits_a, logits_v)
    )
    w = weights.reshape(-1)
    sums = torch.stack([(kl_rows(log_a, log_bar) * w).sum(), (kl_rows(log_v, log_bar) * w).sum(), w.sum()])
    sums = all_reduce_sum(sums)  # the global batch under several processes: every rank gets the same λ
    kl_a, kl_v = sums[0] / sums[2].clamp_min(1.0), sums[1] / sums[2].clamp_min(1.0)  # D^a, D^v
    total = kl_a + kl_v
    omega_a = torch.where(total > EPS, kl_v / total.clamp_min(EPS), torch.full_like(total, 0.5))
    return {"kl_audio": kl_a, "kl_visual": kl_v, "omega_audio": omega_a}


@dataclass(frozen=True)
class IPRMOptions:
    alpha: float = option(0.8, "α of the λ update", UNIT)
    variant: str = option(
        "code",
        "code: λ_1 = α/2 + (1−α)ω_0, eval at λ_T | slides: λ_1 = ω_0, at λ_{T+1}",
        one_of("code", "slides"),
    )


class IPRM(BalancerHooks):
    """Instantaneous probe-and-rebalance with geodesic multimodal mixup."""

    name = "iprm"
    method = "IPRM"
    Options = IPRMOptions
    weighs_event_segments = True

    def __init__(
        self, options: IPRMOptions | None = None, *, seed: int = 0, dim: int | None = None, **values: Any
    ) -> None:
        super().__init__(options, seed=seed, **values)
        self.alpha, self.variant = float(self.options.alpha), self.options.variant
        self.dim = dim  # the heads' input size; None: taken from the model (or the first batch)
        self.epoch = 0

    def applies_to(self, model: AVModel) -> str | None:
        return None  # IPRM brings its own fusion heads

    def prepare_model(self, model: AVModel) -> AVModel:
        return model if isinstance(model, IPRMModel) else IPRMModel(model, self.dim)

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        if not isinstance(model, IPRMModel):
            raise ValueError("IPRM trains the model returned by IPRM.prepare_model (it adds the heads)")
        z_a, z_v = model.encode(batch.audio, batch.visual)  # encoders run once
        weights = event_weights(batch.labels, model.background)
        probed = probe(model, z_a, z_v, weights)
        omega_a = probed["omega_audio"]
        fused, logits_a, logits_v = model.heads(z_a, z_v, omega_a)  # learn under balanced status
        loss_fused = task_loss(fused, batch.labels)
        loss = loss_fused + task_loss(logits_a, batch.labels) + task_loss(logits_v, batch.labels)
        lam = model.lam_next.detach().clone()  # λ_t used by the probe
        model.update_lambda(omega_a, self.alpha, self.variant)
        out = ModelOutput((fused + logits_a + logits_v).detach(), z_a, z_v, logits_a, logits_v)
        logs = {"loss_ce": loss_fused.detach(), "lambda": lam, **probed}
        return StepResult(loss, out, logs)


__all__ = ["IPRM", "IPRMModel", "geodesic_mixup", "kl_rows", "probe"]
