"""The CG-MNIST protocol table of docs/results.md (issue 31): paper | released protocol | clean protocol (last
epoch) | clean protocol (val-selected), rows naive / PMR concat and the uni-modal rows, from two
``avel ablate fusions`` grid directories run with ``-c cgmnist_paper`` (the clean one, and the released one:
``--set protocol=released --set pmr_subset=test``). Each figure is mean ± sample std over the finished
seeds (n = how many); gray / colored: each modality's prototype accuracy on test, ρ: the train-batch mean of
the last epoch (PMR runs). Unfinished runs are listed with their last logged epoch, runs stopped at a
non-finite loss (``stopped.json``) with the epoch they stopped at; neither is averaged in. ``--eq11 DIR``
adds the row of PMR with the paper's Eq. 11 coefficients (``--set pmr_coef=paper``, clean protocol only).
``--replace ROW:seedK=RUN`` reads the run RUN in place of a clean row's seed K (a stopped seed re-run another
way, e.g. in fp32); its figures carry a ``*`` and a line under the table names RUN.

    python scripts/cgmnist_protocol_table.py G/paper_clean G/paper_released --eq11 G/paper_clean_eq11 \
        --replace eq11:seed2=docs/grids/cg-paper/fp32-probe/eq11-s2-fp32
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from avel.experiments.ablate import stopped

EQ11 = "PMR, Eq. 11 coefficients"
PAPER = {
    "naive": 58.4,
    "PMR": 77.2,
    EQ11: 77.2,
    "colored only": 60.4,
    "gray only": 99.3,
}  # PMR Table 1, concat
KEYS = {"naive": "naive", "pmr": "PMR", "eq11": EQ11, "colored": "colored only", "gray": "gray only"}
CELLS = {"naive": "concat__baseline", "PMR": "concat__pmr", EQ11: "concat__pmr",
         "colored only": "colored-only__baseline", "gray only": "gray-only__baseline"}  # fmt: skip


def runs(grid: Path, cell: str, replace: dict[str, Path] | None = None) -> tuple[list[dict], list[str]]:
    """(results.json of the finished seeds, 'seedK: epoch E' of the unfinished or stopped ones); ``replace``:
    seed directory name -> a run read in its place (marked ``*``)."""
    done, partial = [], []
    for run in sorted((grid / cell).glob("seed*")):
        res = run / "results.json"
        if run.name in (replace or {}):
            done.append({**json.loads((replace[run.name] / "results.json").read_text()), "_mark": "*"})
        elif res.is_file():
            done.append(json.loads(res.read_text()))
        elif (stop := stopped(run)) is not None:
            partial.append(f"{run.name}: non-finite loss, stopped at epoch {stop['epoch']}")
        elif (run / "metrics.jsonl").is_file():
            lines = [ln for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
            partial.append(f"{run.name}: epoch {len(lines) - 1 if lines else '-'}")
    return done, partial


def fmt(
    values: list[float | None],
    pct: bool = True,
    n: bool = True,
    digits: int = 1,
    marks: list[str] | None = None,
) -> str:
    """mean ± sample std; with ``n``, the count and each seed's value, in seed order (with its mark)."""
    marks = [m for v, m in zip(values, marks or [""] * len(values), strict=True) if v is not None]
    vals = [v for v in values if v is not None]
    if not vals:
        return "—"
    k = 100 if pct else 1
    mean = statistics.fmean(vals) * k
    std = statistics.stdev(vals) * k if len(vals) > 1 else 0.0
    seeds = ", ".join(f"{v * k:.{digits}f}{m}" for v, m in zip(vals, marks, strict=True))
    count = f" (n={len(vals)}: {seeds})" if n else ""
    return f"{mean:.{digits}f} ± {std:.{digits}f}{count}" if pct else f"{mean:.2f}{count}"


def block(results: list[dict], key: str) -> str:
    """fused [gray / colored] of one reading of the runs (key: test, last_test or best_test_epoch)."""
    fused_key = "last_test_accuracy" if key == "last_test" else "test_accuracy"  # released: best test epoch
    fused = fmt([r.get(fused_key) for r in results], marks=[r.get("_mark", "") for r in results])
    gray = fmt([r.get(f"{key}_audio_accuracy") for r in results], n=False)
    colored = fmt([r.get(f"{key}_visual_accuracy") for r in results], n=False)
    return f"{fused} [gray {gray} / colored {colored}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clean", type=Path)
    ap.add_argument("released", type=Path, nargs="?")
    ap.add_argument("--eq11", type=Path, help="the grid of PMR with Eq. 11's coefficients (clean protocol)")
    ap.add_argument(
        "--replace", action="append", default=[], help="ROW:seedK=RUN (ROW: " + ", ".join(KEYS) + ")"
    )
    args = ap.parse_args()
    replace: dict[str, dict[str, Path]] = {}
    for item in args.replace:
        key, _, run = item.partition("=")
        row, _, seed = key.partition(":")
        if row not in KEYS or not seed.startswith("seed") or not run:
            ap.error(f"--replace {item}: expected ROW:seedK=RUN with ROW one of {', '.join(KEYS)}")
        replace.setdefault(KEYS[row], {})[seed] = Path(run)
    print(
        "| row | paper | released protocol: best test epoch (reads test while training) "
        "| clean: last epoch | clean: val-selected (val acc) | ρ end (clean, released) | unfinished |"
    )
    print("|---|---|---|---|---|---|---|")
    for row, cell in CELLS.items():
        if row == EQ11 and args.eq11 is None:
            continue
        clean, clean_part = runs(args.eq11 if row == EQ11 else args.clean, cell, replace.get(row))
        rel, rel_part = runs(args.released, cell) if args.released and row != EQ11 else ([], [])
        released = block(rel, "best_test_epoch") if rel else "—"
        last = block(clean, "last_test") if clean else "—"
        val = (
            f"{block(clean, 'test')} (val {fmt([r['val_accuracy'] for r in clean], n=False, digits=2)})"
            if clean
            else "—"
        )
        rho = ", ".join(fmt([r.get("last_rho") for r in rs], False, False) for rs in (clean, rel))
        left = "; ".join([*(f"clean {p}" for p in clean_part), *(f"released {p}" for p in rel_part)])
        print(f"| {row} | {PAPER[row]} | {released} | {last} | {val} | {rho} | {left or '—'} |")
    for row, seeds in replace.items():
        for seed, run in seeds.items():
            print(f"\\* {row}, {seed}: the run {run} in place of the grid's")


if __name__ == "__main__":
    main()
