"""bf16 autocast (``--amp``) against fp32: test accuracy over seeds on one recipe and data file (not a test:
docs/results.md). Trains ``--seeds`` seeds of each, one run after another in this process (resumable: a
finished run's results.json is read, not retrained), and prints each seed's val-selected test accuracy,
the mean ± sample std of each, and whether the bf16 mean lies within the fp32 seeds' range and within one
fp32 standard deviation of the fp32 mean.

    python scripts/bf16_accuracy.py --data data/res/cdp.h5 --config embedded_cremad --seeds 3 --out runs/bf16
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from avel.engine.config import bf16_supported, load_config, validate
from avel.engine.train import run_training


def run(args: argparse.Namespace, seed: int, amp: bool) -> dict:
    out = Path(args.out) / f"{'bf16' if amp else 'fp32'}-s{seed}"
    done = out / "results.json"
    if done.is_file():
        return json.loads(done.read_text())
    overrides = {"data": args.data, "seed": seed, "amp": amp, "out": str(out), "progress": False}
    cfg = load_config(args.config, {**overrides, "measures": False, "device": "cpu"})
    validate(cfg)
    return run_training(cfg, log=lambda s: None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--config", default="embedded_cremad")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not bf16_supported(torch.device("cpu")):
        raise SystemExit("this CPU has no native bf16: --amp would run fp32")
    acc: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for seed in range(args.seeds):
        for amp in (False, True):
            res = run(args, seed, amp)
            acc["bf16" if amp else "fp32"].append(100 * res["test_accuracy"])
            print(
                f"seed {seed} {'bf16' if amp else 'fp32'}: test {100 * res['test_accuracy']:.1f} %",
                flush=True,
            )
    mean = {k: statistics.mean(v) for k, v in acc.items()}
    std = {k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in acc.items()}
    print("| | " + " | ".join(f"seed {s}" for s in range(args.seeds)) + " | mean ± std |")
    print("|---|" + "---|" * (args.seeds + 1))
    for k, v in acc.items():
        print(f"| {k} | " + " | ".join(f"{a:.1f}" for a in v) + f" | {mean[k]:.1f} ± {std[k]:.1f} |")
    in_range = min(acc["fp32"]) <= mean["bf16"] <= max(acc["fp32"])
    in_std = abs(mean["bf16"] - mean["fp32"]) <= std["fp32"]
    print(
        f"bf16 mean - fp32 mean = {mean['bf16'] - mean['fp32']:+.1f} points; within the fp32 seeds' range: "
        f"{in_range}; within one fp32 std: {in_std}"
    )


if __name__ == "__main__":
    main()
