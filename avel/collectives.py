"""Sums over the processes of a run (``torchrun``), for every layer that reduces a statistic over the
global batch: PMR's prototypes, OGM-GE's scores, IPRM's probe, Gradient-Blending's losses, ... In a single
process they return their input: nothing here starts or needs a process group (``avel.engine.distributed``
does).
"""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """Processes in the current group; 1 when none is initialised."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(t: Tensor) -> Tensor:
    """The sum of ``t`` over every rank (``t`` itself in a single process); no gradient flows through it."""
    if world_size() == 1:
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
