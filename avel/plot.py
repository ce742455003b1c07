"""``avel plot``: PMR's Fig. 4 from run directories — each modality's accuracy and the imbalance ratio ρ
over epochs, runs overlaid (e.g. with and without PMR) — plus every other balancer signal that was logged.
"""

from __future__ import annotations

import json
from pathlib import Path

# per-epoch keys that are bookkeeping, not signals worth a panel
_SKIP = {"epoch", "lr", "time_s", "train_time_s", "prototype_time_s", "samples_per_s"}
_MAIN = ["val_accuracy", "val_audio_accuracy", "val_visual_accuracy", "rho"]
_TITLES = {
    "val_accuracy": "fused accuracy (val)",
    "val_audio_accuracy": "audio alone (val, prototypes)",
    "val_visual_accuracy": "visual alone (val, prototypes)",
    "rho": "imbalance ratio ρ (Eq. 8)",
}


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (is this an avel run directory?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_label(run_dir: Path) -> str:
    cfg_path = run_dir / "config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        return f"{cfg['model']}-{cfg['fusion']} {cfg['balance']} s{cfg['seed']} ({run_dir.name})"
    return run_dir.name


def modality_names(run_dirs: list[Path]) -> tuple[str, str]:
    """The two modalities' names of the first run (gray / colored on CG-MNIST, else audio / visual)."""
    from avel.models import MODALITY_NAMES

    cfg_path = Path(run_dirs[0]) / "config.json"
    family = json.loads(cfg_path.read_text()).get("model", "avel") if cfg_path.is_file() else "avel"
    return MODALITY_NAMES.get(family, ("audio", "visual"))


def plot_runs(run_dirs: list[str | Path], out: str | Path) -> list[str]:
    """Draw the panels to ``out`` (PNG); returns the keys plotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(Path(d), read_metrics(d)) for d in run_dirs]
    keys: list[str] = []
    for _, rows in runs:
        for row in rows:
            for k, v in row.items():
                if k not in _SKIP and k not in keys and isinstance(v, int | float):
                    keys.append(k)
    keys = [k for k in _MAIN if k in keys] + sorted(k for k in keys if k not in _MAIN)
    first, second = modality_names([d for d, _ in runs])
    titles = {
        **_TITLES,
        "val_audio_accuracy": f"{first} alone (val, prototypes)",
        "val_visual_accuracy": f"{second} alone (val, prototypes)",
    }
    cols = min(3, len(keys)) or 1
    nrows = -(-len(keys) // cols) or 1
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.4 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        for i, (run_dir, rows) in enumerate(runs):
            pts = [(r["epoch"], r[key]) for r in rows if key in r and r[key] == r[key]]
            if pts:  # one colour per run in every panel (a PMR-only signal keeps the PMR run's colour)
                ax.plot(*zip(*pts, strict=True), marker=".", color=f"C{i % 10}", label=run_label(run_dir))
        ax.set_title(titles.get(key, key))
        ax.set_xlabel("epoch")
        if key == "rho":
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return keys
