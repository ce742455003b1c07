"""MBSD as BalanceBenchmark's ``MBSDTrainer`` implements it (github.com/GeWu-Lab/BalanceBenchmark): each
modality's logits l^a, l^v (the split of the fused head) trained with their own cross-entropy, and the
weaker modality's true-class score pulled towards the stronger one's on the samples where at least one
modality is right.

With p^m = softmax(l^m), s^m_i = p^m_i[y_i], ps_i = max(s^a_i, s^v_i), pw_i = min(s^a_i, s^v_i) and
w_i = ps_i − pw_i where argmax p^a_i = y_i or argmax p^v_i = y_i (else 0), for two modalities:

    RS_i = (1/C) Σ_c (l^a_ic − l^v_ic)²               squared distance of the logits
    KL_i = pw_i · (log pw_i − ps_i)                     ``F.kl_div(ps, pw)`` on the scores, as the code
    L = CE(l, y) + CE(l^a, y) + CE(l^v, y) + (1/B) Σ_i w_i RS_i + (1/B) Σ_i w_i KL_i

inside the window ``start <= epoch <= end`` (default 0..80), the plain task loss outside it. As the code:
w_i, ps_i and pw_i keep their gradients, and ``kl_div`` reads ps as a log-probability (it is a probability),
so KL_i is not a KL divergence of two distributions; both are kept as they run (``kl="code"``).
``kl="scores"`` is the KL divergence the code's names describe, from the weak to the strong
true-class score as Bernoulli distributions: pw log(pw/ps) + (1 − pw) log((1 − pw)/(1 − ps)).
The three-modality branch of the code (RS on probabilities) does not apply to two modalities.

Needs the fused logits split by modality (concat or sum fusion; the AVEL concat head by its halves).
On AVEL every segment is a sample (background included); the means are over the samples of a rank's
batch (equal shares: DDP-free gradient averaging gives the global mean).

Paper numbering: not verified. The paper's full text could not be read from this project (its stored
copies give the title, abstract and the start of the introduction only: docs/deviations.md, "Equation
numbers of the BalanceBenchmark methods"), so no formula here carries an equation number and any §
reference is unchecked; the formulas follow the code named above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from avel.balance.base import WINDOW, BalancerHooks, StepResult, check, one_of, option, output_loss, task_loss
from avel.balance.ogm import split_logits_reason
from avel.models.base import AVModel, flatten_samples

if TYPE_CHECKING:
    from avel.data.splits import Batch

KL = ("code", "scores")
EPS = 1e-8


def mbsd_terms(logits_a: Tensor, logits_v: Tensor, labels: Tensor, kl: str = "code") -> dict[str, Tensor]:
    """w_i, RS_i, KL_i per sample and the two weighted means (1/N) Σ w RS, (1/N) Σ w KL."""
    la, lv = flatten_samples(logits_a).float(), flatten_samples(logits_v).float()
    y = labels.reshape(-1)
    p_a, p_v = torch.softmax(la, -1), torch.softmax(lv, -1)
    s_a, s_v = p_a.gather(1, y[:, None]).squeeze(1), p_v.gather(1, y[:, None]).squeeze(1)
    ps, pw = torch.maximum(s_a, s_v), torch.minimum(s_a, s_v)
    right = (p_a.argmax(-1) == y) | (p_v.argmax(-1) == y)
    w = torch.where(right, ps - pw, torch.zeros_like(ps))  # w_i (keeps its gradient, as the code)
    rs = (la - lv).square().sum(-1) / la.shape[-1]  # RS_i = (1/C) Σ_c (l^a − l^v)²
    if kl == "code":
        kl_i = pw * (torch.log(pw.clamp_min(EPS)) - ps)  # F.kl_div(input=ps, target=pw)
    elif kl == "scores":
        pw_c, ps_c = pw.clamp(EPS, 1 - EPS), ps.clamp(EPS, 1 - EPS)
        kl_i = pw_c * torch.log(pw_c / ps_c) + (1 - pw_c) * torch.log((1 - pw_c) / (1 - ps_c))
    else:
        check("MBSD kl", kl, one_of(*KL))
    n = la.shape[0]
    return {"w": w, "rs": rs, "kl": kl_i, "loss_rs": (w * rs).sum() / n, "loss_kl": (w * kl_i).sum() / n}


@dataclass(frozen=True)
class MBSDOptions:
    window: list[int] = option([0, 80], "epochs [start, end] of the distillation terms, inclusive", WINDOW)
    kl: str = option(
        "code", "code (kl_div on the scores as BalanceBenchmark) | scores (Bernoulli KL)", one_of(*KL)
    )


class MBSD(BalancerHooks):
    """Uni-modal cross-entropies plus the weighted logit distance and score distillation."""

    name = "mbsd"
    method = "MBSD"
    Options = MBSDOptions
    grid_rows = ()  # BalanceBenchmark's rows: avel.experiments.ablate._balance_benchmark_cells

    def __init__(self, options: MBSDOptions | None = None, *, seed: int = 0, **values: Any) -> None:
        super().__init__(options, seed=seed, **values)
        self.kl = self.options.kl
        self.window = (int(self.options.window[0]), int(self.options.window[1]))
        self.epoch = 0

    def applies_to(self, model: AVModel) -> str | None:
        return split_logits_reason("MBSD", model)

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        out = model(batch.audio, batch.visual)
        loss_ce = output_loss(out, batch.labels)
        if not self.window[0] <= self.epoch <= self.window[1]:
            return StepResult(loss_ce, out, {"loss_ce": loss_ce.detach()})
        if out.logits_audio is None or out.logits_visual is None:
            raise ValueError(
                "MBSD needs split logits (concat or sum fusion); the model's fusion returned none"
            )
        loss_a, loss_v = task_loss(out.logits_audio, batch.labels), task_loss(out.logits_visual, batch.labels)
        terms = mbsd_terms(out.logits_audio, out.logits_visual, batch.labels, self.kl)
        loss = loss_ce + loss_a + loss_v + terms["loss_rs"] + terms["loss_kl"]
        logs = {
            "loss_ce": loss_ce.detach(),
            "loss_audio": loss_a.detach(),
            "loss_visual": loss_v.detach(),
            "loss_rs": terms["loss_rs"].detach(),
            "loss_kl": terms["loss_kl"].detach(),
            "mbsd_weight": terms["w"].detach().mean(),
        }
        return StepResult(loss, out, logs)


__all__ = ["MBSD", "mbsd_terms"]
