"""Each cell of a grid directory: test accuracy (mean ± std, per seed) and each modality's prototype accuracy.

    python scripts/modality_table.py runs/e2e-fusions [more grid dirs]

The modality accuracies are those of the prototype classifiers on h^a / h^v (test event segments, prototypes
from train), as `avel evaluate` reports them: they show which modality the fused model under-uses.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from avel.engine.provenance import describe


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * std:.1f}"


def table(grid_dir: Path) -> str:
    grid = json.loads((grid_dir / "grid.json").read_text())
    produced_on: dict[str, None] = {}
    first = next(iter(sorted(grid_dir.glob("*/seed*/results.json"))), None)
    names = (
        json.loads(first.read_text()).get("modalities", ["audio", "visual"]) if first else ["audio", "visual"]
    )
    lines = [
        f"`{grid['command']}`",
        "",
        "| row | column | seeds | test accuracy | per seed | "
        f"{names[0]} (prototypes) | {names[1]} (prototypes) |",
        "|---|---|---|---|---|---|---|",
    ]
    for cell in grid["cells"]:
        paths = sorted((grid_dir / cell["name"]).glob("seed*/results.json"))
        runs = [json.loads(p.read_text()) for p in paths]
        produced_on.update({describe(r.get("provenance", {})): None for r in runs})
        if cell.get("na_reason") or not runs:
            continue
        acc = [r["test_accuracy"] for r in runs]
        a = [r["test_audio_accuracy"] for r in runs if "test_audio_accuracy" in r]
        v = [r["test_visual_accuracy"] for r in runs if "test_visual_accuracy" in r]
        per_seed = ", ".join(f"{100 * x:.1f}" for x in acc)
        cells = [cell["row"], cell["column"], str(len(runs)), mean_std(acc), per_seed]
        cells += [mean_std(a), mean_std(v)]
        lines.append("| " + " | ".join(cells) + " |")
    lines[1:1] = ["", *[f"Produced on {p}." for p in produced_on]]
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(Path(d)) for d in sys.argv[1:]))
