"""Localize events in a user's own video: decode, preprocess as in training, run the model, label each second.

Works for any clip of at least one second, any frame rate or sample rate: the clip is cut into
floor(duration) one-second segments exactly as ``avel preprocess`` cuts AVE's ten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from avel.augment import frames_to_input
from avel.checkpoint import model_from_checkpoint
from avel.data import segment_window


def _clock(seconds: int) -> str:
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def segments_to_ranges(labels: list[int], conf: list[float], classes: list[str]) -> list[dict[str, Any]]:
    """Merge consecutive seconds with the same label into ranges with their mean confidence."""
    ranges: list[dict[str, Any]] = []
    for t, (k, c) in enumerate(zip(labels, conf, strict=True)):
        if ranges and ranges[-1]["label_index"] == k and ranges[-1]["end"] == t:
            r = ranges[-1]
            r["end"] = t + 1
            r["_conf"].append(c)
        else:
            ranges.append({"start": t, "end": t + 1, "label_index": k, "label": classes[k], "_conf": [c]})
    for r in ranges:
        r["confidence"] = sum(r.pop("_conf")) / (r["end"] - r["start"])
    return ranges


def format_ranges(ranges: list[dict[str, Any]]) -> str:
    """``00:02–00:07 Church bell 0.91`` lines (background ranges included, marked as such)."""
    return "\n".join(
        f"{_clock(r['start'])}–{_clock(r['end'])} {r['label']} {r['confidence']:.2f}" for r in ranges
    )


def clip_inputs(
    frames: np.ndarray, spec: np.ndarray, columns: np.ndarray, width: int, device: str | torch.device
) -> tuple[Tensor, Tensor]:
    """A decoded clip as one batch: audio (1, T, 1, F, width), visual (1, T, K, 3, S, S).

    Each second takes ``width`` columns from its first one, the width the model was trained with; a
    second that ends before that (the last one of a short clip) repeats the spectrogram's last column.
    """
    spec_t = torch.from_numpy(spec).to(device)  # (F, L)
    cols = torch.as_tensor(columns[:-1], device=device)[:, None] + torch.arange(width, device=device)
    audio = spec_t[:, cols.clamp_max(spec_t.shape[-1] - 1)].permute(1, 0, 2).unsqueeze(1)[None]
    frames_t = torch.from_numpy(frames).to(device)[None]  # (1, T, K, S, S, 3)
    return audio, frames_to_input(frames_t, train=False, augment=False, generator=None)


@torch.no_grad()
def predict_video(checkpoint: str | Path, video: str | Path, device: str = "cpu") -> dict[str, Any]:
    """Per-second labels with confidence for ``video``, using an end-to-end AVEL checkpoint."""
    from preprocessing.audio import spec_from_params
    from preprocessing.pipeline import decode_clip

    model, ckpt = model_from_checkpoint(checkpoint, device)
    meta, params = ckpt["data_meta"], ckpt.get("data_params", {})
    if meta.get("family") != "avel":
        raise ValueError(f"{checkpoint}: avel predict localizes events per second and needs an AVEL model")
    if meta.get("input_mode") != "e2e":
        raise ValueError(
            f"{checkpoint}: this model was trained on precomputed features (a features file); predicting "
            "on a video needs an end-to-end model trained on the output of `avel preprocess`"
        )
    video = Path(video)
    frames, spec, columns, info = decode_clip(
        video,
        frame_size=params["frame_size"],
        frames_per_segment=params["frames_per_segment"],
        spec=spec_from_params(params),  # the transform the model was trained on
    )
    width = int(meta.get("segment_width", segment_window(columns)))  # as in training
    audio, visual = clip_inputs(frames, spec, columns, width, device)
    probs = model(audio, visual).logits.float().softmax(-1)[0]  # (T, C)
    conf, labels = probs.max(-1)
    classes = meta["classes"]
    ranges = segments_to_ranges(labels.tolist(), conf.tolist(), classes)
    return {
        "video": str(video),
        "duration_s": info.get("duration"),
        "segments": [
            {"second": t, "label": classes[k], "confidence": c}
            for t, (k, c) in enumerate(zip(labels.tolist(), conf.tolist(), strict=True))
        ],
        "ranges": ranges,
    }
