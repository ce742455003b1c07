"""Training throughput of the CG-MNIST paper recipe (``-c cgmnist_paper``: concat, SGD, batch 64) on CPU:
today's path before this change (fp32, ReLU then max-pool) beside the fast path (bf16 autocast where the
CPU has native bf16, max-pool before the first ReLU; both with main's CPU layout: NCHW convolutions, a
channels-last max-pool), interleaved
epoch-slices on the same data so that a shared machine's load hits both alike (not a test: BENCHMARKS.md).

Each slice trains ``--steps`` optimizer steps of one path from ``train_one_epoch`` on a fixed-size subset
of the train split; the figure is samples/s (wall clock and process CPU time) and the projected time of
one 100-epoch run on ``--train`` samples (54,000: `avel cgmnist`'s default train split).

    python scripts/bench_cgmnist_paper.py --data /path/cg60k.h5 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from avel.data.splits import SplitData, load_splits
from avel.engine.config import load_config
from avel.engine.train import build_optimizer, make_balancer, train_one_epoch
from avel.models import build_model
from avel.models.encoders import CGConvNet
from avel.synth.cgmnist import make_cgmnist, small


def legacy(net: CGConvNet) -> None:
    """Today's encoder path before the change: ReLU then max-pool."""
    stages = [
        nn.Sequential(net.bn0, net.conv1, net.relu, net.maxpool),
        nn.Sequential(net.conv2, net.relu),
        nn.Sequential(net.conv3, net.relu),
        nn.Sequential(net.conv4, net.relu),
    ]
    net.stages = lambda: stages


def setup(path: Path, fast: bool, balance: str):
    cfg = load_config(
        "cgmnist_paper",
        {"data": str(path), "device": "cpu", "progress": False, "amp": fast, "balance": balance},
    )
    torch.manual_seed(0)
    model = build_model("cgmnist", cfg.fusion, input_mode="e2e", num_classes=10)
    if not fast:
        legacy(model.audio_branch)
        legacy(model.visual_branch)
    balancer = make_balancer(cfg, model)
    return cfg, model, balancer, build_optimizer(cfg, model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="an avel cgmnist file (default: a small one)")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per slice")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved slices per path")
    ap.add_argument("--train", type=int, default=54000, help="train samples of the projected run")
    ap.add_argument("--balance", default="none", help="none | pmr (prototypes once per slice)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.data or Path(tmp) / "cg.h5"
        if args.data is None:
            make_cgmnist(path, small(train=3000, test=100))
        data = load_splits(path, family="cgmnist")
        n = args.steps * 64
        sub = SplitData(
            data.train.audio[:n], data.train.visual[:n], data.train.labels[:n], data.train.transform
        )
        data.train = sub
        paths = {name: setup(path, name == "fast", args.balance) for name in ("today", "fast")}
        wall: dict[str, list[float]] = {k: [] for k in paths}
        cpu: dict[str, list[float]] = {k: [] for k in paths}
        gen = torch.Generator().manual_seed(0)
        for r in range(args.rounds + 1):  # round 0 warms up
            for name, (cfg, model, balancer, opt) in paths.items():
                t0, c0 = time.perf_counter(), time.process_time()
                balancer.on_epoch_start(model, data, r)
                train_one_epoch(model, balancer, sub, opt, cfg, gen)
                if r:
                    wall[name].append(len(sub) / (time.perf_counter() - t0))
                    cpu[name].append(len(sub) / (time.process_time() - c0))
    print(f"# -c cgmnist_paper, balance {args.balance}, {args.rounds} interleaved slices of {n} samples each")
    print(
        "| path | samples/s (wall, median) | samples/s (CPU time, median) | 100 epochs of "
        f"{args.train} (CPU time) |"
    )
    print("|---|---|---|---|")
    for name in paths:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"| {name} | {w:.0f} | {c:.0f} | {100 * args.train / c / 60:.0f} min |")
    ratio = statistics.median(cpu["fast"]) / statistics.median(cpu["today"])
    print(f"fast / today (CPU time): {ratio:.2f}x")


if __name__ == "__main__":
    main()
