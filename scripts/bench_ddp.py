"""Training throughput on 1 and 2 processes (``torchrun``, gloo on CPUs / NCCL on GPUs) and the scaling
efficiency = N-process throughput / (N x 1-process throughput). Not a test: BENCHMARKS.md.

Writes an AVE-shaped features file (``bench_load.write_file``: 7x7x512 maps, 8 : 1 : 1 splits), then runs
``torchrun --standalone --nproc-per-node N -m avel train`` on it for each N, one torch thread per process
on a CPU, and reads ``samples_per_s`` (global samples per second of training, rank 0's clock) from the run's
metrics.jsonl: the median over the epochs after the first. ``--batch-size`` is the global batch.

    python scripts/bench_ddp.py --videos 256 --epochs 4
    python scripts/bench_ddp.py --videos 2048 --epochs 4 --procs 1 2 4 8 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_load import write_file


def throughput(data: Path, procs: int, args: argparse.Namespace, out: Path) -> float:
    """Median global samples/s of ``procs`` training processes (epochs after the first)."""
    run = out / f"run{procs}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"]
    cmd += [
        "-m",
        "avel",
        "train",
        str(data),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
    ]
    cmd += ["--balance", args.balance, "--device", args.device, "--no-progress", "--out", str(run)]
    cmd += ["--eval-every", str(args.epochs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run(cmd, check=True, env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True)
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(ln["samples_per_s"] for ln in lines[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=256)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--balance", default="pmr")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (CPU)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "bench.h5"
        write_file(data, args.videos, 0.8, 0.1)
        base = None
        print("| processes | samples/s | efficiency |")
        print("|---|---|---|")
        for n in args.procs:
            tp = throughput(data, n, args, Path(tmp))
            base = base if base is not None else tp / args.procs[0]
            print(f"| {n} | {tp:.0f} | {tp / (n * base):.2f} |", flush=True)


if __name__ == "__main__":
    main()
