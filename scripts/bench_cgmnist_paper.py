"""Training throughput of the CG-MNIST paper recipe (``-c cgmnist_paper``: concat, SGD, batch 64, bf16
autocast, fused stem) on CPU: main's path before this work (4fb2b48: the two encoders one after the other,
the stem's convolution on NCHW input; on one torch thread, and on ``--threads`` intra-op threads) beside
what ``cgmnist_paper`` now runs: the stem's convolution on channels_last input (``stem_channels_last``) and
the two encoders on two threads (``encoder_threads = 2``, one intra-op thread each), and the channels_last
stem alone; interleaved epoch-slices on the same data so that a shared machine's load hits every path alike
(not a test: BENCHMARKS.md).

Each slice trains ``--steps`` optimizer steps of one path from ``train_one_epoch`` on a fixed-size subset of
the train split, then runs the evaluation passes the config runs (val every epoch, bf16, batch 256; the
prototype pass over train with each modality's accuracy on epochs 0, 10, ..., 90 and 99, fp32). Figures:
samples/s in process CPU time (every thread of the process), in wall time (a shared machine's load), and,
for the encoder threads, on the critical path: the calling thread's CPU time outside the encoders plus, per
encoder pass, the longer of its two threads' CPU times (``avel.models.threads.record_times``), i.e. the wall
time of two idle cores, waits for the other thread aside. The projection of one 100-epoch run (54,000 train
+ 6,000 val) uses CPU time for one thread and the critical path for the encoder threads:

    python scripts/bench_cgmnist_paper.py --data /path/cg60k.h5 --rounds 3 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from avel.data.splits import SplitData
from avel.engine.config import load_config
from avel.engine.cpu_memory import keep_freed_memory
from avel.engine.evaluate import evaluate, train_prototypes
from avel.engine.train import build_optimizer, make_balancer, modality_epoch, train_one_epoch
from avel.families import build_model, load_splits
from avel.models import encoders, threads
from avel.synth.cgmnist import make_cgmnist, small

BASE = "main 4fb2b48 (NCHW stem, encoders in turn, 1 thread)"
NEW = "channels_last stem + encoder_threads = 2"


@contextlib.contextmanager
def stem_layout(channels_last: bool) -> Iterator[None]:
    """main's NCHW stem convolution (``channels_last`` false) or the channels_last one (true)."""
    before = encoders.stem_channels_last
    if not channels_last:
        encoders.stem_channels_last = lambda x, weight: False
    try:
        yield
    finally:
        encoders.stem_channels_last = before


def setup(path: Path, balance: str, encoder_threads: int):
    overrides = {"device": "cpu", "progress": False, "balance": balance, "encoder_threads": encoder_threads}
    cfg = load_config("cgmnist_paper", {"data": str(path), **overrides})
    torch.manual_seed(0)
    model = build_model("cgmnist", cfg.fusion, input_mode="e2e", num_classes=10, cg_stem=cfg.cg_stem)
    balancer = make_balancer(cfg, model)
    return cfg, model, balancer, build_optimizer(cfg, model.parameters())


def subset(split: SplitData, n: int) -> SplitData:
    return SplitData(split.audio[:n], split.visual[:n], split.labels[:n], split.transform)


def timed(fn) -> tuple[float, float, float]:
    """(wall s, process CPU s, critical-path s) of ``fn()``: the calling thread's CPU time outside the
    encoder passes plus each pass's longer thread (without encoder threads: the calling thread's CPU time)."""
    with threads.record_times() as times:
        t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
        fn()
        wall, cpu, main = time.perf_counter() - t0, time.process_time() - c0, time.thread_time() - m0
    return wall, cpu, main - times.calling + times.critical


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="an avel cgmnist file (default: a small one)")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per slice")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved slices per path")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of main's path (1: left out)")
    ap.add_argument("--train", type=int, default=54000, help="train samples of the projected run")
    ap.add_argument("--val", type=int, default=6000, help="val samples of the projected run")
    ap.add_argument("--balance", default="none", help="none | pmr (prototypes once per slice)")
    ap.add_argument(
        "--malloc",
        choices=("keep", "default"),
        default="keep",
        help="keep: glibc keeps freed memory (keep_freed_memory, what CPU training now sets; process-wide, "
        "so main's glibc default needs a run of its own: --malloc default)",
    )
    args = ap.parse_args()
    if args.malloc == "keep":
        keep_freed_memory()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.data or Path(tmp) / "cg.h5"
        if args.data is None:
            make_cgmnist(path, small(train=3000, test=100))
        data = load_splits(path, family="cgmnist")
        n = args.steps * 64
        data.train = sub = subset(data.train, n)
        val = subset(data.val, min(n, len(data.val)))
        # (encoder threads, torch threads given to the run, channels_last stem)
        paths = {BASE: (1, 1, False), "channels_last stem, 1 thread": (1, 1, True), NEW: (2, 2, True)}
        if args.threads > 1:
            paths[f"main, {args.threads} intra-op threads"] = (1, args.threads, False)
        runs = {name: setup(path, args.balance, enc) for name, (enc, _, _) in paths.items()}
        kinds = ("wall", "cpu", "critical")
        got: dict[str, dict[str, list[float]]] = {k: {} for k in paths}
        gen = torch.Generator().manual_seed(0)
        for r in range(args.rounds + 1):  # round 0 warms up
            for name, (cfg, model, balancer, opt) in runs.items():
                torch.set_num_threads(paths[name][1])  # encoder_threads(2) shares them out: 1 each
                with threads.encoder_threads(cfg.encoder_threads), stem_layout(paths[name][2]):

                    def train(cfg=cfg, model=model, balancer=balancer, opt=opt, r=r) -> None:
                        balancer.on_epoch_start(model, data, r)
                        train_one_epoch(model, balancer, sub, opt, cfg, gen)

                    passes = {
                        "train": (train, n),
                        "eval": (lambda model=model, cfg=cfg: evaluate(model, val, amp=cfg.amp), len(val)),
                        "proto": (lambda model=model: train_prototypes(model, sub), n),
                    }
                    for part, (fn, samples) in passes.items():
                        seconds = timed(fn)
                        if r:
                            for kind, s in zip(kinds, seconds, strict=True):
                                got[name].setdefault(f"{part} {kind}", []).append(samples / s)
    torch.set_num_threads(1)
    cfg = runs[BASE][0]
    protos = sum(modality_epoch(cfg, e) for e in range(cfg.epochs))  # epochs with each modality's accuracy

    def projected(rates: dict[str, float], kind: str) -> float:
        """Minutes of one run: epochs x (train + val) + the prototype passes (train + val) on their epochs."""
        train_s = cfg.epochs * args.train / rates[f"train {kind}"]
        eval_s = (cfg.epochs + protos) * args.val / rates[f"eval {kind}"]
        return (train_s + eval_s + protos * args.train / rates[f"proto {kind}"]) / 60

    print(
        f"# malloc {args.malloc}; -c cgmnist_paper, balance {args.balance}, {args.rounds} interleaved slices "
        f"of {n} train samples "
        f"per path (+ {len(val)} val, no-grad); projection: {cfg.epochs} epochs of {args.train} + val "
        f"{args.val} every epoch + {protos} prototype passes"
    )
    print(
        "| path | train samples/s: CPU time / wall / critical path | eval samples/s (CPU / crit.) | "
        "100 epochs: CPU time | 100 epochs: critical path (2 idle cores) | 100 epochs: wall (shared) |"
    )
    print("|---|---|---|---|---|---|")
    medians = {k: {m: statistics.median(v) for m, v in got[k].items()} for k in paths}
    for name, m in medians.items():
        intra = paths[name][1] > paths[name][0]  # intra-op threads: their critical path is not measured here
        crit = (
            ("n/a", "n/a", "n/a")
            if intra
            else (
                f"{m['train critical']:.0f}",
                f"{m['eval critical']:.0f}",
                f"{projected(m, 'critical'):.0f} min",
            )
        )
        print(
            f"| {name} | {m['train cpu']:.0f} / {m['train wall']:.0f} / {crit[0]} | {m['eval cpu']:.0f} / "
            f"{crit[1]} | {projected(m, 'cpu'):.0f} min | {crit[2]} | {projected(m, 'wall'):.0f} min |"
        )
    base = medians[BASE]
    for name, m in medians.items():
        if name == NEW:
            print(
                f"{name} / main: train {m['train cpu'] / base['train cpu']:.2f}x (CPU time), "
                f"{m['train critical'] / base['train critical']:.2f}x (critical path), "
                f"{m['train wall'] / base['train wall']:.2f}x (wall); 100 epochs "
                f"{projected(base, 'critical') / projected(m, 'critical'):.2f}x (critical path)"
            )
        elif name != BASE:
            print(
                f"{name} / main: train {m['train cpu'] / base['train cpu']:.2f}x (CPU time), "
                f"{m['train wall'] / base['train wall']:.2f}x (wall)"
            )


if __name__ == "__main__":
    main()
