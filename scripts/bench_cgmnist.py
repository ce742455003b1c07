"""Epoch time of the CG-MNIST grid's models (not a test: BENCHMARKS.md).

Renders the small embedded CG-MNIST file (``avel cgmnist --small``: 1,800 train / 200 val / 1,000 test)
unless one is given, and trains each model of PMR Tables 1-3 for ``--epochs`` epochs with the shipped recipe
(``-c cgmnist``: batch 16, Adam) from ``run_training``'s parts: ``balancer.on_epoch_start`` +
``train_one_epoch`` (training), then ``evaluate_split`` on val (with the per-modality accuracies, as the
recipe asks every epoch). Process CPU time (one torch thread: other processes on a shared machine do not
count); medians over the epochs after the first.

    python scripts/bench_cgmnist.py --epochs 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from avel.engine.checkpoint import model_from_kwargs
from avel.engine.config import load_config
from avel.engine.train import build_optimizer, evaluate_split, make_balancer, model_kwargs, train_one_epoch
from avel.families import load_splits
from avel.synth.cgmnist import SMALL, make_cgmnist

CASES = [  # (label, overrides): the grid's models
    ("gray only", {"modality": "gray"}),
    ("concat", {}),
    ("concat + PMR", {"balance": "pmr"}),
    ("FiLM", {"fusion": "film"}),
    ("gated", {"fusion": "gated"}),
    ("MMTM", {"fusion": "mmtm"}),
    ("CentralNet", {"fusion": "centralnet"}),
    ("concat + OGM-GE", {"balance": "ogm-ge"}),
    ("concat + G-Blend", {"balance": "gblend"}),
    # BalanceBenchmark's part-2 methods (issue 28), as the Table 2 grid runs them
    ("concat + AGM", {"balance": "agm"}),
    ("concat + AMCo", {"balance": "amco"}),
    ("concat + MLA", {"balance": "mla"}),
    ("concat + ReLearning", {"balance": "relearning", "relearning_every": 1}),
    ("concat + valuation", {"balance": "valuation", "valuation_warmup": 1}),
    ("concat + ReconBoost", {"balance": "reconboost"}),
    ("MMTM + Greedy", {"fusion": "mmtm", "balance": "greedy", "greedy_start": 0}),
]


def time_case(path: Path, overrides: dict, epochs: int) -> tuple[float, float, int]:
    cfg = load_config("cgmnist", {"data": str(path), "device": "cpu", "progress": False, **overrides})
    torch.manual_seed(0)
    data = load_splits(path, family="cgmnist")
    model = model_from_kwargs(model_kwargs(cfg, data))
    balancer = make_balancer(cfg, model)
    model = balancer.prepare_model(model)
    opt = build_optimizer(cfg, model.parameters())
    gen = torch.Generator().manual_seed(0)
    train_s, epoch_s = [], []
    for epoch in range(epochs):
        t0 = time.process_time()
        balancer.on_epoch_start(model, data, epoch)
        train_one_epoch(model, balancer, data.train, opt, cfg, gen)
        t1 = time.process_time()
        evaluate_split(model, data, data.val, cfg, True)
        t2 = time.process_time()
        train_s.append(t1 - t0)
        epoch_s.append(t2 - t0)
    kept = slice(1, None) if epochs > 1 else slice(None)
    return statistics.median(train_s[kept]), statistics.median(epoch_s[kept]), len(data.train)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--data", type=Path, default=None, help="an avel cgmnist file (default: render one)")
    ap.add_argument("--only", action="append", default=None, help="time only this case (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.data or Path(tmp) / "cgmnist.h5"
        if args.data is None:
            make_cgmnist(path, SMALL)
        print(f"# CG-MNIST grid models, recipe `-c cgmnist`, process CPU time, {args.epochs} epochs each")
        print("| model | training s / epoch | with val + prototypes s | train samples/s |")
        print("|---|---|---|---|")
        for label, overrides in CASES:
            if args.only and label not in args.only:
                continue
            t, w, n = time_case(path, overrides, args.epochs)
            print(f"| {label} | {t:.1f} | {w:.1f} | {n / t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
