"""``avel plot``: PMR's Fig. 4 from run directories — the fused accuracy, each modality's accuracy and the
imbalance ratio ρ over epochs, runs overlaid (naive vs rebalanced) — or, with ``--all``, every logged key.

    fig = fig4_figure([Path("runs/naive"), Path("runs/pmr")])   # a matplotlib Figure
    plot_runs([Path("runs/naive"), Path("runs/pmr")], "fig4.png")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avel.tools.figures import pyplot, run_colour, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# per-epoch keys that are bookkeeping, not signals worth a panel
_SKIP = {"epoch", "lr", "time_s", "train_time_s", "prototype_time_s", "samples_per_s"}
_MAIN = ["val_accuracy", "val_audio_accuracy", "val_visual_accuracy", "val_rho", "rho"]
_TITLES = {
    "val_accuracy": "fused accuracy (val)",
    "val_rho": "imbalance ratio ρ (val, Eq. 8)",
    "rho": "imbalance ratio ρ (train batches, Eq. 8)",
}
BALANCE_LABEL = {
    "none": "naive",
    "pmr": "PMR",
    "ogm-ge": "OGM-GE",
    "ogm": "OGM",
    "opm": "OPM",
    "iprm": "IPRM",
    "dropout": "dropout",
    "gblend": "G-Blend",
}
MODALITY_STYLE = ({"ls": "-", "marker": "o"}, {"ls": "--", "marker": "s"})  # first, second modality


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (is this an avel run directory?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def run_labels(run_dirs: list[Path]) -> list[str]:
    """``naive · concat``, ``PMR · concat``; the seed, then the directory, where that alone is ambiguous."""
    cfgs = [_config(d) for d in run_dirs]
    labels = [_run_label(c) if c else d.name for d, c in zip(run_dirs, cfgs, strict=True)]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} s{c['seed']}" if c else lab for lab, c in zip(labels, cfgs, strict=True)]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} ({d.name})" for lab, d in zip(labels, run_dirs, strict=True)]
    return labels


def _run_label(cfg: dict[str, Any]) -> str:
    """``naive · concat``, ``PMR · concat``; ``gray-only model`` for a run of one modality."""
    if cfg.get("modality", "both") != "both":
        return f"{cfg['modality']}-only model"
    return f"{BALANCE_LABEL.get(cfg['balance'], cfg['balance'])} · {cfg['fusion']}"


def modality_names(run_dirs: list[Path]) -> tuple[str, str]:
    """The two modalities as the data names them: a run's ``results.json`` (``modalities``), else its model
    family's names (gray / colored on CG-MNIST, else audio / visual)."""
    from avel.families import FAMILIES

    for run_dir in run_dirs:
        path = Path(run_dir) / "results.json"
        names = json.loads(path.read_text()).get("modalities") if path.is_file() else None
        if names and len(names) == 2:
            return names[0], names[1]
    family = _config(Path(run_dirs[0])).get("model", "avel")
    return FAMILIES[family].modality_names if family in FAMILIES else ("audio", "visual")


def _series(rows: list[dict], key: str, scale: float = 1.0) -> tuple[list[int], list[float]]:
    pts = [
        (r["epoch"], scale * r[key]) for r in rows if isinstance(r.get(key), int | float) and r[key] == r[key]
    ]
    return [p[0] for p in pts], [p[1] for p in pts]


def unimodal_slot(run_dir: Path) -> int | None:
    """0 / 1 for a run that trained one modality alone (its first / second branch), None for a fused run."""
    from avel.families import modality_slot

    cfg = _config(run_dir)
    slot = modality_slot(cfg.get("model", "avel"), cfg.get("modality", "both"))
    return {"audio": 0, "visual": 1}.get(slot)


def fig4_figure(run_dirs: list[str | Path]) -> Figure:
    """PMR Fig. 4: (a) fused val accuracy, (b) each modality's val accuracy (its prototype classifier inside
    the fused model, Eq. 7; a uni-modal run's own accuracy dotted, as the paper's uni-modal trained model),
    (c) ρ (Eq. 8) over epochs; one colour per run, one line style per modality."""
    plt = pyplot()
    dirs = [Path(d) for d in run_dirs]
    runs = [read_metrics(d) for d in dirs]
    labels = run_labels(dirs)
    names = modality_names(dirs)
    slots = [unimodal_slot(d) for d in dirs]
    fig, (ax_f, ax_m, ax_r) = plt.subplots(1, 3, figsize=(10.5, 3.5), sharex=True)
    handles = []  # one legend under the panels: the runs' colours, then the modalities' line styles
    for i, (rows, label, slot) in enumerate(zip(runs, labels, slots, strict=True)):
        colour = run_colour(i)
        if slot is not None:  # a model of one modality: its own accuracy beside the branches (dotted)
            style = {**MODALITY_STYLE[slot], "ls": ":"}
            handles += ax_m.plot(*_series(rows, "val_accuracy", 100), color=colour, **style, label=label)
            continue
        handles += ax_f.plot(*_series(rows, "val_accuracy", 100), color=colour, marker="o", label=label)
        for key, style in zip(("val_audio_accuracy", "val_visual_accuracy"), MODALITY_STYLE, strict=True):
            ax_m.plot(*_series(rows, key, 100), color=colour, **style)
        key = "val_rho" if any("val_rho" in r for r in rows) else "rho"  # older runs: PMR's training ρ
        epochs, rho = _series(rows, key)
        if rho:
            ax_r.plot(epochs, rho, color=colour, marker="o", ls="-" if key == "val_rho" else ":", label=label)
    ax_f.set(title="(a) fused model", ylabel="val accuracy (%)")
    ax_m.set(title="(b) each modality alone", ylabel="val accuracy (%)")
    ax_r.set(title="(c) imbalance ratio ρ (val, Eq. 8)", ylabel=f"ρ = score({names[0]}) / score({names[1]})")
    _rho_axis(ax_r, names)
    fused = [rows for rows, slot in zip(runs, slots, strict=True) if slot is None]
    if all(len(_series(rows, "val_audio_accuracy")[0]) <= 1 for rows in fused):
        hint = "measured at the last epoch only:\ntrain with --modality-eval-every 1\nfor curves"
        for ax in (ax_m, ax_r):
            ax.text(0.5, 0.5, hint, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.4")
    for ax in (ax_f, ax_m, ax_r):
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles += [
        plt.Line2D([], [], color="0.2", **style, label=f"{name} branch")
        for name, style in zip(names, MODALITY_STYLE, strict=True)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig


def _rho_axis(ax: Any, names: tuple[str, str]) -> None:
    """A log ρ axis with plain ticks (0.5, 1, 2), the balanced line ρ = 1 and which side means what."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    lo, hi = min(lo, 0.7), max(hi, 1.4)
    ax.set_ylim(lo, hi)
    ticks = [v for v in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 10, 20) if lo <= v <= hi]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.axhline(1.0, color="0.45", lw=1, ls="--")
    where = {"transform": ax.get_yaxis_transform(), "ha": "left", "fontsize": 9, "color": "0.3"}
    ax.text(0.02, 1.04, f"{names[0]} dominates ↑", va="bottom", **where)  # left: where ρ starts far from 1
    ax.text(0.02, 0.96, f"{names[1]} dominates ↓", va="top", **where)


def all_keys_figure(run_dirs: list[str | Path]) -> tuple[Figure, list[str]]:
    """Every numeric per-epoch key of the runs as its own panel (``avel plot --all``); returns the keys."""
    plt = pyplot()
    dirs = [Path(d) for d in run_dirs]
    runs = [read_metrics(d) for d in dirs]
    keys: list[str] = []
    for rows in runs:
        for row in rows:
            for k, v in row.items():
                if k not in _SKIP and k not in keys and isinstance(v, int | float):
                    keys.append(k)
    keys = [k for k in _MAIN if k in keys] + sorted(k for k in keys if k not in _MAIN)
    first, second = modality_names(dirs)
    titles = {
        **_TITLES,
        "val_audio_accuracy": f"{first} alone (val, prototypes)",
        "val_visual_accuracy": f"{second} alone (val, prototypes)",
    }
    cols = min(3, len(keys)) or 1
    nrows = -(-len(keys) // cols) or 1
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.4 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        for i, (rows, label) in enumerate(zip(runs, run_labels(dirs), strict=True)):
            epochs, values = _series(rows, key)
            if values:  # one colour per run in every panel (a PMR-only signal keeps the PMR run's colour)
                ax.plot(epochs, values, marker=".", color=run_colour(i), label=label)
        ax.set_title(titles.get(key, key))
        ax.set_xlabel("epoch")
        if key in ("rho", "val_rho"):
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return fig, keys


def plot_runs(run_dirs: list[str | Path], out: str | Path, every_key: bool = False) -> list[str]:
    """Draw PMR Fig. 4 (or, ``every_key``, every logged key) to ``out`` (PNG); returns the keys plotted."""
    if every_key:
        fig, keys = all_keys_figure(run_dirs)
    else:
        fig = fig4_figure(run_dirs)
        keys = ["val_accuracy", "val_audio_accuracy", "val_visual_accuracy", "val_rho"]
    save_figure(fig, out)
    return keys
