"""Speed options against fp32: test accuracy over seeds on one recipe and data file (not a test:
docs/results.md). Trains ``--seeds`` seeds of fp32 (the reference) and of each variant of ``--variants``
(bf16: ``amp = true``; channels_last: ``cpu_conv_layout = "channels_last"``; bf16+channels_last: both), one
run after another in this process (resumable: a finished run's results.json is read, not retrained; run
directories OUT/VARIANT-s{seed}). Prints each run's val-selected test accuracy, whether a channels_last run
really trained channels_last (the probe's verdict in its results.json: a refused probe makes that run an
fp32/bf16 NCHW run, and the comparison vacuous), the mean ± sample std of each variant, and whether each
variant's mean lies within the fp32 seeds' range and within one fp32 standard deviation of the fp32 mean.

    python scripts/option_accuracy.py --data data/res/cdp.h5 --config embedded_cremad --seeds 3 --out runs/opt
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from avel.engine.config import bf16_supported, load_config, validate
from avel.engine.train import run_training

REFERENCE = "fp32"
CHANNELS_LAST = {"cpu_conv_layout": "channels_last"}
VARIANTS: dict[str, dict[str, Any]] = {
    REFERENCE: {},
    "bf16": {"amp": True},
    "channels_last": CHANNELS_LAST,
    "bf16+channels_last": {"amp": True, **CHANNELS_LAST},
}


def parse_variants(text: str) -> list[str]:
    """``"bf16,channels_last"`` -> the reference and those variants, in order, each once."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variant {unknown[0]!r}; known: {', '.join(VARIANTS)}")
    return list(dict.fromkeys([REFERENCE, *names]))


def layout_note(variant: str, res: dict[str, Any]) -> str:
    """For a variant that asks for channels_last: whether its run trained so (the probe's recorded verdict),
    else ""."""
    if "cpu_conv_layout" not in VARIANTS[variant]:
        return ""
    verdict = res.get("cpu_conv_layout")
    if verdict is None:
        return "; NO PROBE VERDICT RECORDED: this run did not train channels_last, the check is VACUOUS"
    if verdict["layout"] != "channels_last":
        return f"; PROBE REFUSED channels_last, trained NCHW, the check is VACUOUS: {verdict['reason']}"
    passes = ", ".join(f"{n} {k}" for k, n in verdict.get("encoder_passes", {}).items())
    return f"; channels_last used ({verdict['reason']}; encoder passes: {passes or 'not recorded'})"


def run(args: argparse.Namespace, seed: int, variant: str) -> dict[str, Any]:
    out = Path(args.out) / f"{variant}-s{seed}"
    done = out / "results.json"
    if done.is_file():
        return json.loads(done.read_text())
    overrides = {"data": args.data, "seed": seed, "out": str(out), "progress": False, **VARIANTS[variant]}
    cfg = load_config(args.config, {**overrides, "measures": False, "device": "cpu"})
    validate(cfg)
    return run_training(cfg, log=lambda s: print(f"  {s}", flush=True) if "channels_last" in s else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--config", default="embedded_cremad")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", type=parse_variants, default="bf16,channels_last,bf16+channels_last")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if any(VARIANTS[v].get("amp") for v in args.variants) and not bf16_supported(torch.device("cpu")):
        raise SystemExit("error: this CPU has no native bf16: --amp would run fp32")
    acc: dict[str, list[float]] = {v: [] for v in args.variants}
    vacuous: set[str] = set()
    for seed in range(args.seeds):
        for variant in args.variants:
            res = run(args, seed, variant)
            acc[variant].append(100 * res["test_accuracy"])
            note = layout_note(variant, res)
            vacuous |= {variant} if "VACUOUS" in note else set()
            print(f"seed {seed} {variant}: test {100 * res['test_accuracy']:.1f} %{note}", flush=True)
    mean = {k: statistics.mean(v) for k, v in acc.items()}
    std = {k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in acc.items()}
    print("| | " + " | ".join(f"seed {s}" for s in range(args.seeds)) + " | mean ± std |")
    print("|---|" + "---|" * (args.seeds + 1))
    for k, v in acc.items():
        print(f"| {k} | " + " | ".join(f"{a:.1f}" for a in v) + f" | {mean[k]:.1f} ± {std[k]:.1f} |")
    ref = acc[REFERENCE]
    for k in args.variants[1:]:
        in_range = min(ref) <= mean[k] <= max(ref)
        in_std = abs(mean[k] - mean[REFERENCE]) <= std[REFERENCE]
        print(
            f"{k} mean - fp32 mean = {mean[k] - mean[REFERENCE]:+.1f} points; within the fp32 seeds' range: "
            f"{in_range}; within one fp32 std: {in_std}"
            + (" -- VACUOUS: channels_last was refused in some of its runs" if k in vacuous else "")
        )


if __name__ == "__main__":
    main()
