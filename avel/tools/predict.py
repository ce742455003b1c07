"""Localize events in a user's own videos: decode, preprocess as in training, run the model, label seconds.

Works for any clip of at least one second, any frame rate or sample rate: the clip is cut into
floor(duration) one-second segments exactly as ``avel preprocess`` cuts AVE's ten. Beside the fused
prediction, each modality's prototype classifier (PMR Eq. 7) says what that modality alone would label each
second, where the model has prototypes: from the train split of a preprocessed file (as ``avel evaluate``
measures them), else the PMR prototypes the checkpoint carries. A video that a preprocessed file annotates
(its id = the file name's stem) gets its annotated spans too. ``avel.tools.timeline`` draws all of it.

    predictor = load_predictor("runs/x/best.pt", annotations="data/ave.h5")
    result = predictor.predict("clip.mp4")            # the per-video record (JSON-ready)
    results = predict_videos(predictor, videos, out_dir)   # a folder: one JSON + PNG per video, one table
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from avel import families
from avel.data.augment import frames_to_input
from avel.data.splits import segment_window
from avel.engine.checkpoint import model_from_checkpoint
from avel.models.base import AVModel

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".flv", ".m4v")
TOP_CLASSES = 5  # classes the probability table of a video keeps (and its timeline draws)


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


# ----------------------------------------------------------------------------------------------- sources


def read_annotations(path: str | Path, classes: list[str]) -> dict[str, list[int]]:
    """Per-second annotated labels (indices into ``classes``, background last) by video id, from a
    preprocessed file (its ``segment_labels``) or an AVE ``Annotations.txt``; a video with two annotated
    events holds both (a second is the event of whichever row marks it)."""
    path = Path(path)
    background = len(classes) - 1
    if path.suffix in (".txt", ".csv"):
        from avel.preprocessing.annotations import SEGMENTS
        from avel.preprocessing.annotations import read_annotations as read_lines

        pairs = []
        for a in read_lines(path):
            if a.category not in classes:
                raise ValueError(f"{path}:{a.line}: class {a.category!r} is not one the model was trained on")
            k = classes.index(a.category)
            pairs.append((a.video_id, [k if a.start <= t < a.end else background for t in range(SEGMENTS)]))
    else:
        pairs = _h5_annotations(path, classes)
    out: dict[str, list[int]] = {}
    for vid, row in pairs:
        have = out.setdefault(vid, [background] * len(row))
        for t, k in enumerate(row):
            if k != background:
                have[t] = k
    return out


def _h5_annotations(path: Path, classes: list[str]) -> list[tuple[str, list[int]]]:
    """(video id, per-second labels as indices into ``classes``) of every row of a preprocessed file."""
    import h5py

    from avel.preprocessing.h5 import attr_value

    with h5py.File(path, "r") as f:
        if "segment_labels" not in f or "video_id" not in f:
            raise ValueError(f"{path}: no per-second annotations (segment_labels, video_id): not AVE-form")
        names = json.loads(attr_value(f.attrs["classes"]))  # the file's order, background last
        ids = [v.decode() if isinstance(v, bytes) else str(v) for v in f["video_id"][()]]
        seg = f["segment_labels"][()].tolist()
    unknown = sorted(set(names[:-1]) - set(classes))
    if unknown:
        raise ValueError(f"{path}: classes {unknown} are not ones the model was trained on")
    index = [classes.index(n) for n in names[:-1]] + [len(classes) - 1]  # file index -> model index
    return [(vid, [index[k] for k in row]) for vid, row in zip(ids, seg, strict=True)]


def data_prototypes(
    model: AVModel, ckpt: dict[str, Any], checkpoint: str | Path, data: str | Path
) -> tuple[Tensor, Tensor]:
    """Each modality's prototypes (Eq. 6) from the train split of ``data``, with the weights of ``model``."""
    from avel.engine.checkpoint import check_checkpoint_data
    from avel.engine.evaluate import train_prototypes
    from avel.families import load_splits

    check_checkpoint_data(ckpt, checkpoint, data)
    device = next(model.parameters()).device
    family = ckpt["data_meta"].get("family", "avel")
    splits = load_splits(data, family=family, device=device, augment=False, splits=("train",))
    return train_prototypes(model, splits.train)


def checkpoint_prototypes(ckpt: dict[str, Any]) -> tuple[Tensor, Tensor] | None:
    """The PMR prototypes a checkpoint carries (its balancer's state), or None."""
    protos = (ckpt.get("balancer") or {}).get("prototypes")
    return None if protos is None else (protos[0].float(), protos[1].float())


# ----------------------------------------------------------------------------------------------- predictor


@dataclass
class Predictor:
    """A loaded end-to-end AVEL model, with what it needs to label videos."""

    checkpoint: Path
    model: AVModel
    meta: dict[str, Any]  # the checkpoint's data_meta (classes, segment width, modalities)
    params: dict[str, Any]  # the preprocessing the model was trained on
    device: str
    prototypes: tuple[Tensor, Tensor] | None = None
    prototype_source: str = "none"
    annotations: dict[str, list[int]] = field(default_factory=dict)
    annotation_source: str | None = None
    model_name: str = ""

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def modalities(self) -> tuple[str, str]:
        names = self.meta.get("modalities") or ("audio", "visual")
        return names[0], names[1]

    @torch.no_grad()
    def predict(self, video: str | Path) -> dict[str, Any]:
        """The per-second record of one video (see ``predict_video``)."""
        from avel.preprocessing.audio import spec_from_params
        from avel.preprocessing.pipeline import decode_clip

        video = Path(video)
        frames, spec, columns, info = decode_clip(
            video,
            frame_size=self.params["frame_size"],
            frames_per_segment=self.params["frames_per_segment"],
            spec=spec_from_params(self.params),  # the transform the model was trained on
        )
        width = int(self.meta.get("segment_width", segment_window(columns)))  # as in training
        audio, visual = clip_inputs(frames, spec, columns, width, self.device)
        out = self.model(audio, visual)
        probs = out.logits.float().softmax(-1)[0]  # (T, C)
        conf, labels = probs.max(-1)
        classes = self.classes
        result: dict[str, Any] = {
            "video": str(video),
            "duration_s": info.get("duration"),
            "model": self.model_name,
            "classes": classes,
            "segments": [
                {"second": t, "label": classes[k], "confidence": c}
                for t, (k, c) in enumerate(zip(labels.tolist(), conf.tolist(), strict=True))
            ],
            "ranges": segments_to_ranges(labels.tolist(), conf.tolist(), classes),
            "probabilities": [[round(p, 5) for p in row] for row in probs.tolist()],  # (T, C)
            "modalities": {},
            "prototypes": self.prototype_source,
        }
        if self.prototypes is not None:
            result["modalities"] = self._modalities(out.z_audio[0], out.z_visual[0])
        truth = self.annotations.get(video.stem)
        if truth is not None:  # cut or padded (background) to the clip's seconds
            t = len(result["segments"])
            result["annotated"] = [classes[k] for k in (truth + [len(classes) - 1] * t)[:t]]
            result["annotation_source"] = self.annotation_source
        return result

    def _modalities(self, z_audio: Tensor, z_visual: Tensor) -> dict[str, Any]:
        """Each modality's prototype classifier per second: label and probability (softmax of Eq. 7)."""
        from avel.models.prototypes import prototype_logits

        out = {}
        for name, z, protos in zip(self.modalities, (z_audio, z_visual), self.prototypes, strict=True):
            p = prototype_logits(z.float(), protos).softmax(-1)  # (T, K): event classes only, Eq. 7
            conf, labels = p.max(-1)
            out[name] = {
                "labels": [self.classes[k] for k in labels.tolist()],
                "confidence": conf.tolist(),
                "probabilities": [[round(v, 5) for v in row] for row in p.tolist()],
            }
        return out


def load_predictor(
    checkpoint: str | Path,
    device: str = "cpu",
    annotations: str | Path | None = None,
    data: str | Path | None = None,
) -> Predictor:
    """Load an end-to-end AVEL checkpoint. ``annotations``: a preprocessed file or an AVE Annotations.txt
    whose videos get their annotated spans; ``data``: a preprocessed file whose train split gives each
    modality's prototypes (default: ``annotations`` when it is one; else a PMR checkpoint's own)."""
    model, ckpt = model_from_checkpoint(checkpoint, device)
    meta, params = ckpt["data_meta"], ckpt.get("data_params", {})
    if not families.get(meta.get("family", "avel")).per_segment:
        raise ValueError(f"{checkpoint}: avel predict localizes events per second and needs an AVEL model")
    if meta.get("input_mode") != "e2e":
        raise ValueError(
            f"{checkpoint}: this model was trained on precomputed features (a features file); predicting "
            "on a video needs an end-to-end model trained on the output of `avel preprocess`"
        )
    cfg = ckpt.get("config", {})
    pred = Predictor(Path(checkpoint), model, meta, params, device)
    balance = {"none": "naive"}.get(cfg.get("balance", "none"), cfg.get("balance"))
    pred.model_name = f"AVEL {cfg.get('fusion', '?')}, {balance}"
    both = cfg.get("modality", "both") == "both"
    if annotations is not None:
        pred.annotations = read_annotations(annotations, pred.classes)
        pred.annotation_source = str(annotations)
    if data is None and annotations is not None and Path(annotations).suffix not in (".txt", ".csv"):
        data = annotations
    if both and data is not None:
        pred.prototypes = data_prototypes(model, ckpt, checkpoint, data)
        pred.prototype_source = f"train split of {Path(data).name}"
    if both and pred.prototypes is None and checkpoint_prototypes(ckpt) is not None:
        pred.prototypes = checkpoint_prototypes(ckpt)
        pred.prototype_source = f"PMR prototypes in {Path(checkpoint).name}"
    return pred


def predict_video(
    checkpoint: str | Path,
    video: str | Path,
    device: str = "cpu",
    annotations: str | Path | None = None,
    data: str | Path | None = None,
) -> dict[str, Any]:
    """Per-second labels with confidence for ``video``, using an end-to-end AVEL checkpoint: ``segments``,
    ``ranges``, the fused ``probabilities`` (T, C), each modality's prototype-classifier labels where the
    model has prototypes (``modalities``), the ``annotated`` labels when ``annotations`` holds the video."""
    return load_predictor(checkpoint, device, annotations, data).predict(video)


# ----------------------------------------------------------------------------------------------- many videos


def find_videos(paths: Iterable[str | Path]) -> list[Path]:
    """Video files given as files or folders (a folder's videos sorted by name; an AVE-layout folder's
    ``AVE/`` videos); a list file (``.txt``) names one video per line, relative to itself."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            root = p / "AVE" if (p / "AVE").is_dir() else p
            vids = sorted(v for v in root.iterdir() if v.suffix.lower() in VIDEO_SUFFIXES and v.is_file())
            if not vids:
                raise ValueError(f"{p}: no video files ({', '.join(VIDEO_SUFFIXES)})")
            found += vids
        elif p.suffix.lower() == ".txt":
            lines = [ln.strip() for ln in p.read_text().splitlines()]
            found += [(p.parent / ln) for ln in lines if ln and not ln.startswith("#")]
        else:
            found.append(p)
    return found


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per second of a video: fused label and confidence, each modality's label, the annotation."""
    rows = []
    for seg in result["segments"]:
        t = seg["second"]
        row = {"video": Path(result["video"]).name, "second": t, "label": seg["label"]}
        row["confidence"] = f"{seg['confidence']:.4f}"
        for name, m in result["modalities"].items():
            row[f"{name}_label"] = m["labels"][t]
            row[f"{name}_confidence"] = f"{m['confidence'][t]:.4f}"
        if "annotated" in result:
            row["annotated"] = result["annotated"][t]
        rows.append(row)
    return rows


def write_table(results: list[dict[str, Any]], out_dir: Path) -> tuple[Path, Path]:
    """``predictions.csv`` (one row per video second) and ``predictions.json`` (every video's record)."""
    rows = [r for res in results for r in table_rows(res)]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    csv_path, json_path = out_dir / "predictions.csv", out_dir / "predictions.json"
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(csv_path)
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(json_path)
    return csv_path, json_path


def predict_videos(
    predictor: Predictor,
    videos: list[Path],
    out_dir: str | Path,
    *,
    plot: bool = True,
    progress: bool = False,
    on_error: Callable[[Path, str], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Label every video: ``OUT/<stem>.json`` and its timeline ``OUT/<stem>.png`` each, then one table for
    all (``predictions.csv``, ``predictions.json``). A video that cannot be read is reported (``on_error``)
    and left out; returns (results, failures)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from avel.tools.timeline import save_timeline

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, failed = [], []
    bar = Progress(
        "predict", BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"), TimeRemainingColumn(),
        disable=not progress,
    )  # fmt: skip
    with bar:
        task = bar.add_task("", total=len(videos))
        for video in videos:
            bar.update(task, description=video.name)
            try:
                res = predictor.predict(video)
            except (ValueError, OSError, RuntimeError) as e:
                failed.append({"video": str(video), "reason": " ".join(str(e).split())})
                if on_error is not None:
                    on_error(video, failed[-1]["reason"])
                bar.advance(task)
                continue
            (out_dir / f"{video.stem}.json").write_text(json.dumps(res, indent=1))
            if plot:
                save_timeline(res, out_dir / f"{video.stem}.png")
            results.append(res)
            bar.advance(task)
    write_table(results, out_dir)
    return results, failed
