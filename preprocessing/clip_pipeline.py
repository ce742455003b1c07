"""``avel preprocess`` of a clip dataset: F frames and a log-spectrogram per clip, one ``avel-clips`` file.

Per clip (PMR §5.2 and the released CREMA-D code, data/README.md):
- frames: F frames (10 by default) at the centres of F equal parts of the clip's ``[start, end)`` (the
  whole file by default), frame index floor(time · fps), resized on the shorter side and center-cropped;
- audio: from the separate audio file when the layout has one (CREMA-D's AudioWAV), else the video's
  stream; mono at 16 kHz; the first ``audio_seconds`` of the clip, a shorter clip tiled to that length
  (``np.tile`` in the released code); log-spectrogram (``preprocessing.audio``), standardised per clip.
  3 s at 16 kHz with window 512 and hop 159 gives PMR's 257 × 299 for CREMA-D.
Unreadable clips (missing file, no audio, undecodable, zero length) are listed in ``OUT.report.json`` as for
AVE; the file holds the others. The file is written through ``preprocessing.h5.atomic_h5``/``commit``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from preprocessing.audio import (
    SPECTROGRAM_ATTRS,
    fit_length,
    load_audio,
    log_spectrogram,
    num_columns,
    spectrogram_params,
)
from preprocessing.audio import source_sample_rate as read_source_rate
from preprocessing.clips import Clip, ClipList
from preprocessing.h5 import (
    CLIPS_KIND,
    atomic_h5,
    check_output,
    commit,
    copy_rows,
    create,
    mark_complete,
    row_chunked,
    set_attrs,
    strings,
)
from preprocessing.lock import output_lock
from preprocessing.pipeline import PreprocessReport
from preprocessing.video import first_line, frame_indices, open_checked, resize_center_crop
from preprocessing.workers import run_jobs

SCALARS = {"duration": np.float32, "fps": np.float32, "source_sample_rate": np.int32}


@dataclass(frozen=True)
class ClipParams:
    frames: int = 10  # frames stored per clip (PMR §5.2: 10 on CREMA-D)
    frame_size: int = 224
    audio_seconds: float = 3.0  # spectrogram window (PMR: 3 s on CREMA-D -> 257 x 299)
    spectrogram: str = "avel"  # the transform (preprocessing.audio.SPECTROGRAMS): avel | pmr | pmr16

    def check(self) -> None:
        if self.frames < 1 or self.frame_size < 1 or not self.audio_seconds > 0:
            raise ValueError(f"frames, frame_size and audio_seconds must be positive, got {asdict(self)}")
        spectrogram_params(self.spectrogram)  # an unknown name raises


# per-dataset defaults (frames stored per clip, spectrogram window in seconds), from the papers' code:
# CREMA-D: PMR §5.2 (10 frames, 257 x 299 = 3 s); Kinetics-Sounds: OGM-GE's 10 s clips (its fbank covers
# 1024 x 10 ms); VGGSound: OGM-GE's 5 s audio window of 10 s clips. Frames: 1 per second of a 10 s clip.
DATASETS: dict[str, dict[str, float]] = {
    "crema-d": {"frames": 10, "audio_seconds": 3.0},
    "kinetics-sounds": {"frames": 10, "audio_seconds": 10.0},
    "vggsound": {"frames": 10, "audio_seconds": 5.0},
}


def clip_params(dataset: str | None = None, **given: float | None) -> ClipParams:
    """ClipParams from a dataset's defaults (``DATASETS``) overridden by the ``given`` values not None."""
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {list(DATASETS)}")
    values = {**(DATASETS[dataset] if dataset else {}), **{k: v for k, v in given.items() if v is not None}}
    params = ClipParams(**values)
    params.check()
    return params


def clip_times(start: float, end: float, frames: int) -> np.ndarray:
    """(F,) times: the centres of F equal parts of [start, end)."""
    return start + (np.arange(frames) + 0.5) / frames * (end - start)


def decode_clip_frames(clip: Clip, p: ClipParams) -> tuple[np.ndarray, dict[str, Any]]:
    """(F, S, S, 3) uint8 frames of the clip's span and the video info; errors name the file."""
    path = clip.video
    reader, n, fps = open_checked(path)
    duration = n / fps
    start = clip.start or 0.0
    end = min(clip.end if clip.end is not None else duration, duration)
    if not end > start:
        raise ValueError(f"{path}: clip [{start}, {clip.end}) s lies outside the video ({duration:.2f} s)")
    idx = frame_indices(clip_times(start, end, p.frames), fps, n)
    unique, inverse = np.unique(idx, return_inverse=True)
    try:
        batch = reader.get_batch(unique.tolist()).asnumpy()
    except Exception as e:
        raise ValueError(f"{path}: undecodable frames ({first_line(e)})") from None
    frames = resize_center_crop(batch, p.frame_size)[inverse]
    return frames, {"duration": duration, "fps": fps}


def decode_clip_audio(clip: Clip, p: ClipParams) -> tuple[np.ndarray, dict]:
    """(257, L) log-spectrogram of ``audio_seconds`` of the clip's audio (tiled when shorter) and info."""
    spec = spectrogram_params(p.spectrogram)
    path = clip.audio or clip.video
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing file")
    wave = load_audio(path, spec.sample_rate)
    lo = round((clip.start or 0.0) * spec.sample_rate)
    hi = len(wave) if clip.end is None else round(clip.end * spec.sample_rate)
    wave = wave[lo:hi]
    if len(wave) == 0:
        raise ValueError(f"{path}: zero length (no audio samples in the clip)")
    window = round(p.audio_seconds * spec.sample_rate)
    spectrogram = log_spectrogram(fit_length(wave, window, "tile"), spec)
    info = {"source_sample_rate": read_source_rate(path), "audio_s": len(wave) / spec.sample_rate}
    return spectrogram, info


def _decode_job(job: tuple[int, Clip, ClipParams]) -> dict[str, Any]:
    """One clip: {index, ok, frames, spectrogram, info} or {index, ok, id, path, reason}. Never raises."""
    i, clip, p = job
    path = clip.video
    try:
        frames, info = decode_clip_frames(clip, p)
        path = clip.audio or clip.video
        spectrogram, audio_info = decode_clip_audio(clip, p)
        return {"index": i, "ok": True, "frames": frames, "spectrogram": spectrogram, **info, **audio_info}
    except Exception as e:
        reason = first_line(e).removeprefix(f"{path}: ")
        return {"index": i, "ok": False, "id": clip.clip_id, "path": str(path), "reason": reason}


def _results(jobs: list, workers: int, progress: bool) -> Iterator[dict[str, Any]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar = Progress("preprocess", *columns, disable=not progress)
    with bar:
        task = bar.add_task("decode", total=len(jobs))
        for r in run_jobs(_decode_job, jobs, workers, ordered=True):
            bar.advance(task)
            yield r


def preprocess_clips(
    clip_list: ClipList,
    out_h5: str | Path,
    params: ClipParams = ClipParams(),
    *,
    workers: int = 1,
    progress: bool = True,
    wait: bool = False,
) -> PreprocessReport:
    """Decode every clip of ``clip_list`` into ``out_h5`` (kind ``avel-clips``); failures in the report.
    One run per output (``output_lock``): a second run on the same file refuses, naming the first."""
    params.check()
    out_h5 = Path(out_h5)
    check_output(out_h5)
    with output_lock(out_h5, "avel preprocess", wait=wait):
        return _preprocess_clips(clip_list, out_h5, params, workers, progress)


def _preprocess_clips(
    clip_list: ClipList, out_h5: Path, params: ClipParams, workers: int, progress: bool
) -> PreprocessReport:
    spec = spectrogram_params(params.spectrogram)
    n, f, s = len(clip_list.clips), params.frames, params.frame_size
    width = num_columns(round(params.audio_seconds * spec.sample_rate), spec)
    report = PreprocessReport(str(out_h5), videos=n)
    values = {name: np.zeros(n, dt) for name, dt in SCALARS.items()}
    ok = np.zeros(n, dtype=bool)
    t0 = time.perf_counter()
    fh = atomic_h5(out_h5)
    try:
        frames = row_chunked(fh, "frames", (n, f, s, s, 3), np.uint8)
        spectrogram = row_chunked(fh, "spectrogram", (n, spec.n_fft // 2 + 1, width), np.float32)
        jobs = [(i, c, params) for i, c in enumerate(clip_list.clips)]
        for r in _results(jobs, workers, progress):
            i = r["index"]
            if not r["ok"]:
                report.failed.append({k: r[k] for k in ("id", "path", "reason")})
                continue
            frames[i], spectrogram[i], ok[i] = r["frames"], r["spectrogram"], True
            for name in SCALARS:
                values[name][i] = r[name]
        keep = np.flatnonzero(ok)
        if len(keep) == n:
            _write_meta(fh, clip_list, keep, values, params, spec)
    except BaseException:
        fh.close()
        Path(f"{out_h5}.tmp").unlink(missing_ok=True)
        raise
    fh.close()
    if len(keep) < n:
        _rewrite_without_failed(out_h5, clip_list, keep, values, params, spec)
    else:
        commit(out_h5)
    report.rows = report.decoded = len(keep)
    report.seconds = time.perf_counter() - t0
    report.failed.sort(key=lambda x: x["id"])
    report.save()
    return report


def _rewrite_without_failed(out_h5: Path, clip_list, keep, values, params, spec) -> None:
    """OUT.h5 holding the decoded rows only (copied from the first pass, then that is deleted)."""
    staged = Path(f"{out_h5}.rows.tmp")
    os.replace(f"{out_h5}.tmp", staged)
    try:
        with h5py.File(staged, "r") as src, atomic_h5(out_h5) as dst:
            for name in ("frames", "spectrogram"):
                shape = (len(keep), *src[name].shape[1:])
                copy_rows(row_chunked(dst, name, shape, src[name].dtype), src[name], keep)
            _write_meta(dst, clip_list, keep, values, params, spec)
        commit(out_h5)
    finally:
        staged.unlink(missing_ok=True)


def _write_meta(fh, clip_list: ClipList, keep: np.ndarray, values: dict, params: ClipParams, spec) -> None:
    """Row metadata, split indices (renumbered to the kept rows) and attributes."""
    clips = [clip_list.clips[i] for i in keep]
    base = clip_list.source if clip_list.source.is_dir() else clip_list.source.parent

    def rel(p: Path | None) -> str:
        if p is None:
            return ""
        return os.path.relpath(p, base) if p.is_absolute() == base.is_absolute() else str(p)

    create(fh, "clip_id", strings([c.clip_id for c in clips]))
    create(fh, "category", strings([c.label for c in clips]))
    create(fh, "label", clip_list.labels()[keep])
    create(fh, "video_path", strings([rel(c.video) for c in clips]))
    create(fh, "audio_path", strings([rel(c.audio) for c in clips]))
    nan = float("nan")
    for name in ("start", "end"):
        v = [nan if getattr(c, name) is None else getattr(c, name) for c in clips]
        create(fh, name, np.array(v, dtype=np.float32))
    create(fh, "list_line", np.array([c.line for c in clips], dtype=np.int64))
    for name, v in values.items():
        create(fh, name, v[keep])
    new_index = np.full(len(clip_list.clips), -1, dtype=np.int64)
    new_index[keep] = np.arange(len(keep))
    for name, rows in clip_list.splits().items():
        r = new_index[rows]
        create(fh, f"splits/{name}", r[r >= 0])
    attrs = {
        **asdict(params),
        **asdict(spec),
        **SPECTROGRAM_ATTRS[spec.transform],
        "center": False,
        "audio_pad": "tile",
        "layout": clip_list.layout,
        "classes": list(clip_list.classes),
        "source_dir": str(Path(clip_list.source).resolve()),
        **{k: v for k, v in clip_list.info.items()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    set_attrs(fh, CLIPS_KIND, attrs)
    mark_complete(fh)  # last: the file is whole
