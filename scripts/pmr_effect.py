"""Does PMR help? AVEL concat and DMRN, without and with PMR, on the embedded set in several settings.

For each setting: make the embedded set (``avel synth``), preprocess it, run the ``fusions`` grid for AVEL
(concat / DMRN x baseline / PMR, plus audio-only and visual-only), 3 seeds each, model selection on val,
test once. Writes each grid's table.md and, in ``--runs``/pmr_effect.md, per setting the accuracy table
and each modality's prototype accuracy (scripts/modality_table.py); docs/results.md quotes that file.

    python scripts/pmr_effect.py --seeds 3                 # every setting end to end, ~70 min each, 2 cores
    python scripts/pmr_effect.py --seeds 1 --epochs 2      # a smoke run
    python scripts/pmr_effect.py --setting hard --row concat --row DMRN   # the fused rows of one setting
    python scripts/pmr_effect.py --features                # AVEL on features, ~10 min per setting

``--features``: AVEL on a features file instead of end to end, as the paper's Table 4 runs it on the released
VGGish + VGG19 features: per setting and **per seed s**, an audio-only and a visual-only end-to-end model are
trained with seed s (``avel train --modality``), ``avel extract --visual-from`` pairs their encoders into the
features file ``<folder>-s<s>-pair.h5``, and seed s of every cell of the grid runs on that file with
``configs/embedded_features.toml`` (in ``--runs``/features-<folder>; the grid's data is
``<folder>-s{seed}-pair.h5``). A cell's mean ± std thus covers every draw of the pipeline that follows the
seed: encoder initialisation and batch order, then AVEL's.

The generated data set is **fixed** (``avel synth --seed 0`` for every seed, as AVE is one fixed data set):
the spread over seeds is that of training, not of drawing another data set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from avel.engine.config import load_config
from avel.engine.train import run_training
from avel.experiments.ablate import run_grid
from avel.preprocessing.pipeline import preprocess
from avel.synth.ave import SynthConfig, synth_dataset
from avel.tools.extract import extract_features

sys.path.insert(0, str(Path(__file__).parent))
from modality_table import table as modality_table  # noqa: E402

A11V40 = {"audio_snr_db": -11.0, "visual_snr": 0.4, "audio_groups": 0}  # the default 2026-11-23 .. 12-06
WEAKER = {**A11V40, "audio_snr_db": -10.0, "visual_snr": 0.35}
OLD = {**A11V40, "audio_snr_db": -8.0, "visual_snr": 0.5}  # the SynthConfig default until 2026-11-23

NEW = {"audio_snr_db": -6.0, "visual_snr": 0.45, "audio_groups": 8}  # the SynthConfig default (2026-12-07)

SETTINGS = {
    # key -> (title, folder under --root, SynthConfig overrides)
    "default": (
        "default set (audio -6 dB, 8 sound groups: classes 0/1 and 5/6 share a sound; visual 0.45)",
        "ave10-a6g8v45",
        NEW,
    ),
    "g7": (
        "audio -6 dB in 7 sound groups (0/1, 3/4, 6/7 share), visual 0.45",
        "ave10-a6g7v45",
        {**NEW, "audio_groups": 7},
    ),
    "a11v40": (
        "the default of 2026-11-23 to 2026-12-06 (audio -11 dB, visual 0.4, no sound groups)",
        "ave10-a11v40",
        A11V40,
    ),
    "own": (
        "earlier default (audio -8 dB, visual 0.5; backgrounds mostly of the own class)",
        "ave10-own",
        OLD,
    ),
    "random": (
        "audio -8 dB, visual 0.5, backgrounds of random classes",
        "ave10",
        {**OLD, "p_background_own_class": 0.0},
    ),
    "quiet": ("audio -12 dB, visual 0.5", "ave10-quiet", {**OLD, "audio_snr_db": -12.0}),
    "weaker": ("audio -10 dB, visual 0.35", "ave10-a10v35", WEAKER),
    "a12v40": ("audio -12 dB, visual 0.4", "ave10-a12v40", {**A11V40, "audio_snr_db": -12.0}),
    "a11v45": ("audio -11 dB, visual 0.45", "ave10-a11v45", {**A11V40, "visual_snr": 0.45}),
    "hard": (
        "audio -8 dB, weaker vision (0.25), backgrounds of random classes",
        "ave10-hard",
        {**OLD, "visual_snr": 0.25, "p_background_own_class": 0.0},
    ),
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


ENCODER = Path("configs/embedded_encoder.toml")  # the uni-modal encoders behind a features file


def features_path(h5: Path, seed: int | str) -> Path:
    """The features file of seed ``seed`` (``"{seed}"``: the template the grid fills in per run)."""
    return h5.with_name(f"{h5.stem}-s{seed}-pair.h5")


def make_features(h5: Path, seed: int, encoder: Path = ENCODER) -> Path:
    """Audio vectors from an audio-only model, visual maps from a visual-only model, both trained with
    ``seed``: one features file per seed."""
    pair = features_path(h5, seed)
    if pair.exists():
        return pair
    checkpoints = {}
    for modality in ("audio", "visual"):
        out = encoder_dir(h5, seed, modality)
        if not (out / "results.json").exists():
            run = {"data": str(h5), "modality": modality, "out": str(out), "progress": False, "seed": seed}
            run_training(load_config(encoder, run))
        checkpoints[modality] = out / "best.pt"
    return extract_features(checkpoints["audio"], h5, pair, visual_checkpoint=checkpoints["visual"])


def encoder_dir(h5: Path, seed: int, modality: str) -> Path:
    return h5.with_name(f"{h5.stem}-s{seed}-{modality}")


def encoder_table(h5: Path, seeds: int) -> str:
    """Test segment accuracy of the uni-modal end-to-end models behind the features files, per seed."""
    from avel.experiments.ablate import format_mean_std

    lines = ["| encoder | test accuracy | per seed | run directories |", "|---|---|---|---|"]
    for modality in ("audio", "visual"):
        dirs = [encoder_dir(h5, s, modality) for s in range(seeds)]
        acc = [json.loads((d / "results.json").read_text())["test_accuracy"] for d in dirs]
        per_seed = ", ".join(f"{100 * a:.1f}" for a in acc)
        where = ", ".join(map(str, dirs))
        lines.append(f"| {modality} only | {format_mean_std(acc)} | {per_seed} | {where} |")
    return "\n".join(lines) + "\n"


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
    ap.add_argument("--features", action="store_true", help="AVEL on features of two uni-modal encoders")
    ap.add_argument("--encoder", type=Path, default=ENCODER, help="the encoders' config (--features)")
    args = ap.parse_args()
    if args.features and args.config == ap.get_default("config"):
        args.config = Path("configs/embedded_features.toml")
    sections = []
    for key in args.setting or list(SETTINGS):
        name, folder_name, synth_overrides = SETTINGS[key]
        t0 = time.time()
        h5 = make_dataset(args.root, folder_name, synth_overrides, args)
        data, encoders = h5, ""
        if args.features:
            for seed in range(args.seeds):
                make_features(h5, seed, args.encoder)
            data, folder_name = features_path(h5, "{seed}"), "features-" + folder_name
            encoders = "\n\nUni-modal encoders behind the features files:\n\n" + encoder_table(h5, args.seeds)
        overrides = {"data": str(data), "epochs": args.epochs}
        out = args.runs / folder_name
        grid = {"config": args.config, "seeds": args.seeds, "model": "avel", "rows": args.row}
        table = run_grid("fusions", out, overrides=overrides, **grid)
        minutes = (time.time() - t0) / 60
        sections.append(
            f"### {name}\n\nSynth overrides: `{json.dumps(synth_overrides)}`; {minutes:.0f} min.\n\n"
            + table.markdown()
            + "\n\nEach modality's prototype accuracy on test event segments:\n\n"
            + modality_table(out)
            + encoders
        )
        print(table.markdown())
    text = "\n\n".join(sections)
    print(text)
    out_name = "pmr_effect" + ("_features" if args.features else "")
    out_name += "".join(f"_{key}" for key in args.setting or []) + ".md"
    (args.runs / out_name).write_text(text + "\n")


if __name__ == "__main__":
    main()
