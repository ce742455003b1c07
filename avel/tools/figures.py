"""The house style of every avel figure (``avel plot``, ``avel predict``'s timelines, ``avel ablate table
--plot``): matplotlib without a display, type sized to stay readable when a README or a paper column shrinks
the figure, a colour-blind-safe palette (Okabe & Ito), PNGs written whole (temporary file, then renamed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Okabe & Ito (2008), the colour-blind-safe qualitative palette
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
DPI = 150
STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "legend.title_fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 2.0,
    "lines.markersize": 5,
    "legend.frameon": False,
}


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed) with avel's style applied."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
    return plt


def run_colour(i: int) -> str:
    """The i-th run's colour, the same in every panel of a figure."""
    return PALETTE[i % len(PALETTE)]


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG to ``path`` whole (a temporary file, then renamed) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight", pad_inches=0.08)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
