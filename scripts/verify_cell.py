"""Does a recorded cell still hold on the current code? Re-run it and compare with mean ± 2 std.

    # re-train seed 0 of a recorded cell from its own config.toml (into --out) and compare
    python scripts/verify_cell.py runs/pmr_effect/features-ave10-a11v40 concat baseline --seed 0
    # a grid committed under docs/grids: its data path was relative to where it ran
    python scripts/verify_cell.py docs/grids/cg-t2 PMR concat --set data=data/cgmnist.h5 --out /tmp/pmr
    # compare a grid re-made by its table's command with the figure docs/results.md records
    python scripts/verify_cell.py runs/new/features-ave10-a11v40 concat baseline --recorded "66.8 ± 3.3"

Prints the recorded mean ± std, the band mean ± 2 std, each new value, the commit and machine of both,
then ``HOLDS`` (exit 0) or ``STALE`` (exit 1). On the same commit, machine and thread count a re-run seed
is identical to the recorded one; elsewhere only the band is expected to hold (docs/results.md,
"Reproducing"). Re-running a features-table seed from its config re-uses that seed's features file; to
check the whole pipeline re-make the table with its command under another ``--root``/``--runs`` and
use ``--recorded``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avel.cli import set_values
from avel.experiments.reproduce import compare_cell, parse_recorded, verify_cell


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("grid", type=Path, help="a grid directory (avel ablate / pmr_effect.py output)")
    ap.add_argument("row")
    ap.add_argument("column")
    ap.add_argument("--seed", type=int, default=0, help="the seed to re-train (default 0)")
    ap.add_argument("--out", type=Path, default=None, help="run directory of the re-run")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config value of the re-run, e.g. data=PATH (the file it ran on)")  # fmt: skip
    ap.add_argument("--recorded", help="compare GRID's finished seeds with this MEAN ± STD (%%); no training")
    ap.add_argument("--recorded-on", default="", help="commit / machine of --recorded, for the report")
    args = ap.parse_args()
    try:
        if args.recorded:
            verdict = compare_cell(
                args.grid, args.row, args.column, parse_recorded(args.recorded), args.recorded_on
            )
        else:
            out = args.out or args.grid / "verify" / f"{args.row}__{args.column}-seed{args.seed}".replace(
                " ", "-"
            )
            overrides = set_values(args.set)
            verdict = verify_cell(
                args.grid, args.row, args.column, args.seed, out, overrides, log=lambda s: None
            )
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(verdict.text())
    return 0 if verdict.holds else 1


if __name__ == "__main__":
    sys.exit(main())
