"""Does PMR help? AVEL concat and DMRN, without and with PMR, on the embedded set at two imbalance levels.

For each setting: make the embedded set (``avel synth``), preprocess it, run the ``fusions`` grid for AVEL
(concat / DMRN x baseline / PMR, plus audio-only and visual-only), 3 seeds each, model selection on val,
test once. Writes each grid's table.md and the section "PMR on AVEL (embedded set)" of docs/results.md.

    python scripts/pmr_effect.py --seeds 3                 # default + harder imbalance, ~1 h on 2 CPU cores
    python scripts/pmr_effect.py --seeds 1 --epochs 2      # a smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from avel.ablate import run_grid
from avel.synth import SynthConfig, synth_dataset
from preprocessing.pipeline import preprocess

SETTINGS = {
    # name -> SynthConfig overrides
    "default imbalance": {},
    "harder imbalance (weaker vision)": {"visual_snr": "half"},
}


def make_dataset(root: Path, name: str, overrides: dict, videos: int, frame_size: int) -> Path:
    folder = root / name.split(" ")[0]
    h5 = folder.with_suffix(".h5")
    if not h5.exists():
        cfg = SynthConfig(videos=videos, frame_size=frame_size, seed=0)
        if overrides.get("visual_snr") == "half":
            cfg.visual_snr = cfg.visual_snr / 2
        if not (folder / "Annotations.txt").exists():
            synth_dataset(folder, cfg)
        report = preprocess(folder, h5, workers=2, frame_size=frame_size, progress=False)
        if report.failed:
            raise SystemExit(f"preprocessing {folder} failed: {report.summary()}")
    return h5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("data/pmr_effect"))
    ap.add_argument("--runs", type=Path, default=Path("runs/pmr_effect"))
    ap.add_argument("--config", type=Path, default=Path("configs/embedded_avel.toml"))
    ap.add_argument("--videos", type=int, default=280)
    ap.add_argument("--frame-size", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--results", type=Path, default=Path("docs/results.md"))
    args = ap.parse_args()
    sections = []
    for name, synth_overrides in SETTINGS.items():
        t0 = time.time()
        h5 = make_dataset(args.root, name, synth_overrides, args.videos, args.frame_size)
        overrides = {"data": str(h5), "epochs": args.epochs}
        out = args.runs / name.split(" ")[0]
        table = run_grid(
            "fusions", out, config=args.config, seeds=args.seeds, model="avel", overrides=overrides
        )
        minutes = (time.time() - t0) / 60
        sections.append(
            f"### {name}\n\nSynth overrides: `{json.dumps(synth_overrides)}`; {minutes:.0f} min.\n\n"
            + table.markdown()
        )
        print(table.markdown())
    text = "\n\n".join(sections)
    print(text)
    (args.runs / "pmr_effect.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
