"""PMR's signals per epoch of one or more run directories (from metrics.jsonl): ρ (Eq. 8), β / γ (Eq. 11),
each modality's prototypical cross-entropy (Eq. 9) and prototype accuracy on the train batches, and the val
accuracies (fused; each modality by its prototypes).

    python scripts/pmr_logs.py runs/grid/concat__pmr/seed0 [more run dirs]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEYS = [
    ("rho", "ρ"),
    ("beta", "β"),
    ("gamma", "γ"),
    ("pce_audio", "PCE 1"),
    ("pce_visual", "PCE 2"),
    ("proto_acc_audio", "proto acc 1 (train)"),
    ("proto_acc_visual", "proto acc 2 (train)"),
    ("val_accuracy", "val"),
    ("val_audio_accuracy", "val 1"),
    ("val_visual_accuracy", "val 2"),
]


def run_table(run_dir: Path) -> str:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    keys = [(k, name) for k, name in KEYS if any(k in r for r in rows)]
    lines = [f"`{run_dir}`", "", "| epoch | " + " | ".join(n for _, n in keys) + " |"]
    lines.append("|---|" + "---|" * len(keys))
    for r in rows:
        cells = [f"{r[k]:.2f}" if isinstance(r.get(k), float) else "" for k, _ in keys]
        lines.append(f"| {r['epoch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(run_table(Path(d)) for d in sys.argv[1:]))
