"""UMT and UME (Du, Teng, Wang, Cui, Zhao, Gao, ICML 2023, "On Uni-Modal Feature Learning in Supervised
Multi-Modal Learning").

UME, the uni-modal ensemble: each modality's encoder and a linear head h_m trained on its own
cross-entropy, the prediction the sum of the uni-modal logits, L = CE(h_a(z^a), y) + CE(h_v(z^v), y).
The two encoders share no parameter and no loss term, so one run trains both uni-modal models independently
(the base model's fusion layers stay in the model, unused). Intermediate fusions (MMTM, CentralNet) couple
the encoders: refused.

UMT, the uni-modal teacher: the multi-modal model trained with its task loss plus the distance of each
modality's representation to that of a uni-modal model trained before (the teacher, frozen),

    L = CE(f(x), y) + s · Σ_m MSE(z^m_teacher, z^m)

As BalanceBenchmark's ``UMTTrainer`` runs it (github.com/GeWu-Lab/BalanceBenchmark): the teachers are the
best checkpoints of uni-modal runs of the same model (``avel train --modality audio`` / ``visual``), the
distance the mean squared error of the encoders' outputs (z^m: h^m_t on AVEL, the pooled encoder output on
the classifiers), s = 10, inside the window ``start <= epoch <= end`` (default 0..80). The teachers run in
eval mode without gradients; they are not part of the student's checkpoint (their paths are in the config).

Paper numbering: not verified. The paper's full text could not be read from this project (its stored
copies give the title, abstract and the start of the introduction only: docs/deviations.md, "Equation
numbers of the BalanceBenchmark methods"), so no formula here carries an equation number and any §
reference is unchecked; the formulas follow the code named above.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from avel.balance.base import (
    NON_NEGATIVE,
    WINDOW,
    BalancerHooks,
    LoadRun,
    StepResult,
    option,
    output_loss,
    task_loss,
)
from avel.balance.heads import UniHeadsModel
from avel.families import modality_slot
from avel.models.base import AVModel

if TYPE_CHECKING:
    from avel.data.splits import Batch

INTERMEDIATE = ("mmtm", "centralnet")


def distillation_loss(z_student: Tensor, z_teacher: Tensor) -> Tensor:
    """MSE(z_teacher, z_student), the mean over every element (UMT's feature distillation)."""
    return F.mse_loss(z_student.float(), z_teacher.detach().float())


class UME(BalancerHooks):
    """Uni-modal ensemble: CE(h_a(z^a)) + CE(h_v(z^v)); predicts h_a(z^a) + h_v(z^v)."""

    name = "ume"
    method = "UME"
    grid_rows = ()  # BalanceBenchmark's rows: avel.experiments.ablate._balance_benchmark_cells

    def applies_to(self, model: AVModel) -> str | None:
        if model.fusion_name in INTERMEDIATE:
            return f"UME trains the two encoders independently; {model.fusion_name} fuses inside them"
        return None

    def prepare_model(self, model: AVModel) -> AVModel:
        return model if isinstance(model, UniHeadsModel) else UniHeadsModel(model, predict="heads")

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        if not isinstance(model, UniHeadsModel):
            raise ValueError("UME trains the model returned by UME.prepare_model (it adds the heads)")
        out = model(batch.audio, batch.visual)
        loss_a = task_loss(out.logits_audio, batch.labels)
        loss_v = task_loss(out.logits_visual, batch.labels)
        logs = {"loss_audio": loss_a.detach(), "loss_visual": loss_v.detach()}
        return StepResult(loss_a + loss_v, out, logs)


def load_teacher(path: str, modality: str, device: torch.device, load_run: LoadRun | None) -> AVModel:
    """A uni-modal run's checkpoint as a frozen teacher (``load_run``: the loop's checkpoint reader); refuses
    a missing file or a multi-modal run."""
    if not path:
        raise ValueError(
            f"UMT distils uni-modal teachers: set umt_teacher_{modality} to the best.pt of an "
            f"`avel train --modality {modality}` run of the same model"
        )
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such checkpoint (umt_teacher_{modality})")
    if load_run is None:
        raise ValueError("UMT reads its teachers' checkpoints through the training loop (avel train)")
    teacher, ckpt = load_run(path, device)
    trained = ckpt["config"].get("modality", "both")
    if modality_slot(ckpt["config"].get("model", ""), trained) != modality:  # gray: the audio slot
        raise ValueError(
            f"{path}: umt_teacher_{modality} was trained with --modality {trained}, not {modality}"
        )
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


@dataclass(frozen=True)
class UMTOptions:
    scale: float = option(
        10.0, "weight of the feature distillation MSE (BalanceBenchmark's scaling)", NON_NEGATIVE
    )
    window: list[int] = option([0, 80], "epochs [start, end] of the distillation, inclusive", WINDOW)
    teacher_audio: str = option("", "best.pt of an `avel train --modality audio` run of the same model")
    teacher_visual: str = option("", "best.pt of an `avel train --modality visual` run of the same model")


class UMT(BalancerHooks):
    """Uni-modal teachers: CE + s · Σ_m MSE(z^m_teacher, z^m)."""

    name = "umt"
    method = "UMT"
    Options = UMTOptions
    grid_rows = ()  # BalanceBenchmark's rows: avel.experiments.ablate._balance_benchmark_cells

    def __init__(self, options: UMTOptions | None = None, *, seed: int = 0, **values: Any) -> None:
        super().__init__(options, seed=seed, **values)
        o = self.options
        self.scale = float(o.scale)
        self.window = (int(o.window[0]), int(o.window[1]))
        self.paths = {"audio": str(o.teacher_audio), "visual": str(o.teacher_visual)}
        self.teachers: dict[str, AVModel] = {}
        self.epoch = 0

    def applies_to(self, model: AVModel) -> str | None:
        for modality, path in self.paths.items():
            if not path:
                return (
                    f"UMT distils uni-modal teachers: set umt_teacher_{modality} to the best.pt of an "
                    f"`avel train --modality {modality}` run of the same model"
                )
        return None

    def teacher(self, modality: str, device: torch.device) -> AVModel:
        if modality not in self.teachers:
            self.teachers[modality] = load_teacher(self.paths[modality], modality, device, self.load_run)
        return self.teachers[modality]

    @torch.no_grad()
    def teacher_features(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(z^a, z^v) of the frozen uni-modal teachers on the batch."""
        device = batch.labels.device
        z_a = self.teacher("audio", device).encode(batch.audio, batch.visual)[0]
        z_v = self.teacher("visual", device).encode(batch.audio, batch.visual)[1]
        return z_a, z_v

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        out = model(batch.audio, batch.visual)
        loss_ce = output_loss(out, batch.labels)
        if not self.window[0] <= self.epoch <= self.window[1]:
            return StepResult(loss_ce, out, {"loss_ce": loss_ce.detach()})
        t_a, t_v = self.teacher_features(batch)
        if t_a.shape != out.z_audio.shape or t_v.shape != out.z_visual.shape:
            raise ValueError(
                f"UMT: the teachers' representations {tuple(t_a.shape)}, {tuple(t_v.shape)} do not match "
                f"the model's {tuple(out.z_audio.shape)}, {tuple(out.z_visual.shape)} (train them on it)"
            )
        kd_a, kd_v = distillation_loss(out.z_audio, t_a), distillation_loss(out.z_visual, t_v)
        loss = loss_ce + self.scale * (kd_a + kd_v)
        logs = {"loss_ce": loss_ce.detach(), "distill_audio": kd_a.detach(), "distill_visual": kd_v.detach()}
        return StepResult(loss, out, logs)


__all__ = ["UME", "UMT", "distillation_loss", "load_teacher"]
