"""The features pipeline of the AVE-form calibration (issue #25): per seed s, an audio-only and a visual-only
AVEL trained end to end with seed s on the set (``configs/embedded_encoder.toml``, ``ENCODER_EPOCHS``), then
``avel extract --visual-from`` pairs their encoders into one features file that AVEL trains on, as the paper's
Table 4 runs on VGGish + VGG19 features. ``scripts/pmr_effect.py --features`` and ``avel demo`` run it.
"""

from __future__ import annotations

from pathlib import Path

ENCODER = "embedded_encoder"  # the uni-modal encoders' config
# each encoder reaches its val plateau in every seed of the default set (docs/results.md, issue #25);
# the recipe of 2026-12-07's ave10-a6g8v45 calibration: 10 and 10 (with audio_pool = "freq")
ENCODER_EPOCHS = {"audio": 12, "visual": 60}


def features_path(h5: Path, seed: int | str) -> Path:
    """The features file of seed ``seed`` (``"{seed}"``: the template the grid fills in per run)."""
    return h5.with_name(f"{h5.stem}-s{seed}-pair.h5")


def encoder_dir(h5: Path, seed: int, modality: str) -> Path:
    return h5.with_name(f"{h5.stem}-s{seed}-{modality}")


def make_features(
    h5: Path,
    seed: int,
    encoder: str | Path = ENCODER,
    epochs: dict[str, int] = ENCODER_EPOCHS,
    data: Path | None = None,
    overrides: dict | None = None,
) -> Path:
    """Both encoders of ``seed`` trained on ``data`` (default ``h5``; a set drawn per seed: that seed's file),
    each for ``epochs[modality]`` epochs, and their features file; every step already done is reused.
    Files are named after ``h5``: ``<h5>-s<seed>-audio/``, ``-visual/``, ``-pair.h5``."""
    from avel.engine.config import load_config
    from avel.engine.train import run_training
    from avel.tools.extract import extract_features

    pair = features_path(h5, seed)
    if pair.exists():
        return pair
    data = data or h5
    checkpoints = {}
    for modality in ("audio", "visual"):
        out = encoder_dir(h5, seed, modality)
        if not (out / "results.json").exists():
            run = {"data": str(data), "modality": modality, "out": str(out), "progress": False, "seed": seed}
            run_training(load_config(encoder, {**run, **(overrides or {}), "epochs": epochs[modality]}))
        checkpoints[modality] = out / "best.pt"
    return extract_features(checkpoints["audio"], data, pair, visual_checkpoint=checkpoints["visual"])
