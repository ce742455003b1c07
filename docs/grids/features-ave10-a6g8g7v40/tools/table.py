"""Per-seed calibration table of a drive.py run (issue 25 criteria)."""

import json
import statistics as st
import sys
from pathlib import Path

name, seeds = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
root = Path("/work/grids/w25c")
cols = ["audio enc", "visual enc", "audio-only", "visual-only", "concat", "concat+PMR", "dmrn", "dmrn+PMR"]
paths = [
    "{n}-s{s}-audio",
    "{n}-s{s}-visual",
    "runs/{n}/audio-only__baseline/seed{s}",
    "runs/{n}/visual-only__baseline/seed{s}",
    "runs/{n}/concat__baseline/seed{s}",
    "runs/{n}/concat__pmr/seed{s}",
    "runs/{n}/dmrn__baseline/seed{s}",
    "runs/{n}/dmrn__pmr/seed{s}",
]
vals = {c: [] for c in cols}
rows = []
for s in seeds:
    row, floor = {}, None
    for c, p in zip(cols, paths, strict=True):
        f = root / p.format(n=name, s=s) / "results.json"
        if f.exists():
            r = json.loads(f.read_text())
            row[c] = 100 * r["test_accuracy"]
            floor = floor or (100 * r["test_always_background"] if r.get("test_always_background") else None)
            vals[c].append(row[c])
    rows.append((s, row, floor))
cols = [c for c in cols if vals[c]]
print("| seed | floor | " + " | ".join(cols) + " | criteria |")
print("|---" * (len(cols) + 3) + "|")
for s, row, floor in rows:
    fused = [row[c] for c in ("concat", "concat+PMR", "dmrn", "dmrn+PMR") if c in row]
    crit = []
    if "audio-only" in row and "visual-only" in row:
        crit.append("A≥V+10 " + ("yes" if row["audio-only"] >= row["visual-only"] + 10 else "NO"))
    if fused and "audio-only" in row:
        crit.append("fusion>A " + ("yes" if min(fused) > row["audio-only"] else "NO"))
    if row:
        crit.append("max<95 " + ("yes" if max(row.values()) < 95 else "NO"))
    if floor and "audio enc" in row and "visual enc" in row:
        crit.append(
            "enc≥floor+15 " + ("yes" if min(row["audio enc"], row["visual enc"]) >= floor + 15 else "NO")
        )
    cells = " | ".join(f"{row[c]:.1f}" if c in row else "—" for c in cols)
    print(f"| {s} | {floor or 0:.1f} | {cells} | {', '.join(crit)} |")
ms = " | ".join(
    f"{st.mean(vals[c]):.1f} ± {st.stdev(vals[c]):.1f}" if len(vals[c]) > 1 else "—" for c in cols
)
print(f"| mean ± std | | {ms} | |")
