"""Greedy: balanced multi-modal learning (Wu, Jastrzębski, Cho, Geras, ICML 2022, "Characterizing and
Overcoming the Greedy Nature of Learning in Multi-modal Deep Neural Networks"), as its released code runs it
(github.com/nyukat/greedy_multimodal_learning: ``src/balanced_mmtm.py`` ``MMTM_mitigate``,
``src/callbacks.py`` ``Bias_Mitigation_Strong``, ``configs/training_guided.gin``).

The model has MMTM layers between its two encoders (``--fusion mmtm``): the only cross-modal paths. Each
modality m has *main* parameters (its encoder) and *bypass* parameters (the MMTMs' excitation layer of m and
the squeeze layer both share). After each backward, the conditional learning speeds (§4, the code's
``compute_BDR``) accumulate over every step since training began:

    M^m_main += ‖∇θ^m_main‖² / ‖θ^m_main‖²,   M^m_bypass += ‖∇θ^m_bypass‖² / ‖θ^m_bypass‖²
    BDR^m = log10(M^m_bypass / M^m_main),     d = BDR^a − BDR^v

From epoch ``start`` on (the code: 2), when |d| > ε (0.01) a *re-balancing* window of ``steps`` (5) steps
begins for the caring modality c = a if d > 0 else v: in its MMTMs, c's gate is replaced by the running
average of its gates over every training forward so far (the code's ``running_avg_weight``), so no
cross-modal information flows into c; the ordinary steps resume after the window, where d is measured again.
Before ``start`` d is accumulated but nothing is re-balanced.

The released code computes both running averages from the first modality's gate (``vis_out`` for both:
``average="code"``, default; both gates have one width in every avel MMTM model); ``average="own"`` gives
each modality the average of its own gate (the paper's description). Deviations: the averages count training
forwards only (the code also counts evaluation passes); the gate sums are summed over processes (the same
average on every rank); the window logic runs on the device (no host read per step).

Paper numbering: not verified. The paper's full text could not be read from this project (its stored
copies give the title, abstract and the start of the introduction only: docs/deviations.md, "Equation
numbers of the BalanceBenchmark methods"), so no formula here carries an equation number and any §
reference is unchecked; the formulas follow the code named above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from avel.balance.base import (
    AT_LEAST_1,
    NON_NEGATIVE,
    BalancerHooks,
    StepResult,
    check,
    one_of,
    option,
    output_loss,
)
from avel.collectives import all_reduce_sum
from avel.models.base import AVModel, ModelOutput, WrappedModel
from avel.models.intermediate import MMTM

if TYPE_CHECKING:
    from avel.data.splits import Batch

AVERAGES = ("code", "own")


def mmtm_layers(model: nn.Module) -> list[MMTM]:
    return [m for m in model.modules() if isinstance(m, MMTM)]


def speed_ratio(grads: list[Tensor | None], params: list[Tensor]) -> Tensor:
    """Σ‖∇θ‖² / Σ‖θ‖² over one parameter group (parameters without a gradient count 0)."""
    g = sum((x.detach().float().square().sum() for x in grads if x is not None), torch.zeros(()))
    w = sum((p.detach().float().square().sum() for p in params), torch.zeros(()))
    return g.to(w.device) / w.clamp_min(1e-30)


def bdr_difference(m_bypass: Tensor, m_main: Tensor) -> Tensor:
    """d = log10(M^a_bypass / M^a_main) − log10(M^v_bypass / M^v_main); M are (2,) cumulative sums."""
    bdr = torch.log10(m_bypass / m_main.clamp_min(1e-30))
    return bdr[0] - bdr[1]


def window_step(
    curating: Tensor, caring: Tensor, step: Tensor, d: Tensor, eps: float, window: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The code's ``on_backward_end``: (curating, caring, step) of the next forward.

    Outside a window: |d| > ε opens one for c = audio (0) if d > 0 else visual (1), at step 0; inside: the
    step counts up, and the window closes when it reaches ``window``.
    """
    begin = ~curating & (d.abs() > eps)
    nxt = torch.where(curating, step + 1, torch.zeros_like(step))
    ended = curating & (nxt == window)
    caring = torch.where(begin, (d < 0).long(), torch.where(curating, caring, torch.zeros_like(caring)))
    return begin | (curating & ~ended), caring, nxt


class GreedyModel(WrappedModel):
    """An MMTM model whose gates the balancer can replace by their running averages (re-balancing steps)."""

    def __init__(self, base: AVModel, average: str = "code") -> None:
        check("Greedy average", average, one_of(*AVERAGES))
        super().__init__(base)
        self.average = average
        self.splits_logits, self.z_dim = base.splits_logits, base.z_dim
        self.register_buffer("curating", torch.tensor(False))
        self.register_buffer("caring", torch.tensor(0))  # 0: audio, 1: visual
        self.register_buffer("avg_steps", torch.tensor(0))
        self.layers = len(mmtm_layers(base))
        for i, layer in enumerate(mmtm_layers(base)):
            self.register_buffer(f"avg_audio_{i}", torch.zeros(layer.fc_audio.out_features))
            self.register_buffer(f"avg_visual_{i}", torch.zeros(layer.fc_visual.out_features))
            layer.__dict__["gate_override"] = self.gates
            layer.__dict__["greedy_index"] = i

    def gates(self, layer: MMTM, g_a: Tensor, g_v: Tensor) -> tuple[Tensor, Tensor]:
        """Running averages updated (training), then the caring modality's gate replaced while curating."""
        if not self.training:
            return g_a, g_v
        i = layer.__dict__["greedy_index"]
        avg_a, avg_v = getattr(self, f"avg_audio_{i}"), getattr(self, f"avg_visual_{i}")
        n = torch.tensor(float(g_a.shape[0]), device=g_a.device)
        sums = all_reduce_sum(torch.cat([g_a.detach().sum(0), g_v.detach().sum(0), n[None]]))
        mean_a, mean_v = sums[: g_a.shape[1]] / sums[-1], sums[g_a.shape[1] : -1] / sums[-1]
        if self.average == "code":  # the code's running_avg_weight_skeleton also averages vis_out
            mean_v = mean_a if mean_a.shape == mean_v.shape else mean_v
        t = self.avg_steps.float()
        avg_a.copy_((mean_a + avg_a * t) / (t + 1))  # running mean over every training forward
        avg_v.copy_((mean_v + avg_v * t) / (t + 1))
        if i == self.layers - 1:
            self.avg_steps.add_(1)
        care_a = self.curating & (self.caring == 0)
        care_v = self.curating & (self.caring == 1)
        g_a = torch.where(care_a, avg_a.to(g_a.dtype).expand_as(g_a), g_a)
        g_v = torch.where(care_v, avg_v.to(g_v.dtype).expand_as(g_v), g_v)
        return g_a, g_v

    def fuse(self, z_audio: Tensor, z_visual: Tensor) -> ModelOutput:
        return self.base.fuse(z_audio, z_visual)

    def encode(self, audio: Tensor, visual: Tensor) -> tuple[Tensor, Tensor]:
        return self.base.encode(audio, visual)


@dataclass(frozen=True)
class GreedyOptions:
    eps: float = option(0.01, "Greedy: re-balance when |BDR_a - BDR_v| > eps", NON_NEGATIVE)
    steps: int = option(5, "re-balancing steps per window", AT_LEAST_1)
    start: int = option(2, "first epoch that may re-balance", NON_NEGATIVE)
    average: str = option(
        "code",
        "code: both running averages from the audio gate | own",
        one_of(*AVERAGES),
    )


class Greedy(BalancerHooks):
    """Re-balancing steps in MMTM models, triggered by the conditional learning speeds."""

    name = "greedy"
    method = "Greedy"
    Options = GreedyOptions
    grid_rows = ()  # a column of the intermediate grid (avel.experiments.ablate._intermediate)
    runs_forward = True

    def __init__(self, options: GreedyOptions | None = None, *, seed: int = 0, **values: Any) -> None:
        super().__init__(options, seed=seed, **values)
        o = self.options
        eps, steps, start, average = o.eps, o.steps, o.start, o.average
        self.eps, self.steps, self.start, self.average = float(eps), int(steps), int(start), average
        self.epoch = 0
        self.sums = torch.zeros(4)  # M^a_bypass, M^v_bypass, M^a_main, M^v_main
        self.step_in_window = torch.tensor(0)
        self.d = torch.tensor(0.0)

    def applies_to(self, model: AVModel) -> str | None:
        if not mmtm_layers(model):
            name = getattr(model, "fusion_name", "") or "this"
            return (
                "greedy re-balances through MMTM's cross-modal gates: it needs --fusion mmtm "
                f"(resnet18 or cgmnist); {name} fusion has no cross-modal path to cut"
            )
        return None

    def prepare_model(self, model: AVModel) -> AVModel:
        return model if isinstance(model, GreedyModel) else GreedyModel(model, self.average)

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        out = model(batch.audio, batch.visual)
        loss = output_loss(out, batch.labels)
        greedy = _greedy_model(model)
        logs = {
            "loss_ce": loss.detach(),
            "curation_mode": greedy.curating.float(),
            "caring_modality": greedy.caring.float(),
        }
        return StepResult(loss, out, logs)

    def speeds(self, model: GreedyModel) -> Tensor:
        """This step's (bypass a, bypass v, main a, main v) ratios ‖∇θ‖²/‖θ‖²."""
        layers = mmtm_layers(model.base)
        shared = [p for m in layers for p in m.fc_squeeze.parameters()]
        bypass = {
            "audio": shared + [p for m in layers for p in m.fc_audio.parameters()],
            "visual": shared + [p for m in layers for p in m.fc_visual.parameters()],
        }
        ratios = [speed_ratio([p.grad for p in bypass[m]], bypass[m]) for m in ("audio", "visual")]
        for m in ("audio", "visual"):
            params = [p for _, p in model.branch_parameters(m)]
            ratios.append(speed_ratio([p.grad for p in params], params))
        return torch.stack(ratios)

    def before_optimizer_step(self, model: AVModel, result: StepResult) -> None:
        greedy = _greedy_model(model)
        device = greedy.curating.device
        self.sums, self.step_in_window = self.sums.to(device), self.step_in_window.to(device)
        curating = greedy.curating.clone()
        measured = self.sums + self.speeds(greedy).to(device)  # compute_BDR: only outside a window
        self.sums = torch.where(curating, self.sums, measured)
        d = bdr_difference(self.sums[:2], self.sums[2:])
        self.d = torch.where(curating, self.d.to(device), d)
        if self.epoch < self.start:  # locked: measured, never re-balanced
            greedy.curating.fill_(False)
            greedy.caring.fill_(0)
            return
        flags = window_step(curating, greedy.caring, self.step_in_window, d, self.eps, self.steps)
        greedy.curating.copy_(flags[0])
        greedy.caring.copy_(flags[1])
        self.step_in_window = flags[2]

    def epoch_logs(self) -> dict[str, float]:
        return {"d_bdr": float(self.d)}

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "sums": self.sums.detach().cpu().clone(),
            "step_in_window": self.step_in_window.detach().cpu().clone(),
            "d": self.d.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state.get("epoch", 0))
        self.sums = state.get("sums", torch.zeros(4)).float().clone()
        self.step_in_window = state.get("step_in_window", torch.tensor(0)).clone()
        self.d = state.get("d", torch.tensor(0.0)).float().clone()


def _greedy_model(model: nn.Module) -> GreedyModel:
    inner = getattr(model, "module", model)  # under DDP
    if not isinstance(inner, GreedyModel):
        raise ValueError("Greedy trains the model returned by Greedy.prepare_model (it watches the MMTMs)")
    return inner


__all__ = ["Greedy", "GreedyModel", "bdr_difference", "mmtm_layers", "speed_ratio", "window_step"]
