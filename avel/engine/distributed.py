"""Training on several processes with PyTorch's own engine: ``torchrun`` + DistributedDataParallel.

``torchrun --nproc-per-node N -m avel train ...`` starts N copies of ``avel train``; each reads its place
from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and
joins one process group: NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on CPUs.

- Each rank keeps its own shard of the train split on its device: a permutation of the train rows drawn
  from the seed, padded (by repeating its first rows) to a multiple of the world size and dealt out
  round-robin, so every rank holds the same number of rows, runs the same number of steps and sees a last
  partial batch of the same size. ``batch_size`` stays the global batch: each rank steps on
  ``batch_size / world`` rows.
- Each rank shuffles its shard every epoch with a generator seeded from (seed, epoch, rank): a resumed
  run draws the same order as an uninterrupted one.
- Gradients are averaged by DDP (balancers that run the model's forward) or by one all-reduce after
  backward (the ones that call its encoders and fusion directly: OPM, IPRM, G-Blend, dropout).
  Statistics that decide how a balancer weighs or edits them are summed over ranks (``all_reduce_sum``) so
  that every rank computes the value one process would on the global batch: PMR's prototype sums and
  counts (Eq. 6/12), ρ's sums (Eq. 8) and the high-lr guard's batch sums, OGM-GE's and OPM's scores,
  IPRM's probe divergences (D^a, D^v, so λ is the same on every rank), Gradient-Blending's held-out head
  losses (each rank measures its shard; sums and counts are reduced).
- Validation and test run whole on every rank (the splits are small next to train), with the prototypes of
  the whole train split (sums reduced over the shards): the numbers are those of one process, and only
  rank 0 writes checkpoints, ``metrics.jsonl`` and ``results.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from avel.collectives import all_reduce_sum, world_size

if TYPE_CHECKING:
    from avel.data.splits import SplitData


@dataclass(frozen=True)
class Dist:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def env_dist() -> Dist:
    """The rank, world size and local rank torchrun put in the environment (a single process without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(device: str) -> tuple[Dist, str]:
    """Join torchrun's process group when there is one; returns this rank and the device it trains on.

    CUDA (``device`` auto/cuda with a GPU): NCCL, ``cuda:LOCAL_RANK``. Otherwise gloo on the CPU.
    """
    ctx = env_dist()
    if not ctx.active:
        return ctx, device
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        device = f"cuda:{ctx.local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), ctx.local_rank), device


def mean_logs(logs: dict[str, float]) -> dict[str, float]:
    """Each logged epoch mean averaged over ranks (equal shard sizes: the mean over the global epoch)."""
    world = world_size()
    if world == 1 or not logs:
        return logs
    keys = sorted(logs)
    values = all_reduce_sum(
        torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=_device())
    )
    return {k: float(v) / world for k, v in zip(keys, values.tolist(), strict=True)}


def _device() -> torch.device:
    """Where collectives run: the current GPU under NCCL, the CPU under gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def close() -> None:
    """Leave the process group (every rank at once) when there is one."""
    if world_size() > 1:
        dist.barrier()
        dist.destroy_process_group()


def shard_rows(n: int, rank: int, world: int, seed: int) -> Tensor:
    """Rank ``rank``'s rows of ``n``: a seeded permutation padded to a multiple of ``world``, dealt
    round-robin; every rank gets ``ceil(n / world)`` rows (increasing)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    pad = (-n) % world
    perm = torch.cat([perm, perm[:pad]])
    return perm[rank::world].sort().values


def shard_split(split: SplitData, rows: Tensor) -> SplitData:
    """A split of ``split``'s rows ``rows`` only; its transform still sees indices into the whole split."""
    from avel.data.splits import SplitData

    idx = rows.to(split.device)
    base = split.transform
    transform = None if base is None else (lambda a, v, i, train, gen, *k: base(a, v, idx[i], train, gen, *k))
    shard = SplitData(split.audio[idx], split.visual[idx], split.labels[idx], transform, split.rows[rows])
    shard.sharded, shard.stored_frames = True, split.stored_frames
    return shard


def epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The generator that orders (and augments) rank ``rank``'s shard in ``epoch``: from the seed alone."""
    state = np.random.SeedSequence([seed, epoch, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class DDP(nn.parallel.DistributedDataParallel):
    """DistributedDataParallel that answers the wrapped model's attributes (``background``,
    ``prototype_classes``, ``branch_parameters``...), so balancers take it where they take a model."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap(model: nn.Module, ctx: Dist, *, balancer: str, find_unused: bool, sync_bn: bool) -> nn.Module:
    """``model`` under DDP (SyncBatchNorm first if asked) when several ranks train a balancer whose
    ``training_loss`` runs the model's forward (``runs_forward``: DDP's hooks see it); as is otherwise (one
    rank, or a balancer that calls ``encode`` / ``fuse`` directly, whose ranks would drift apart under DDP:
    the loop averages its gradients with ``sync_gradients``)."""
    if not ctx.active:
        return model
    device = next(model.parameters()).device
    if sync_bn:
        if device.type != "cuda":
            raise ValueError("--sync-bn needs CUDA: PyTorch's SyncBatchNorm runs on GPUs only")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    from avel.balance import BALANCERS

    if not BALANCERS[balancer].runs_forward:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids, find_unused_parameters=find_unused)


def sync_gradients(model: nn.Module) -> None:
    """Average the gradients over ranks for a model DDP does not wrap (see ``wrap``): one
    all-reduce of the flattened gradients; a parameter without a gradient on some rank counts as zero
    there, and keeps ``None`` only where no rank has one. No-op under DDP or in one process."""
    world = world_size()
    if world == 1 or isinstance(model, nn.parallel.DistributedDataParallel):
        return
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    has = all_reduce_sum(
        torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    )
    params = [p for p, h in zip(params, has.tolist(), strict=True) if h > 0]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1).float() for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    at = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[at : at + n].view_as(p.grad))
        at += n


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (what checkpoints store)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
