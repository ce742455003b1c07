"""``avel extract``: a features file from a trained end-to-end AVEL model.

Each segment's audio vector a_t (the audio ResNet18, pooled) and visual map v_t (the visual ResNet18's
layer4 grid, averaged over the segment's frames) are written with the source file's row metadata and
splits, so the AVEL models can then train on them in features mode (``avel train FEATURES.h5``), as they
do on the official VGGish / VGG19 release.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avel import families
from avel.engine.checkpoint import check_checkpoint_data, model_from_checkpoint
from avel.engine.config import resolve_device
from avel.preprocessing.h5 import read_rows_meta, write_features_file


@torch.no_grad()
def extract_features(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    device: str = "auto",
    batch_size: int = 16,
    visual_checkpoint: str | Path | None = None,
) -> Path:
    """Write ``out`` (an avel features file) with the encoders of ``checkpoint`` applied to ``data``.

    With ``visual_checkpoint`` the audio vectors come from ``checkpoint`` and the visual maps from
    ``visual_checkpoint``: e.g. two uni-modal models, as the AVE release pairs VGGish with VGG19.
    """
    dev = resolve_device(device)
    audio_model = _encoder_model(checkpoint, dev, "audio", data)
    visual_model = _encoder_model(visual_checkpoint or checkpoint, dev, "visual", data)
    splits = families.load_splits(data, family=audio_model.family, device=dev, augment=False)
    rows_meta = read_rows_meta(data)
    audio: np.ndarray | None = None
    visual: np.ndarray | None = None
    for split in (splits.train, splits.val, splits.test):
        if split is None:
            continue
        for batch in split.batches(batch_size):
            a = audio_model.segment_features(batch.audio, batch.visual)[0]
            v = visual_model.segment_features(batch.audio, batch.visual)[1]
            if audio is None:
                audio = np.zeros((len(rows_meta), *a.shape[1:]), np.float32)
                visual = np.zeros((len(rows_meta), *v.shape[1:]), np.float32)
            rows = split.rows[batch.index.cpu()].numpy()
            audio[rows], visual[rows] = a.float().cpu().numpy(), v.float().cpu().numpy()
    if audio is None or visual is None:
        raise ValueError(f"{data}: no rows in any split")
    source = f"avel extract {checkpoint}"
    if visual_checkpoint:
        source += f" --visual-from {visual_checkpoint}"
    attrs = {"source": source, "source_file": str(Path(data).resolve())}
    write_features_file(out, rows_meta, audio, visual, attrs)
    return Path(out)


def _encoder_model(checkpoint: str | Path, device: torch.device, modality: str, data: str | Path):
    """The localizer of ``checkpoint`` if it has an encoder for ``modality`` and reads ``data``."""
    model, ckpt = model_from_checkpoint(checkpoint, device)
    meta = ckpt["data_meta"]
    if not families.get(meta.get("family", "avel")).per_segment or meta.get("input_mode") != "e2e":
        raise ValueError(
            f"{checkpoint}: extract needs an end-to-end AVEL model (trained with --model avel on the output "
            "of `avel preprocess`)"
        )
    check_checkpoint_data(ckpt, checkpoint, data)
    base = model.backbone
    if getattr(base, "modality", "both") not in ("both", modality):
        raise ValueError(f"{checkpoint}: a {base.modality}-only model has no {modality} encoder")
    return base
