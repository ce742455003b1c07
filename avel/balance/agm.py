"""AGM: adaptive gradient modulation (Li, Li, Hu, Lei, Li, Zhou, ICCV 2023, "Boosting Multi-modal Model
Performance with Adaptive Gradient Modulation"), as its released code runs it
(github.com/lihong2303/AGM_ICCV2023, ``run/CREMAD_main.py`` + ``model/CREMAD_net.py``: ``GradMod``).

Mono-modal responses (AGM §3.1, Shapley attribution of the fused output f to each modality; two players):

    φ^a = ½ [f(a, 0) − f(0, 0)] + ½ [f(a, v) − f(0, v)]        the paper (``variant="paper"``)
    φ^a = ½ [f(a, v) − f(0, v) + f(a, 0)]                       the released code (``variant="code"``)

(φ^v symmetrically), where f(a, 0) zeroes the visual *input* (the code's ``pad_visual``). The code drops
f(0, 0), so φ^a + φ^v = f(a, v) exactly; the paper's sum is f(a, v) − f(0, 0). The padded passes run in
eval mode (BatchNorm on running statistics, as the code's ``self.net.eval()``) and keep their gradients.

Per batch, mono-modal scores (cross-entropy of each response), their running means over all steps so far,
and the coefficients (AGM §3.2; the code's ``ratio``, ``optimal_ratio``, ``coeff``):

    s^m = −(1/B) Σ_i log max(softmax(φ^m_i)[y_i], 1e-8)
    r^a = exp(s^v − s^a),  r̄^a = exp(S^v − S^a)     S^m: mean of s^m over every earlier step (0 at the start)
    k^a = exp(α · min(r̄^a − r^a, cap))               cap = 10 (the code)

The loss is CE(k^a ⊙ φ^a + k^v ⊙ φ^v) where ⊙ scales only the gradient (the code's backward hooks on φ^a,
φ^v: the value stays φ^a + φ^v). After backward, when any gradient of the fusion head's weights leaves
[−clip, clip], every gradient is clipped to total norm ``clip`` (the code: 1.0).

Deviations (docs/deviations.md): on AVEL the scores sum over event segments only; the scores are summed over
every process (the same k on every rank); outside the modulation window k = 1 (the code keeps its last k in
the hooks); the clip test and the clipping run on the device without a host read (same result).
BalanceBenchmark's AGM differs from the released code (no-grad responses without f(a, 0), the ratio's sign
flipped, the coefficient on every non-bias parameter whose name holds the modality, cap 7, clip 5): listed
in docs/deviations.md, not implemented.

Paper numbering: not verified. The paper's full text could not be read from this project (its stored
copies give the title, abstract and the start of the introduction only: docs/deviations.md, "Equation
numbers of the BalanceBenchmark methods"), so no formula here carries an equation number and any §
reference is unchecked; the formulas follow the code named above.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avel.balance.base import NON_NEGATIVE, WINDOW, BalancerHooks, StepResult, one_of, option
from avel.collectives import all_reduce_sum
from avel.models.base import AVModel, ModelOutput, event_weights

if TYPE_CHECKING:
    from avel.data.splits import Batch

VARIANTS = ("code", "paper")
P_MIN = 1e-8  # the code's floor on softmax(φ)[y]


def shapley_responses(
    full: Tensor, pad_visual: Tensor, pad_audio: Tensor, zero: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """(φ^a, φ^v) from f(a, v), f(a, 0), f(0, v) and, for the paper's form, f(0, 0) (AGM §3.1)."""
    if zero is None:  # released code: ½ [f(a,v) − f(0,v) + f(a,0)]
        return 0.5 * (full - pad_audio + pad_visual), 0.5 * (full - pad_visual + pad_audio)
    phi_a = 0.5 * (pad_visual - zero) + 0.5 * (full - pad_audio)  # Shapley value, two players
    phi_v = 0.5 * (pad_audio - zero) + 0.5 * (full - pad_visual)
    return phi_a, phi_v


def mono_score_sums(phi: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
    """Σ_i w_i · −log max(softmax(φ_i)[y_i], 1e-8), without gradient."""
    p = torch.softmax(phi.detach().reshape(-1, phi.shape[-1]).float(), dim=-1)
    y = torch.where(weights > 0, labels.reshape(-1), 0)
    p_y = p.gather(1, y[:, None]).squeeze(1)
    return (-torch.log(p_y.clamp_min(P_MIN)) * weights).sum()


def agm_coefficients(
    s_a: Tensor, s_v: Tensor, run_a: Tensor, run_v: Tensor, alpha: float, cap: float
) -> tuple[Tensor, Tensor]:
    """(k^a, k^v) = exp(α · min(r̄ − r, cap)), r^a = exp(s^v − s^a), r̄^a = exp(S^v − S^a) (AGM §3.2)."""
    ratio_a, ratio_v = torch.exp(s_v - s_a), torch.exp(s_a - s_v)
    optimal_a, optimal_v = torch.exp(run_v - run_a), torch.exp(run_a - run_v)
    k_a = torch.exp(alpha * torch.clamp(optimal_a - ratio_a, max=cap))
    k_v = torch.exp(alpha * torch.clamp(optimal_v - ratio_v, max=cap))
    return k_a, k_v


def scale_gradient(x: Tensor, k: Tensor) -> Tensor:
    """x in the forward pass, k · ∂L/∂x in the backward pass (the code's backward hook)."""
    k = k.to(x.dtype)
    return x * k + x.detach() * (1 - k)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode inside the block (BatchNorm on running statistics), as it was after."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def head_weights(model: AVModel) -> list[nn.Parameter]:
    """The fusion head's weight matrices: parameters of neither branch, 2-D or more (the code's fc_out)."""
    branch = {id(p) for m in ("audio", "visual") for _, p in model.branch_parameters(m)}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in branch and p.dim() >= 2]


def clip_when_head_exceeds(model: AVModel, clip: float) -> None:
    """When a head-weight gradient leaves [−clip, clip]: every gradient clipped to total norm ``clip``."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    head = [p.grad for p in head_weights(model) if p.grad is not None]
    if not grads or not head:
        return
    peak = torch.stack([g.detach().abs().max().float() for g in head]).max()
    norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads])
    )
    coef = torch.clamp(clip / (norm + 1e-6), max=1.0)  # clip_grad_norm_'s factor
    coef = torch.where(peak > clip, coef, torch.ones_like(coef))
    for g in grads:
        g.mul_(coef.to(g.dtype))


@dataclass(frozen=True)
class AGMOptions:
    alpha: float = option(1.0, "AGM: k = exp(alpha min(optimal ratio - ratio, cap))", NON_NEGATIVE)
    window: list[int] = option([0, 19], "the code's epochs 1..20, inclusive", WINDOW)
    variant: str = option(
        "code",
        "code: phi^a = (f(a,v) - f(0,v) + f(a,0))/2 | paper: Shapley with f(0,0)",
        one_of(*VARIANTS),
    )
    cap: float = option(10.0, "cap", NON_NEGATIVE)
    clip: float = option(
        1.0, "clip to this total norm when a head-weight gradient leaves [-clip, clip]; 0 = off", NON_NEGATIVE
    )


class AGM(BalancerHooks):
    """Adaptive gradient modulation: Shapley mono-modal responses, each one's gradient scaled by k^m."""

    name = "agm"
    method = "AGM"
    Options = AGMOptions
    weighs_event_segments = True
    runs_forward = False  # three forward passes per step: gradients averaged by the loop, not DDP

    def __init__(self, options: AGMOptions | None = None, *, seed: int = 0, **values: Any) -> None:
        super().__init__(options, seed=seed, **values)
        o = self.options
        alpha, window, variant, cap, clip = o.alpha, o.window, o.variant, o.cap, o.clip
        self.alpha, self.cap, self.clip, self.variant = float(alpha), float(cap), float(clip), variant
        self.window = (int(window[0]), int(window[1]))
        self.epoch = 0
        self.steps = 0  # t: steps so far (the code's ``iteration - 1``)
        self.running: Tensor | None = None  # (S^a, S^v)

    @property
    def modulating(self) -> bool:
        return self.window[0] <= self.epoch <= self.window[1]

    def responses(self, model: AVModel, batch: Batch) -> tuple[ModelOutput, Tensor, Tensor]:
        """The fused output f(a, v) (train mode) and (φ^a, φ^v); the padded passes in eval mode."""
        audio, visual = batch.audio, batch.visual
        full = model(audio, visual)
        no_a, no_v = torch.zeros_like(audio), torch.zeros_like(visual)
        with eval_mode(model):
            pad_visual = model(audio, no_v).logits  # f(a, 0)
            pad_audio = model(no_a, visual).logits  # f(0, v)
            zero = model(no_a, no_v).logits if self.variant == "paper" else None
        phi_a, phi_v = shapley_responses(full.logits, pad_visual, pad_audio, zero)
        return full, phi_a, phi_v

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        full, phi_a, phi_v = self.responses(model, batch)
        w = event_weights(batch.labels, model.background)
        sums = torch.stack(
            [mono_score_sums(phi_a, batch.labels, w), mono_score_sums(phi_v, batch.labels, w), w.sum()]
        )
        sums = all_reduce_sum(sums)  # the global batch's scores on every rank
        s_a, s_v = sums[0] / sums[2].clamp_min(1.0), sums[1] / sums[2].clamp_min(1.0)
        if self.running is None or self.running.device != s_a.device:
            self.running = (self.running if self.running is not None else torch.zeros(2)).to(s_a.device)
        k_a, k_v = agm_coefficients(s_a, s_v, self.running[0], self.running[1], self.alpha, self.cap)
        t = self.steps + 1  # S ← S (t − 1)/t + s/t: the mean over every step so far
        self.running = self.running * (t - 1) / t + torch.stack([s_a, s_v]) / t
        self.steps = t
        if not self.modulating:
            k_a, k_v = torch.ones_like(k_a), torch.ones_like(k_v)
        logits = scale_gradient(phi_a, k_a) + scale_gradient(phi_v, k_v)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch.labels.reshape(-1))
        out = ModelOutput(full.logits, full.z_audio, full.z_visual, phi_a, phi_v, full.aux_logits)
        for extra in full.aux_logits:  # CentralNet's uni-modal heads keep their task loss
            loss = loss + F.cross_entropy(
                extra.reshape(-1, extra.shape[-1]).float(), batch.labels.reshape(-1)
            )
        logs = {
            "loss_ce": loss.detach(),
            "coef_audio": k_a.detach(),
            "coef_visual": k_v.detach(),
            "score_audio": s_a.detach(),
            "score_visual": s_v.detach(),
        }
        return StepResult(loss, out, logs)

    def before_optimizer_step(self, model: AVModel, result: StepResult) -> None:
        if self.clip > 0:
            clip_when_head_exceeds(model, self.clip)

    def state_dict(self) -> dict:
        running = None if self.running is None else self.running.detach().cpu().clone()
        return {"epoch": self.epoch, "steps": self.steps, "running": running}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.steps = int(state.get("epoch", 0)), int(state.get("steps", 0))
        running = state.get("running")
        self.running = None if running is None else running.detach().float().cpu().clone()


__all__ = ["AGM", "agm_coefficients", "mono_score_sums", "scale_gradient", "shapley_responses"]
