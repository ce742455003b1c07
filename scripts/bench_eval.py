"""An AVEL epoch with evaluation beside the same epoch's training alone (not a test: BENCHMARKS.md).

Writes an AVE-shaped features file (``bench_load.write_file``: 7x7x512 maps, train : val : test = 8 : 1 : 1
as AVE's 3,339 : 402 : 402), loads it with ``load_splits`` and runs the epochs of ``run_training`` with
``--balance none`` from its own parts: ``balancer.on_epoch_start`` + ``train_one_epoch`` (the training-only
epoch), then ``evaluate_split`` on val with the per-modality accuracies where ``modality_epoch`` asks for
them (the evaluation). Checkpoint writing is not counted on either side. Two settings, epochs interleaved:
the default (``modality_eval_every = 0``: per-modality accuracies at the last epoch only) and
``modality_eval_every = 1`` (as before #19: a prototype pass over all of train at every evaluation).
Medians over the epochs after the first, the last epoch left out. CPU time of the process on a CPU (one
thread: other processes on a shared machine do not count), wall time on CUDA.

    python scripts/bench_eval.py --videos 192 --epochs 6
    python scripts/bench_eval.py --videos 1024 --epochs 6 --device cuda --amp
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_load import write_file

from avel.balance import build_balancer
from avel.engine.checkpoint import model_from_kwargs
from avel.engine.config import load_config
from avel.engine.train import build_optimizer, evaluate_split, modality_epoch, model_kwargs, train_one_epoch
from avel.families import load_splits


class Run:
    """One training run's state, advanced epoch by epoch."""

    def __init__(self, data, args, modality_every: int) -> None:
        self.cfg = load_config(
            None,
            {
                "fusion": args.fusion,
                "epochs": args.epochs,
                "batch_size": 64,
                "device": args.device,
                "amp": args.amp,
                "progress": False,
                "modality_eval_every": modality_every,
            },
        )
        torch.manual_seed(0)
        self.data = data
        self.model = model_from_kwargs(model_kwargs(self.cfg, data)).to(args.device)
        self.balancer = build_balancer("none")
        self.opt = build_optimizer(self.cfg, self.model.parameters())
        self.gen = torch.Generator().manual_seed(0)

    def epoch(self, epoch: int, clock) -> tuple[float, float]:
        """(training-only s, epoch with evaluation s)."""
        t0 = clock()
        self.balancer.on_epoch_start(self.model, self.data, epoch)
        train_one_epoch(self.model, self.balancer, self.data.train, self.opt, self.cfg, self.gen)
        t1 = clock()
        evaluate_split(self.model, self.data, self.data.val, self.cfg, modality_epoch(self.cfg, epoch))
        t2 = clock()
        return t1 - t0, t2 - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=192, help="train rows (val and test get 1/8 of it each)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--fusion", default="concat")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock = time.perf_counter if device.type == "cuda" else time.process_time

    def timed_clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return clock()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.h5"
        write_file(path, args.videos * 10 // 8, 0.8, 0.1)
        data = load_splits(path, device=device)
    print(
        f"# AVEL {args.fusion} on {device}, {len(data.train)} train / {len(data.val)} val videos, "
        f"{args.epochs} epochs, amp {args.amp}, {'wall' if device.type == 'cuda' else 'process CPU'} time"
    )
    runs = {"last epoch only (default)": Run(data, args, 0), "every epoch (before #19)": Run(data, args, 1)}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    for epoch in range(args.epochs):
        for k, run in runs.items():
            times[k].append(run.epoch(epoch, timed_clock))
    print("| per-modality accuracies | training s | with evaluation s | train samples/s | x training |")
    print("|---|---|---|---|---|")
    ratios = {}
    for k, pairs in times.items():
        kept = pairs[1:-1]  # warm-up epoch and last epoch out
        t, w = statistics.median(p[0] for p in kept), statistics.median(p[1] for p in kept)
        ratios[k] = w / t
        print(f"| {k} | {t:.3f} | {w:.3f} | {len(data.train) / t:.0f} | {w / t:.3f}x |")
    if device.type == "cuda":
        print(f"# peak memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB (CUDA)")
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
        print(f"# peak memory: {rss:.0f} MiB (process peak RSS)")
    parts = ", ".join(f"{k} {r:.3f}x" for k, r in ratios.items())
    print(f"ratio epoch with evaluation / training-only epoch (goal <= 1.10x): {parts}")


if __name__ == "__main__":
    main()
