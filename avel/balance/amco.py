"""AMCo: adaptive mask co-optimization (Zhou et al., ICASSP 2023, "Adaptive Mask Co-Optimization for Modal
Dependence in Multimodal Learning"), as BalanceBenchmark runs it (GeWu-Lab/BalanceBenchmark,
``balancemm/trainer/AMCo_trainer.py`` + ``BaseClassifierAMCoModel``); no code of the authors is public, and
the paper's text was not reachable from here, so BalanceBenchmark's reading is the reference.

The model's split logits o^a, o^v (concat / sum fusion) are summed and passed through an extra linear layer
W* ∈ R^{C×C} (``linear_star``): o = W*(m^a ⊙ o^a + m^v ⊙ o^v). The modality the model *depends* on has its
logits masked by a per-class 0/1 mask m (the other's mask is 1). Per step t of an epoch e:

    p_t = sin(π/2 · min(ε, l_t) / ε),  l_0 = 0,  l_{t+1} = l_t + e/10          mask rate (the code's ``pt``)
    N_t = ⌊p_t C⌋ classes set to 0 in m, drawn at random                         (so epoch 0 masks nothing)

The loss is CE(o) + Σ_m CE(m^m ⊙ o^m). After the step, the dependence of the next one is decided from the
softmax over the 2C concatenated masked logits: modality m is dependent when its block holds more than σ of
the mass on average over the batch (σ = 0.5; ``dependent`` starts each epoch False). Evaluation uses no mask:
o = W*(o^a + o^v).

Deviations: BalanceBenchmark builds the mask as shape (2, C) and multiplies it with (B, C) logits (it runs
only with a batch of 2); here one class mask per step is shared by the batch (by every segment on AVEL).
Its mask is drawn with NumPy's global generator; here with a seeded generator kept in the checkpoint. The
dependence is decided on the global batch (softmax masses summed over processes). The option ``U = 512`` of
its config is unused by its code and not taken.

Paper numbering: not verified. The paper's full text could not be read from this project (its stored
copies give the title, abstract and the start of the introduction only: docs/deviations.md, "Equation
numbers of the BalanceBenchmark methods"), so no formula here carries an equation number and any §
reference is unchecked; the formulas follow the code named above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from avel.balance.base import POSITIVE, UNIT, WINDOW, BalancerHooks, StepResult, option, task_loss
from avel.balance.ogm import split_logits_reason
from avel.collectives import all_reduce_sum
from avel.models.base import AVModel, ModelOutput, WrappedModel, event_weights

if TYPE_CHECKING:
    from avel.data.splits import Batch, DataSplits


def mask_rate(l_t: float, eps: float) -> float:
    """p_t = sin(π/2 · min(ε, l_t)/ε)."""
    return math.sin(math.pi / 2 * min(eps, l_t) / eps)


def class_mask(num_classes: int, rate: float, generator: torch.Generator) -> Tensor:
    """A (C,) 0/1 mask with ⌊rate·C⌋ zeros at random classes (CPU)."""
    n = int(rate * num_classes)
    mask = torch.ones(num_classes)
    mask[torch.randperm(num_classes, generator=generator)[:n]] = 0.0
    return mask


def dependence_mass(logits_a: Tensor, logits_v: Tensor, weights: Tensor) -> Tensor:
    """(Σ_i w_i mass^a_i, Σ_i w_i mass^v_i, Σ_i w_i): each modality's share of softmax([o^a; o^v])."""
    c = logits_a.shape[-1]
    both = torch.cat([logits_a, logits_v], dim=-1).detach().reshape(-1, 2 * c).float()
    p = torch.softmax(both, dim=-1)
    mass_a, mass_v = p[:, :c].sum(-1), p[:, c:].sum(-1)
    return torch.stack([(mass_a * weights).sum(), (mass_v * weights).sum(), weights.sum()])


class AMCoModel(WrappedModel):
    """The base model with W* on its summed split logits; ``fuse`` is the unmasked prediction."""

    def __init__(self, base: AVModel) -> None:
        super().__init__(base)
        self.splits_logits = True
        self.z_dim = base.z_dim
        self.linear_star = nn.Linear(base.num_classes, base.num_classes)

    def split(self, z_audio: Tensor, z_visual: Tensor) -> tuple[Tensor, Tensor, ModelOutput]:
        out = self.base.fuse(z_audio, z_visual)
        if out.logits_audio is None or out.logits_visual is None:
            raise ValueError(f"AMCo needs split logits (concat or sum fusion); {self.fusion_name} gives none")
        return out.logits_audio, out.logits_visual, out

    def fuse(self, z_audio: Tensor, z_visual: Tensor) -> ModelOutput:
        la, lv, out = self.split(z_audio, z_visual)
        return ModelOutput(self.linear_star(la + lv), z_audio, z_visual, la, lv, out.aux_logits)


@dataclass(frozen=True)
class AMCoOptions:
    sigma: float = option(0.5, "AMCo: a modality is dependent above this softmax mass", UNIT)
    eps: float = option(0.3, "mask rate sin(pi/2 min(eps, l_t)/eps)", POSITIVE)
    window: list[int] = option([0, 80], "window", WINDOW)


class AMCo(BalancerHooks):
    """Mask the dependent modality's logits at a rising rate; uni-modal losses beside the fused one."""

    name = "amco"
    method = "AMCo"
    Options = AMCoOptions
    weighs_event_segments = True

    def __init__(self, options: AMCoOptions | None = None, *, seed: int = 0, **values: Any) -> None:
        super().__init__(options, seed=seed, **values)
        o = self.options
        sigma, eps, window = o.sigma, o.eps, o.window
        self.sigma, self.eps = float(sigma), float(eps)
        self.window = (int(window[0]), int(window[1]))
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.epoch = 0
        self.l_t = 0.0
        self.dependent: Tensor | None = None  # (audio, visual) bools of the next step

    def applies_to(self, model: AVModel) -> str | None:
        return split_logits_reason("AMCo", model)

    def prepare_model(self, model: AVModel) -> AVModel:
        return model if isinstance(model, AMCoModel) else AMCoModel(model)

    @property
    def modulating(self) -> bool:
        return self.window[0] <= self.epoch <= self.window[1]

    def on_epoch_start(self, model: AVModel, data: DataSplits, epoch: int) -> None:
        self.epoch, self.l_t, self.dependent = epoch, 0.0, None  # the code: both False, l_t = 0 per epoch

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        if not isinstance(model, AMCoModel):
            raise ValueError("AMCo trains the model returned by AMCo.prepare_model (it adds W*)")
        z_a, z_v = model.encode(batch.audio, batch.visual)
        la, lv, base_out = model.split(z_a, z_v)
        if not self.modulating:
            logits = model.linear_star(la + lv)
            loss = task_loss(logits, batch.labels)
            out = ModelOutput(logits, z_a, z_v, la, lv, base_out.aux_logits)
            return StepResult(loss, out, {"loss_ce": loss.detach()})
        rate = mask_rate(self.l_t, self.eps)
        mask = class_mask(model.num_classes, rate, self.generator).to(la.device, la.dtype)
        self.l_t += self.epoch / 10  # the code: l_t += epoch / 10 after each step's mask
        one = torch.ones_like(mask)
        dep = self.dependent if self.dependent is not None else torch.zeros(2, dtype=torch.bool)
        dep = dep.to(la.device)
        la_m = la * torch.where(dep[0], mask, one)
        lv_m = lv * torch.where(dep[1], mask, one)
        logits = model.linear_star(la_m + lv_m)
        loss_fused = task_loss(logits, batch.labels)
        loss_a, loss_v = task_loss(la_m, batch.labels), task_loss(lv_m, batch.labels)
        loss = loss_fused + loss_a + loss_v
        mass = all_reduce_sum(dependence_mass(la_m, lv_m, event_weights(batch.labels, model.background)))
        share = mass[:2] / mass[2].clamp_min(1.0)
        self.dependent = share > self.sigma  # decides the next step's masks (stays on the device)
        out = ModelOutput(logits, z_a, z_v, la_m, lv_m, base_out.aux_logits)
        logs = {
            "loss_ce": loss_fused.detach(),
            "loss_audio": loss_a.detach(),
            "loss_visual": loss_v.detach(),
            "mask_rate": torch.tensor(rate, device=la.device),
            "masked_audio": dep[0].float(),
            "masked_visual": dep[1].float(),
            "mass_audio": share[0],
        }
        return StepResult(loss, out, logs)

    def state_dict(self) -> dict:
        dep = None if self.dependent is None else self.dependent.detach().cpu().clone()
        return {
            "epoch": self.epoch,
            "l_t": self.l_t,
            "dependent": dep,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.l_t = int(state.get("epoch", 0)), float(state.get("l_t", 0.0))
        self.dependent = state.get("dependent")
        if "generator" in state:
            self.generator.set_state(state["generator"])


__all__ = ["AMCo", "AMCoModel", "class_mask", "dependence_mass", "mask_rate"]
