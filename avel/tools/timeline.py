"""A video's localization timeline (``avel predict``): the seconds on the x-axis; above, the fused model's
per-second probabilities of its top classes as a heat map; below, one track each for the annotated spans
(when known), the fused prediction and what each modality's prototype classifier (PMR Eq. 7) says alone.

    fig = timeline_figure(predict_video("runs/x/best.pt", "clip.mp4"))
    save_timeline(result, "clip.png")
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from avel.tools.figures import PALETTE, pyplot, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

TOP = 5  # event classes in the heat map (background is always its last row)
BACKGROUND = "background"
BACKGROUND_COLOUR = "#E8E8E8"
# readable under white text: Okabe & Ito's darker six, then six more dark hues (a track rarely shows more)
CLASS_COLOURS = tuple(c for c in PALETTE if c not in ("#000000", "#F0E442")) + (
    "#6A3D9A", "#8C564B", "#1B7F79", "#332288", "#882255", "#6B6B00",
)  # fmt: skip


def top_classes(probs: np.ndarray, classes: list[str], k: int = TOP) -> list[int]:
    """The ``k`` event classes with the highest probability in any second, highest first, then background."""
    bg = classes.index(BACKGROUND) if BACKGROUND in classes else None
    order = [c for c in np.argsort(-probs.max(0), kind="stable").tolist() if c != bg][:k]
    return order + ([bg] if bg is not None else [])


def tracks(result: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(name, label of each second) for every track of a timeline, top to bottom."""
    rows = []
    if "annotated" in result:
        rows.append(("annotated", list(result["annotated"])))
    rows.append(("fused model", [s["label"] for s in result["segments"]]))
    for name, m in result.get("modalities", {}).items():
        rows.append((f"{name} alone", list(m["labels"])))
    return rows


def _spans(labels: list[str]) -> list[tuple[int, int, str]]:
    """Consecutive equal labels as (start, end, label)."""
    spans: list[tuple[int, int, str]] = []
    for t, lab in enumerate(labels):
        if spans and spans[-1][2] == lab:
            spans[-1] = (spans[-1][0], t + 1, lab)
        else:
            spans.append((t, t + 1, lab))
    return spans


def _class_colours(result: dict[str, Any]) -> dict[str, str]:
    """One colour per event class of the tracks, in order of appearance (distinct up to 12 classes)."""
    names = [lab for _, labels in tracks(result) for lab in labels if lab != BACKGROUND]
    colours = {BACKGROUND: BACKGROUND_COLOUR}
    for name in dict.fromkeys(names):
        colours[name] = CLASS_COLOURS[(len(colours) - 1) % len(CLASS_COLOURS)]
    return colours


def _draw_heat(ax: Axes, probs: np.ndarray, rows: list[int], classes: list[str], cax: Axes) -> None:
    t = probs.shape[0]
    grid = probs[:, rows].T  # (rows, T)
    im = ax.imshow(grid, aspect="auto", cmap="Blues", vmin=0, vmax=1, extent=(0, t, len(rows), 0),
                   interpolation="nearest")  # fmt: skip
    for r in range(len(rows)):
        for s in range(t):
            v = grid[r, s]
            if v >= 0.005:
                ax.text(s + 0.5, r + 0.5, f"{v:.2f}", ha="center", va="center", fontsize=8.5,
                        color="white" if v > 0.55 else "0.15")  # fmt: skip
    ax.set_yticks(np.arange(len(rows)) + 0.5, [_short(classes[c], 26) for c in rows])
    ax.set_ylabel("fused model,\ntop classes")
    ax.grid(False)
    ax.tick_params(axis="y", length=0)
    ax.figure.colorbar(im, cax=cax).set_label("probability")


def _draw_tracks(ax: Axes, result: dict[str, Any], colours: dict[str, str], t: int) -> None:
    rows = tracks(result)
    for r, (_, labels) in enumerate(rows):
        for start, end, lab in _spans(labels):
            ax.add_patch(_rect(start, r, end - start, colours.get(lab, BACKGROUND_COLOUR)))
            if lab != BACKGROUND:
                ax.text((start + end) / 2, r + 0.5, _short(lab, int(5.5 * (end - start))), ha="center",
                        va="center", fontsize=9, color="white", fontweight="bold")  # fmt: skip
    ax.set_xlim(0, t)
    ax.set_ylim(len(rows), 0)
    ax.set_yticks(np.arange(len(rows)) + 0.5, [name for name, _ in rows])
    ax.tick_params(axis="y", length=0)
    ax.grid(False)
    ax.spines[["left", "bottom"]].set_visible(False)


def _rect(x: float, y: float, w: float, colour: str) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x + 0.03, y + 0.1), w - 0.06, 0.8, facecolor=colour, edgecolor="none")


def _short(text: str, width: int) -> str:
    width = max(width, 3)
    return text if len(text) <= width else text[: width - 1] + "…"


def timeline_figure(result: dict[str, Any]) -> Figure:
    """The timeline of one ``predict_video`` record."""
    plt = pyplot()
    classes = list(result["classes"])
    probs = np.asarray(result["probabilities"], dtype=float)  # (T, C)
    t = probs.shape[0]
    rows = top_classes(probs, classes)
    n_tracks = len(tracks(result))
    fig = plt.figure(figsize=(10, 0.36 * len(rows) + 0.42 * n_tracks + 1.2))
    gs = fig.add_gridspec(2, 2, width_ratios=[60, 1], height_ratios=[len(rows), 1.15 * n_tracks],
                          hspace=0.1, wspace=0.02)  # fmt: skip
    ax_h = fig.add_subplot(gs[0, 0])
    ax_t = fig.add_subplot(gs[1, 0], sharex=ax_h)
    _draw_heat(ax_h, probs, rows, classes, fig.add_subplot(gs[0, 1]))
    _draw_tracks(ax_t, result, _class_colours(result), t)
    ax_h.tick_params(axis="x", labelbottom=False, length=0)
    ax_t.set_xticks(range(t + 1))
    ax_t.set_xlabel("time (s)")
    ax_t.tick_params(axis="x", length=3)
    title = Path(result["video"]).name + (f"  —  {result['model']}" if result.get("model") else "")
    ax_h.set_title(title, loc="left", fontsize=12)
    note = "grey: background"
    if result.get("modalities"):
        note += (
            f"; each modality alone: its nearest prototype (PMR Eq. 7), prototypes: {result['prototypes']}"
        )
    ax_t.annotate(note, (0, 0), xycoords="axes fraction", xytext=(0, -40), textcoords="offset points",
                  va="top", fontsize=8.5, color="0.35")  # fmt: skip
    return fig


def save_timeline(result: dict[str, Any], path: str | Path) -> Path:
    """Draw ``result``'s timeline to ``path`` (PNG)."""
    return save_figure(timeline_figure(result), path)
