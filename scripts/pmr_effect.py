"""Does PMR help? AVEL concat and DMRN, without and with PMR, on the embedded set at two imbalance levels.

For each setting: make the embedded set (``avel synth``), preprocess it, run the ``fusions`` grid for AVEL
(concat / DMRN x baseline / PMR, plus audio-only and visual-only), 3 seeds each, model selection on val,
test once. Writes each grid's table.md and, in ``--runs``/pmr_effect.md, per setting the accuracy table
and each modality's prototype accuracy (scripts/modality_table.py); docs/results.md quotes that file.

    python scripts/pmr_effect.py --seeds 3                 # default + harder imbalance, ~70 min, 2 cores
    python scripts/pmr_effect.py --seeds 1 --epochs 2      # a smoke run
    python scripts/pmr_effect.py --setting hard --row concat --row DMRN   # the fused rows of one setting
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from avel.ablate import run_grid
from avel.synth import SynthConfig, synth_dataset
from preprocessing.pipeline import preprocess

sys.path.insert(0, str(Path(__file__).parent))
from modality_table import table as modality_table  # noqa: E402

SETTINGS = {
    # key -> (title, folder under --root, SynthConfig overrides)
    "default": ("default imbalance", "ave10", {}),
    "hard": ("harder imbalance (weaker vision)", "ave10-hard", {"visual_snr": 0.25}),
}


def make_dataset(root: Path, folder_name: str, overrides: dict, args: argparse.Namespace) -> Path:
    """The results set (``avel synth`` + ``avel preprocess``), made once and reused."""
    folder = root / folder_name
    h5 = folder.with_suffix(".h5")
    if not h5.exists():
        cfg = SynthConfig(
            videos=args.videos,
            classes=args.classes,
            frame_size=args.frame_size,
            fps=args.fps,
            seed=0,
            **overrides,
        )
        if not (folder / "Annotations.txt").exists():
            synth_dataset(folder, cfg)
        report = preprocess(folder, h5, workers=2, frame_size=args.frame_size, progress=False)
        if report.failed:
            raise SystemExit(f"preprocessing {folder} failed: {report.summary()}")
    return h5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("data/res"))
    ap.add_argument("--runs", type=Path, default=Path("runs/pmr_effect"))
    ap.add_argument("--config", type=Path, default=Path("configs/embedded_avel.toml"))
    ap.add_argument("--videos", type=int, default=400)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--frame-size", type=int, default=32)
    ap.add_argument("--fps", type=float, default=4.0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--setting", action="append", choices=list(SETTINGS), help="repeatable (default: all)")
    ap.add_argument("--row", action="append", help="train only these rows (repeatable); tables show all")
    args = ap.parse_args()
    sections = []
    for key in args.setting or list(SETTINGS):
        name, folder_name, synth_overrides = SETTINGS[key]
        t0 = time.time()
        h5 = make_dataset(args.root, folder_name, synth_overrides, args)
        overrides = {"data": str(h5), "epochs": args.epochs}
        out = args.runs / folder_name
        grid = {"config": args.config, "seeds": args.seeds, "model": "avel", "rows": args.row}
        table = run_grid("fusions", out, overrides=overrides, **grid)
        minutes = (time.time() - t0) / 60
        sections.append(
            f"### {name}\n\nSynth overrides: `{json.dumps(synth_overrides)}`; {minutes:.0f} min.\n\n"
            + table.markdown()
            + "\n\nEach modality's prototype accuracy on test event segments:\n\n"
            + modality_table(out)
        )
        print(table.markdown())
    text = "\n\n".join(sections)
    print(text)
    out_name = "pmr_effect.md" if not args.setting else f"pmr_effect_{'_'.join(args.setting)}.md"
    (args.runs / out_name).write_text(text + "\n")


if __name__ == "__main__":
    main()
