"""The prototype classifier of PMR (Fan et al., CVPR 2023): each class's mean representation of a modality
(Eq. 6) and the negative distance to it as that modality's logits (Eq. 7).

A measurement of a model, below its users: PMR trains with it (``avel.balance.pmr``), evaluation reports
each modality's accuracy with it (``avel.engine.evaluate``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from avel.models.base import AVModel, event_weights, flatten_samples

if TYPE_CHECKING:
    from avel.data.splits import SplitData


@torch.no_grad()
def compute_prototypes(
    model: AVModel,
    split: SplitData,
    num_classes: int,
    background: int | None,
    indices: Tensor | None = None,
    batch_size: int = 256,
    frames: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Class means of each modality's representation over ``indices`` of ``split`` (Eq. 6).
    ``frames`` (clip files): that many evenly spaced stored frames per clip (0: the evaluation's).

    Returns (c_audio (K, D), c_visual (K, D), counts (K,)). Eval mode, no gradients, sums with
    ``index_add_`` on the device; background segments (per-segment models) have weight 0. A class with no
    sample gets a zero row and count 0. The model's train/eval mode is restored afterwards. On a rank's
    shard of train (``split.sharded``) the sums and counts are summed over every rank's shard.
    """
    was_training = model.training
    model.eval()
    sums_a = sums_v = counts = None
    try:
        for batch in split.batches(batch_size, indices=indices, train=False, frames=frames):
            out = model(batch.audio, batch.visual)
            z_a, z_v = flatten_samples(out.z_audio).float(), flatten_samples(out.z_visual).float()  # (N, D)
            y = batch.labels.reshape(-1)
            w = event_weights(y, background)  # (N,)
            y = torch.where(w > 0, y, 0)  # background rows add zero to class 0
            if sums_a is None:
                sums_a = z_a.new_zeros(num_classes, z_a.shape[-1])
                sums_v = z_v.new_zeros(num_classes, z_v.shape[-1])
                counts = z_a.new_zeros(num_classes)
            sums_a.index_add_(0, y, z_a * w[:, None])
            sums_v.index_add_(0, y, z_v * w[:, None])
            counts.index_add_(0, y, w)
    finally:
        model.train(was_training)
    if sums_a is None:
        raise ValueError("compute_prototypes: no samples (empty split or empty indices)")
    if split.sharded:
        from avel.collectives import all_reduce_sum

        sums_a, sums_v, counts = all_reduce_sum(sums_a), all_reduce_sum(sums_v), all_reduce_sum(counts)
    denom = counts.clamp_min(1.0)[:, None]
    return sums_a / denom, sums_v / denom, counts  # Eq. 6


def prototype_logits(z: Tensor, prototypes: Tensor) -> Tensor:
    """−d(z, c_k) with the Euclidean (not squared) distance: (N, D), (K, D) -> (N, K) (Eq. 7)."""
    return -torch.cdist(z.float(), prototypes.float().to(z.device))  # Eq. 7
