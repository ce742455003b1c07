"""A grid's table as a picture (``avel ablate table DIR --plot``): per cell the mean test accuracy over seeds
as a bar with its sample standard deviation, each seed as a point, and the PMR paper's number as a marker
where it publishes one (``avel.experiments.published``).

    fig = table_figure(tabulate(Path("runs/cg-fusions")))
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from avel.tools.figures import pyplot, run_colour, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from avel.experiments.ablate import Table

PAPER_MARKER = {"marker": "D", "s": 46, "facecolor": "white", "edgecolor": "black", "linewidths": 1.4}


def _bottom(values: list[float]) -> float:
    """The y-axis floor: 10 points below the lowest value, on a multiple of 10 (0 at most)."""
    return max(0.0, 10 * np.floor((min(values) - 8) / 10)) if values else 0.0


def table_figure(table: Table) -> Figure:
    """Grouped bars: one group per row of the table, one bar per column (mean ± sample std over seeds, in
    %), the seeds as points, the paper's value as a white diamond; n/a cells are labelled, not drawn."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    plt = pyplot()
    rows = [(label, cells) for label, cells in table.rows if any(not c.na_reason for c in cells)]
    ncol = len(table.columns)
    width = 0.8 / ncol
    values = [100 * a for _, cells in rows for c in cells for a in c.accuracies]
    values += [c.published for _, cells in rows for c in cells if c.published is not None]
    bottom = _bottom(values)
    fig, ax = plt.subplots(figsize=(max(5.5, 0.55 * ncol * len(rows) + 2.2), 4.0))
    rng = np.random.default_rng(0)  # the seeds' horizontal jitter, the same on every redraw
    for j in range(ncol):
        for i, (_, cells) in enumerate(rows):
            s, x = cells[j], i + (j - (ncol - 1) / 2) * width
            if s.na_reason:
                ax.text(x, bottom + 1, "n/a", ha="center", va="bottom", fontsize=9, color="0.4", rotation=90)
                continue
            if s.accuracies:
                bar = {"color": run_colour(j), "alpha": 0.85, "capsize": 4, "error_kw": {"elinewidth": 1.3}}
                ax.bar(x, 100 * s.mean - bottom, width * 0.9, bottom=bottom, yerr=100 * s.std, **bar)
                jitter = rng.uniform(-0.08, 0.08, len(s.accuracies)) * width  # seeds left of the error bar
                seeds = [100 * a for a in s.accuracies]
                ax.scatter(
                    x - 0.22 * width + jitter, seeds, s=16, color="black", edgecolor="white", lw=0.5, zorder=3
                )
            if s.published is not None:  # right of the error bar
                ax.scatter([x + 0.24 * width], [s.published], zorder=4, **PAPER_MARKER)
    ax.set_xticks(range(len(rows)), [label for label, _ in rows], rotation=20 if len(rows) > 8 else 0)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    top = max(values, default=100)
    ax.set_ylim(bottom, top + 4)  # room for a marker at the top (a paper value of 99.3)
    ax.set_yticks([v for v in ax.get_yticks() if bottom <= v <= min(100.0, top + 4)])
    ax.set_ylabel("test accuracy (%)")
    ax.grid(axis="x", visible=False)
    ax.set_title(table.title, loc="left", fontsize=11.5)
    seeds = max((c.seeds for _, cells in rows for c in cells), default=0)
    handles = [Patch(color=run_colour(j), alpha=0.85, label=c) for j, c in enumerate(table.columns)]
    handles.append(Line2D([], [], ls="", marker="o", ms=4, color="black", label=f"each seed (of {seeds})"))
    if any(c.published is not None for _, cells in rows for c in cells):
        paper = {"marker": "D", "ms": 6, "mfc": "white", "mec": "black", "mew": 1.4}
        handles.append(Line2D([], [], ls="", **paper, label="paper (Fan et al., 2023)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="bar: mean ± std")
    fig.tight_layout()
    return fig


def save_table_figure(table: Table, path: str | Path) -> Path:
    """Draw ``table`` to ``path`` (PNG)."""
    return save_figure(table_figure(table), path)
