"""Gradient-Blending (G-Blend; Wang, Tran, Feiszli, CVPR 2020, "What Makes Training Multi-modal
Classification Networks Hard?").

``prepare_model`` wraps the model in ``GBlendModel``: the base model (its fused head) plus a linear
uni-modal head on each representation, h_a(z^a) and h_v(z^v). The loss is the blend
L = w_a L_a + w_v L_v + w_f L_f of the three heads' cross-entropies (G-Blend §3.3, the weighted multi-task
loss). The weights come from each head's overfitting-to-generalization behaviour over a super-epoch of n
epochs (§3.2): with L^T_k, L^V_k the losses of head k on train data and on data held out of training,

    G_k = L^V_{k,N} − L^V_{k,N+n}                                     generalization gain, ΔG_{N,n}
    O_k = (L^V_{k,N+n} − L^T_{k,N+n}) − (L^V_{k,N} − L^T_{k,N})       change of overfitting, ΔO_{N,n}
    w_k = (G_k / O_k²) / Z,  Z = Σ_j G_j / O_j²                      Proposition 1 (in practice)

The held-out set V is a fixed fraction of the *train* split (never val or test): the loop trains on the
rest T' (``train_indices``); L^T is measured on a fixed subset of T' of the same size as V.

This is the paper's *online* G-Blend (weights re-estimated every super-epoch of n epochs), with one
deviation: the paper estimates each head's G_k, O_k by training a copy of the current model for n epochs
on that head's loss alone (Algorithm 1, called by Algorithm 2 at each super-epoch); here G_k, O_k are
measured on the jointly trained model itself over the super-epoch that just ended (no extra training).
The first super-epoch uses equal weights. A head without generalization gain (G_k ≤ 0) gets weight 0;
when no head gained, the weights are kept. Prediction: the fused head (``predict="fused"``, the paper) or
the mean of the three heads' logits (``predict="mean"``, the PMR authors' three-head classifier).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from avel.balance.base import (
    AT_LEAST_1,
    BalancerHooks,
    StepResult,
    check,
    one_of,
    option,
    output_loss,
    task_loss,
)
from avel.models.base import AVModel, ModelOutput, WrappedModel

if TYPE_CHECKING:
    from avel.data.splits import Batch, DataSplits, SplitData

HEADS = ("audio", "visual", "fused")
PREDICT = ("fused", "mean")
EPS = 1e-12


def blend_weights(
    train_before: Tensor, held_before: Tensor, train_after: Tensor, held_after: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(w, G, O) per head from the losses at the start (N) and end (N+n) of a super-epoch, each shape (K,).

    w sums to 1; w = 0 where G ≤ 0; w is all zeros when no head has G > 0 (the caller keeps its weights).
    """
    gain = held_before - held_after  # G_k = ΔG_{N,n} (G-Blend §3.2)
    over = (held_after - train_after) - (held_before - train_before)  # O_k = ΔO_{N,n} (§3.2)
    raw = torch.where(gain > 0, gain / over.square().clamp_min(EPS), torch.zeros_like(gain))
    total = raw.sum()
    w = torch.where(total > 0, raw / total.clamp_min(EPS), torch.zeros_like(raw))  # w_k = G_k/O_k² / Z
    return w, gain, over


def holdout_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(train rows T', held-out rows V) of a split of ``n`` rows: a seeded random ``fraction`` held out."""
    k = max(1, round(fraction * n)) if n > 1 else 0
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[k:].sort().values, perm[:k].sort().values


class GBlendModel(WrappedModel):
    """A base model plus uni-modal heads h_a, h_v; ``heads`` gives (fused output, h_a(z^a), h_v(z^v))."""

    def __init__(self, base: AVModel, predict: str = "fused", dim: int | None = None) -> None:
        check("Gradient-Blending predict", predict, one_of(*PREDICT))
        super().__init__(base)
        self.predict = predict
        self.z_dim = dim = dim or base.z_dim
        self.head_audio = nn.Linear(dim, base.num_classes) if dim else nn.LazyLinear(base.num_classes)
        self.head_visual = nn.Linear(dim, base.num_classes) if dim else nn.LazyLinear(base.num_classes)

    def heads(self, z_audio: Tensor, z_visual: Tensor) -> tuple[ModelOutput, Tensor, Tensor]:
        return self.base.fuse(z_audio, z_visual), self.head_audio(z_audio), self.head_visual(z_visual)

    def fuse(self, z_audio: Tensor, z_visual: Tensor) -> ModelOutput:
        fused, logits_a, logits_v = self.heads(z_audio, z_visual)
        logits = fused.logits if self.predict == "fused" else (fused.logits + logits_a + logits_v) / 3
        return ModelOutput(logits, z_audio, z_visual, logits_a, logits_v)


@torch.no_grad()
def head_losses(model: GBlendModel, split: SplitData, rows: Tensor, batch_size: int = 256) -> Tensor:
    """Mean cross-entropy of the (audio, visual, fused) heads over ``rows`` of ``split``, eval mode, (3,)."""
    was_training = model.training
    model.eval()
    sums, count = None, 0
    try:
        for batch in split.batches(batch_size, indices=rows, train=False):
            fused, logits_a, logits_v = model.heads(*model.encode(batch.audio, batch.visual))
            n = len(batch.index)
            losses = [task_loss(x, batch.labels) * n for x in (logits_a, logits_v, fused.logits)]
            step = torch.stack(losses)
            sums, count = (step if sums is None else sums + step), count + n
    finally:
        model.train(was_training)
    if sums is None:
        raise ValueError("Gradient-Blending: no rows to measure the head losses on")
    if split.sharded:  # every rank's rows: the same estimates on every rank
        from avel.collectives import all_reduce_sum

        sums = all_reduce_sum(sums.float())
        count = int(all_reduce_sum(torch.tensor(float(count), device=sums.device)))
    return (sums / count).float().cpu()


@dataclass(frozen=True)
class GBlendOptions:
    super_epoch: int = option(5, "epochs between weight estimates (online G-Blend)", AT_LEAST_1)
    holdout: float = option(
        0.1, "fraction of train held out of training to measure G and O", (lambda v: 0 < v < 1, "in (0, 1)")
    )
    predict: str = option(
        "fused", "fused (paper) | mean (of the fused and uni-modal heads)", one_of(*PREDICT)
    )


class GradientBlending(BalancerHooks):
    """Online G-Blend: uni-modal heads + the fused head, loss weights re-estimated every super-epoch."""

    name = "gblend"
    method = "Gradient-Blending"
    Options = GBlendOptions

    def __init__(self, options: GBlendOptions | None = None, *, seed: int = 0, **values: Any) -> None:
        super().__init__(options, seed=seed, **values)
        o = self.options
        self.super_epoch, self.holdout, self.predict = int(o.super_epoch), float(o.holdout), o.predict
        self.epoch = 0
        self.weights = torch.full((3,), 1.0 / 3)  # (audio, visual, fused); equal in the first super-epoch
        self.last: tuple[Tensor, Tensor] | None = None  # (L^T, L^V) at the start of the super-epoch
        self.estimate: dict[str, float] = {}

    def applies_to(self, model: AVModel) -> str | None:
        return None  # brings its own uni-modal heads; the fused head is the model's own

    def prepare_model(self, model: AVModel) -> AVModel:
        return model if isinstance(model, GBlendModel) else GBlendModel(model, self.predict)

    def split(self, train: SplitData) -> tuple[Tensor, Tensor]:
        return holdout_split(len(train), self.holdout, self.seed)

    def train_indices(self, train: SplitData) -> Tensor | None:
        return self.split(train)[0]

    def on_epoch_start(self, model: AVModel, data: DataSplits, epoch: int) -> None:
        self.epoch = epoch
        if epoch % self.super_epoch != 0 or not isinstance(model, GBlendModel):
            return
        rows_t, rows_v = self.split(data.train)
        measured = (
            head_losses(model, data.train, rows_t[: len(rows_v)]),
            head_losses(model, data.train, rows_v),
        )
        if self.last is not None:
            w, gain, over = blend_weights(*self.last, *measured)
            if w.sum() > 0:
                self.weights = w
            self.estimate = {
                f"{k}_{h}": float(v[i]) for k, v in (("G", gain), ("O", over)) for i, h in enumerate(HEADS)
            }
        self.last = measured

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        if not isinstance(model, GBlendModel):
            raise ValueError(
                "Gradient-Blending trains the model returned by prepare_model (it adds the heads)"
            )
        fused, logits_a, logits_v = model.heads(*model.encode(batch.audio, batch.visual))
        losses = (
            task_loss(logits_a, batch.labels),
            task_loss(logits_v, batch.labels),
            output_loss(fused, batch.labels),
        )
        w = self.device_weights(logits_a.device)
        loss = w[0] * losses[0] + w[1] * losses[1] + w[2] * losses[2]  # L = Σ_k w_k L_k (G-Blend §3.3)
        prediction = fused.logits if model.predict == "fused" else (fused.logits + logits_a + logits_v) / 3
        out = ModelOutput(prediction, fused.z_audio, fused.z_visual, logits_a, logits_v)
        logs = {f"loss_{h}": x.detach() for h, x in zip(HEADS, losses, strict=True)}
        return StepResult(loss, out, logs)

    @property
    def weights(self) -> Tensor:
        """(w_audio, w_visual, w_fused) on the CPU."""
        return self._weights

    @weights.setter
    def weights(self, value: Tensor) -> None:
        self._weights, self._device_weights = value.float().cpu(), None

    def device_weights(self, device: torch.device) -> Tensor:
        """The weights on the training device, copied there once per change (not once per step)."""
        if self._device_weights is None or self._device_weights.device != torch.device(device):
            self._device_weights = self._weights.to(device)
        return self._device_weights

    def epoch_logs(self) -> dict[str, float]:
        return {f"w_{h}": float(self.weights[i]) for i, h in enumerate(HEADS)} | self.estimate

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "weights": self.weights.clone(),
            "last": None if self.last is None else tuple(x.clone() for x in self.last),
            "estimate": dict(self.estimate),
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state.get("epoch", 0))
        self.weights = state.get("weights", torch.full((3,), 1.0 / 3)).float()
        last = state.get("last")
        self.last = None if last is None else (last[0], last[1])
        self.estimate = dict(state.get("estimate", {}))


__all__ = ["GBlendModel", "GradientBlending", "blend_weights", "head_losses", "holdout_split"]
