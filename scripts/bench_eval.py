"""An AVEL epoch with evaluation beside the same epoch's training alone (not a test: BENCHMARKS.md).

Writes an AVE-shaped features file (``bench_load.write_file``: 7x7x512 maps, train : val : test = 8 : 1 : 1
as AVE's 3,339 : 402 : 402) and runs ``avel.train.run_training`` with ``--balance none``, evaluating on val
every epoch. Per epoch: the training part (``train_time_s`` in metrics.jsonl: balancer hook + the epoch's
steps) and the whole epoch (from one epoch's summary line to the next: training, evaluation, metrics line,
checkpoints). Two runs: the default (each modality's prototype accuracy at the last epoch only) and
``modality_eval_every = 1`` (as before #19: a prototype pass over all of train at every evaluation).
Medians over the epochs; the last epoch is left out of the medians (both runs compute the per-modality
accuracies there).

    python scripts/bench_eval.py --videos 240 --epochs 4
    python scripts/bench_eval.py --videos 3339 --epochs 5 --device cuda      # AVE size on a GPU
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_load import write_file

from avel.config import load_config
from avel.train import run_training


def epoch_times(data: Path, out: Path, args, modality_every: int) -> tuple[list[float], list[float]]:
    """(whole epoch s, training part s) per epoch, the last epoch left out."""
    stamps: list[float] = []
    cfg = load_config(
        None,
        {
            "data": str(data),
            "fusion": args.fusion,
            "epochs": args.epochs,
            "batch_size": 64,
            "device": args.device,
            "amp": args.amp,
            "progress": False,
            "out": str(out),
            "modality_eval_every": modality_every,
        },
    )
    t_start = time.perf_counter()
    run_training(cfg, log=lambda s: stamps.append(time.perf_counter()))
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # the first stamp is t_start: a fresh run logs nothing before its first epoch ends
    walls = [b - a for a, b in zip([t_start, *stamps[:-2]], stamps[:-1], strict=True)][: len(lines)]
    train = [r["train_time_s"] for r in lines]
    return walls[1:-1], train[1:-1]  # warm-up epoch and last epoch out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=240, help="train rows (val and test get 1/8 of it each)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--fusion", default="concat")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    total = args.videos * 10 // 8
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "features.h5"
        write_file(data, total, 0.8, 0.1)
        print(f"# AVEL {args.fusion} on {args.device}, {args.videos} train videos, {args.epochs} epochs")
        print("| per-modality accuracies | epoch s | training s | train samples/s | x training |")
        print("|---|---|---|---|---|")
        ratios = {}
        for label, every in (("last epoch only (default)", 0), ("every epoch (before #19)", 1)):
            walls, train = epoch_times(data, Path(tmp) / f"run{every}", args, every)
            w, t = statistics.median(walls), statistics.median(train)
            ratios[label] = w / t
            print(f"| {label} | {w:.3f} | {t:.3f} | {args.videos / t:.0f} | {w / t:.2f}x |", flush=True)
    if args.device.startswith("cuda"):
        print(f"# peak memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB (CUDA)")
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
        print(f"# peak memory: {rss:.0f} MiB (process peak RSS)")
    parts = ", ".join(f"{k} {r:.2f}x" for k, r in ratios.items())
    print(f"ratio epoch with evaluation / training-only epoch (goal <= 1.10x): {parts}")


if __name__ == "__main__":
    main()
