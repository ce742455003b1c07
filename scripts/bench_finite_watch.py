"""Cost of the non-finite watch in the training step (issue #24): ``train_one_epoch`` with the per-step
``isfinite`` of the loss and of the gradient norm (``avel.engine.train.FiniteWatch``, ``grad_norm``) against
the same loop with both replaced by no-ops, interleaved in one process, as a ratio (figures go to
BENCHMARKS.md). On CPU the times are the process's CPU time (one torch thread by default): other work on a
shared machine does not count.

    python scripts/bench_finite_watch.py                        # AVEL concat on AVE-shaped features, CPU
    python scripts/bench_finite_watch.py --device cuda --videos 3339
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import avel.engine.train as train_mod
from avel.balance import build_balancer
from avel.engine.config import TrainConfig
from avel.families import build_model

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import avel_data  # noqa: E402


class NoWatch:
    """``FiniteWatch`` without any work: the loop as it was before the watch."""

    def __init__(self, split) -> None:
        pass

    def step(self, *args) -> None:
        pass

    def check(self) -> None:
        pass


def epoch_time(model, balancer, data, cfg, watch: bool) -> float:
    real = (train_mod.FiniteWatch, train_mod.grad_norm)
    if not watch:
        train_mod.FiniteWatch, train_mod.grad_norm = NoWatch, lambda params: torch.zeros(())
    optimizer = train_mod.build_optimizer(cfg, model.parameters())
    device = data.train.device
    try:
        if device.type == "cuda":
            torch.cuda.synchronize()
        clock = time.perf_counter if device.type == "cuda" else time.process_time
        t0 = clock()
        train_mod.train_one_epoch(
            model, balancer, data.train, optimizer, cfg, torch.Generator().manual_seed(0)
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        return clock() - t0
    finally:
        train_mod.FiniteWatch, train_mod.grad_norm = real


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--videos", type=int, default=256)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = avel_data(args.videos, device)
    cfg = TrainConfig(model="avel", fusion="concat", batch_size=64, lr=1e-3, optimizer="adam", progress=False)
    model = build_model("avel", "concat", input_mode="features").to(device)
    balancer = build_balancer("none")
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), ""
    )
    where = f"{args.device} ({cpu or platform.processor()})"
    print(f"{where}, torch {torch.__version__}, {args.videos} videos, batch 64")
    for watch in (True, False):  # warm-up
        epoch_time(model, balancer, data, cfg, watch)
    on, off, ratio = [], [], []
    for r in range(args.rounds):
        t = {
            w: epoch_time(model, balancer, data, cfg, w) for w in ((True, False) if r % 2 else (False, True))
        }
        on.append(t[True])
        off.append(t[False])
        ratio.append(t[True] / t[False])
    print(f"epoch with the watch {statistics.median(on):.3f} s, without {statistics.median(off):.3f} s "
          f"({'wall' if device.type == 'cuda' else 'CPU'} time), "
          f"ratio {statistics.median(ratio):.3f} (median of {args.rounds} interleaved rounds)")  # fmt: skip


if __name__ == "__main__":
    main()
