"""Epoch times of the runs of an ``avel ablate`` grid directory, per cell: median over every epoch of every
seed of ``train_time_s`` (training only), ``time_s`` (with prototypes and val) and samples/s.

    python scripts/grid_times.py runs/cgmnist-table1
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def cell_times(cell: Path) -> dict[str, float] | None:
    rows = []
    for metrics in sorted(cell.glob("seed*/metrics.jsonl")):
        rows += [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    if not rows:
        return None
    return {
        "epochs": len(rows),
        "train_s": statistics.median(r["train_time_s"] for r in rows),
        "epoch_s": statistics.median(r["time_s"] for r in rows),
        "samples_per_s": statistics.median(r["samples_per_s"] for r in rows),
    }


def main(grid: str) -> None:
    print("| cell | epochs timed | train s / epoch | epoch s (with prototypes + val) | train samples/s |")
    print("|---|---|---|---|---|")
    for cell in sorted(p for p in Path(grid).iterdir() if p.is_dir()):
        t = cell_times(cell)
        if t:
            print(
                f"| {cell.name} | {t['epochs']} | {t['train_s']:.1f} | {t['epoch_s']:.1f} | "
                f"{t['samples_per_s']:.0f} |"
            )


if __name__ == "__main__":
    main(sys.argv[1])
