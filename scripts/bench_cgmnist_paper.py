"""Training throughput of the CG-MNIST paper recipe (``-c cgmnist_paper``: concat, SGD, batch 64, bf16
autocast) on CPU: main's path before this change (``cg_stem = "layers"``: the input BN and the first
convolution as modules) beside the fused stem (``cg_stem = "fused"``, what ``cgmnist_paper`` now runs: one
convolution of [x̂, 1], no input gradient), on one torch thread, and the fused stem on ``--threads``
threads; interleaved epoch-slices on the same data so that a shared machine's load hits every path alike
(not a test: BENCHMARKS.md).

Each slice trains ``--steps`` optimizer steps of one path from ``train_one_epoch`` on a fixed-size subset
of the train split; the figures are samples/s in process CPU time and in wall time. The projection of one
100-epoch run adds the evaluation passes the config runs (val every epoch; the prototype pass over train
and val with each modality, epochs 0, 10, ..., 90 and 99), measured here too, no-grad, batch 256:

    python scripts/bench_cgmnist_paper.py --data /path/cg60k.h5 --rounds 3 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from avel.data.splits import SplitData
from avel.engine.config import load_config
from avel.engine.evaluate import evaluate, train_prototypes
from avel.engine.train import build_optimizer, make_balancer, modality_epoch, train_one_epoch
from avel.families import build_model, load_splits
from avel.synth.cgmnist import make_cgmnist, small


def setup(path: Path, stem: str, balance: str):
    cfg = load_config(
        "cgmnist_paper",
        {"data": str(path), "device": "cpu", "progress": False, "balance": balance, "cg_stem": stem},
    )
    torch.manual_seed(0)
    model = build_model("cgmnist", cfg.fusion, input_mode="e2e", num_classes=10, cg_stem=stem)
    balancer = make_balancer(cfg, model)
    return cfg, model, balancer, build_optimizer(cfg, model.parameters())


def subset(split: SplitData, n: int) -> SplitData:
    return SplitData(split.audio[:n], split.visual[:n], split.labels[:n], split.transform)


def timed(fn) -> tuple[float, float]:
    """(wall s, process CPU s) of ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="an avel cgmnist file (default: a small one)")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per slice")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved slices per path")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the last path (1: left out)")
    ap.add_argument("--train", type=int, default=54000, help="train samples of the projected run")
    ap.add_argument("--val", type=int, default=6000, help="val samples of the projected run")
    ap.add_argument("--balance", default="none", help="none | pmr (prototypes once per slice)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.data or Path(tmp) / "cg.h5"
        if args.data is None:
            make_cgmnist(path, small(train=3000, test=100))
        data = load_splits(path, family="cgmnist")
        n = args.steps * 64
        data.train = sub = subset(data.train, n)
        val = subset(data.val, min(n, len(data.val)))
        paths = {"today (layers)": ("layers", 1), "fused": ("fused", 1)}
        if args.threads > 1:
            paths[f"fused, {args.threads} threads"] = ("fused", args.threads)
        runs = {name: setup(path, stem, args.balance) for name, (stem, _) in paths.items()}
        keys = ("train wall", "train cpu", "eval wall", "eval cpu", "proto wall", "proto cpu")
        got: dict[str, dict[str, list[float]]] = {k: {m: [] for m in keys} for k in paths}
        gen = torch.Generator().manual_seed(0)
        for r in range(args.rounds + 1):  # round 0 warms up
            for name, (cfg, model, balancer, opt) in runs.items():
                torch.set_num_threads(paths[name][1])

                def train(cfg=cfg, model=model, balancer=balancer, opt=opt, r=r) -> None:
                    balancer.on_epoch_start(model, data, r)
                    train_one_epoch(model, balancer, sub, opt, cfg, gen)

                wall, cpu = timed(train)
                e_wall, e_cpu = timed(lambda model=model, cfg=cfg: evaluate(model, val, amp=cfg.amp))
                p_wall, p_cpu = timed(lambda model=model: train_prototypes(model, sub))
                if r:
                    seconds = (wall, cpu, e_wall, e_cpu, p_wall, p_cpu)
                    samples = (n, n, len(val), len(val), n, n)
                    for key, s, k in zip(keys, seconds, samples, strict=True):
                        got[name][key].append(k / s)
    torch.set_num_threads(1)
    cfg = runs["fused"][0]
    protos = sum(modality_epoch(cfg, e) for e in range(cfg.epochs))  # epochs with each modality's accuracy

    def projected(rates: dict[str, float], kind: str) -> float:
        """Minutes of one run: epochs x (train + val) + the prototype passes (train + val) on their epochs."""
        train_s = cfg.epochs * args.train / rates[f"train {kind}"]
        eval_s = (cfg.epochs + protos) * args.val / rates[f"eval {kind}"]
        return (train_s + eval_s + protos * args.train / rates[f"proto {kind}"]) / 60

    print(
        f"# -c cgmnist_paper, balance {args.balance}, {args.rounds} interleaved slices of {n} train samples "
        f"per path (+ {len(val)} val, no-grad); projection: {cfg.epochs} epochs of {args.train} + val "
        f"{args.val} every epoch + {protos} prototype passes"
    )
    print(
        "| path | train samples/s (CPU time) | train samples/s (wall) | eval samples/s (CPU / wall) | "
        "100 epochs (CPU time) | 100 epochs (wall) |"
    )
    print("|---|---|---|---|---|---|")
    medians = {k: {m: statistics.median(v) for m, v in got[k].items()} for k in paths}
    for name, m in medians.items():
        print(
            f"| {name} | {m['train cpu']:.0f} | {m['train wall']:.0f} | {m['eval cpu']:.0f} / "
            f"{m['eval wall']:.0f} | {projected(m, 'cpu'):.0f} min | {projected(m, 'wall'):.0f} min |"
        )
    base = medians["today (layers)"]
    for name, m in medians.items():
        if name != "today (layers)":
            print(
                f"{name} / today: train {m['train cpu'] / base['train cpu']:.2f}x (CPU time), "
                f"{m['train wall'] / base['train wall']:.2f}x (wall)"
            )


if __name__ == "__main__":
    main()
