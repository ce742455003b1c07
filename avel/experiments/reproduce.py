"""Does a recorded table still hold? Re-run one cell of a grid on the current code and compare.

A cell's recorded result is its mean ± sample std over seeds (a grid directory's runs, or the figure printed
in docs/results.md). ``verify_cell`` re-trains one seed of the cell from that run's own ``config.toml`` and
says whether the new test accuracy falls within mean ± 2 std; ``compare_cell`` does the same for the
finished seeds of another grid (e.g. the table re-made by its command on the current code).

    python scripts/verify_cell.py runs/pmr_effect/features-ave10-a11v40 concat baseline --seed 0
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avel.engine.config import apply, load_config
from avel.engine.provenance import code_version, describe
from avel.experiments.ablate import CellSummary, tabulate


@dataclass
class Verdict:
    """New test accuracies (fractions) against a recorded mean ± std (fractions)."""

    label: str
    recorded_mean: float
    recorded_std: float
    new: list[float]
    recorded_on: str = ""  # provenance of the recorded runs
    new_on: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def band(self) -> tuple[float, float]:
        return self.recorded_mean - 2 * self.recorded_std, self.recorded_mean + 2 * self.recorded_std

    @property
    def inside(self) -> list[bool]:
        lo, hi = self.band
        return [lo - 1e-9 <= x <= hi + 1e-9 for x in self.new]

    @property
    def holds(self) -> bool:
        return all(self.inside)

    def text(self) -> str:
        lo, hi = self.band
        pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
        new = ", ".join(
            f"{pct(x)}{'' if ok else ' (outside)'}" for x, ok in zip(self.new, self.inside, strict=True)
        )
        lines = [
            f"{self.label}: recorded {pct(self.recorded_mean)} ± {pct(self.recorded_std)} "
            f"(mean ± 2 std: {pct(lo)}-{pct(hi)}); new: {new}",
        ]
        if self.recorded_on:
            lines.append(f"  recorded on {self.recorded_on}")
        if self.new_on:
            lines.append(f"  new on {self.new_on}")
        lines += [f"  {n}" for n in self.notes]
        lines.append(
            "HOLDS: within recorded mean ± 2 std" if self.holds else "STALE: outside recorded mean ± 2 std"
        )
        return "\n".join(lines)


def parse_recorded(text: str) -> tuple[float, float]:
    """``"66.8 ± 3.3"`` or ``"66.8,3.3"`` (percent, as the tables print them) -> (0.668, 0.033)."""
    parts = [p for p in text.replace("±", ",").replace("+-", ",").split(",") if p.strip()]
    if len(parts) != 2:
        raise ValueError(f"--recorded {text!r}: expected MEAN ± STD in percent, e.g. '66.8 ± 3.3'")
    mean, std = (float(p) / 100 for p in parts)
    return mean, std


def _summary(grid_dir: Path, row: str, column: str) -> CellSummary:
    table = tabulate(Path(grid_dir))
    summary = table.cell(row, column)
    if summary.na_reason:
        raise ValueError(f"{grid_dir}: cell {row} / {column} is n/a ({summary.na_reason})")
    return summary


def _run_provenance(run_dir: Path) -> str:
    res = json.loads((run_dir / "results.json").read_text())
    return describe(res.get("provenance", {}))


def verify_cell(
    grid_dir: Path,
    row: str,
    column: str,
    seed: int,
    out: Path,
    overrides: dict[str, Any] | None = None,
    log=print,
) -> Verdict:
    """Re-train seed ``seed`` of a recorded cell from its run's config.toml into ``out``; compare."""
    from avel.engine.train import run_training

    summary = _summary(grid_dir, row, column)
    if len(summary.accuracies) < 1:
        raise ValueError(f"{grid_dir}: cell {row} / {column} has no finished run to verify")
    run_dir = Path(grid_dir) / summary.cell.name / f"seed{seed}"
    if not (run_dir / "results.json").is_file():
        raise ValueError(f"{run_dir}: no finished run of seed {seed} (finished: {summary.run_dirs})")
    cfg = load_config(run_dir / "config.toml")
    cfg = apply(cfg, {**(overrides or {}), "out": str(out), "progress": False}, "verify")
    result = run_training(cfg, log=log)
    recorded_seed = json.loads((run_dir / "results.json").read_text())["test_accuracy"]
    same = "is identical to" if result["test_accuracy"] == recorded_seed else "differs from"
    verdict = Verdict(
        f"{row} / {column}, seed {seed}",
        statistics.fmean(summary.accuracies),
        statistics.stdev(summary.accuracies) if len(summary.accuracies) > 1 else 0.0,
        [result["test_accuracy"]],
        recorded_on=_run_provenance(run_dir),
        new_on=describe(result["provenance"]),
    )
    verdict.notes.append(f"the new run {same} the recorded seed {seed} ({100 * recorded_seed:.1f})")
    if len(summary.accuracies) == 1:
        verdict.notes.append("one recorded seed: std 0, only an identical value holds")
    return verdict


def compare_cell(
    grid_dir: Path, row: str, column: str, recorded: tuple[float, float], recorded_on: str = ""
) -> Verdict:
    """The finished seeds of a cell of ``grid_dir`` against a recorded (mean, std), e.g. a docs table's."""
    summary = _summary(grid_dir, row, column)
    if not summary.accuracies:
        raise ValueError(f"{grid_dir}: cell {row} / {column} has no finished run")
    table = tabulate(Path(grid_dir))
    verdict = Verdict(
        f"{row} / {column}",
        *recorded,
        summary.accuracies,
        recorded_on=recorded_on,
        new_on="; ".join(table.produced_on),
    )
    verdict.notes.append(
        f"new mean {100 * statistics.fmean(summary.accuracies):.1f} over {len(summary.accuracies)} seed(s)"
    )
    current = code_version()
    dirty = " (+ uncommitted changes)" if current["dirty"] else ""
    verdict.notes.append(f"current code: commit {current['commit'][:7]}{dirty}")
    return verdict
