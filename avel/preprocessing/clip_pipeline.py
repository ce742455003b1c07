"""``avel preprocess`` of a clip dataset: F frames and a log-spectrogram per clip, one ``avel-clips`` file.

Per clip (PMR §5.2 and the released CREMA-D code, data/README.md):
- frames: F frames (10 by default) at the centres of F equal parts of the clip's ``[start, end)`` (the
  whole file by default), frame index floor(time · fps), resized on the shorter side and center-cropped;
- audio: from the separate audio file when the layout has one (CREMA-D's AudioWAV), else the video's
  stream; mono at 16 kHz; the first ``audio_seconds`` of the clip, a shorter clip tiled to that length
  (``np.tile`` in the released code); log-spectrogram (``avel.preprocessing.audio``), standardised per clip.
  3 s at 16 kHz with window 512 and hop 159 gives PMR's 257 × 299 for CREMA-D.
Unreadable clips (missing file, no audio, undecodable, zero length) are listed in ``OUT.report.json`` as for
AVE; the file holds the others. The run is the AVE pipeline's (``avel.preprocessing.runs``): a shard file per
clip, resume after a crash, ``--shard I/N`` and ``--merge``, the output lock and the completion marker.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avel.preprocessing.assemble import Assembler, FileRows, shard_path, write_shard
from avel.preprocessing.audio import (
    SPECTROGRAM_ATTRS,
    fit_length,
    load_audio_and_rate,
    log_spectrogram,
    num_columns,
    spectrogram_params,
)
from avel.preprocessing.clips import Clip, ClipList
from avel.preprocessing.decoders import DECORD, Decoder
from avel.preprocessing.h5 import CLIPS_KIND, create, strings
from avel.preprocessing.runs import ARRAYS, FRAMES, Decoding, PreprocessReport, check_parallel, run_preprocess
from avel.preprocessing.video import first_line, frame_indices, open_checked, resize_center_crop


@dataclass(frozen=True)
class ClipParams:
    frames: int = 10  # frames stored per clip (PMR §5.2: 10 on CREMA-D)
    frame_size: int = 224
    audio_seconds: float = 3.0  # spectrogram window (PMR: 3 s on CREMA-D -> 257 x 299)
    spectrogram: str = "avel"  # the transform (avel.preprocessing.audio.SPECTROGRAMS): avel | pmr | pmr16

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


def decode_clip_frames(
    clip: Clip, p: ClipParams, decoder: Decoder = DECORD
) -> tuple[np.ndarray, dict[str, Any]]:
    """(F, S, S, 3) uint8 frames of the clip's span and the video info; errors name the file."""
    path = clip.video
    reader, n, fps = open_checked(path, decoder)
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


def decode_clip_audio(clip: Clip, p: ClipParams, decoder: Decoder = DECORD) -> tuple[np.ndarray, dict]:
    """(257, L) log-spectrogram of ``audio_seconds`` of the clip's audio (tiled when shorter) and info."""
    spec = spectrogram_params(p.spectrogram)
    path = clip.audio or clip.video
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing file")
    wave, source_rate = load_audio_and_rate(path, spec.sample_rate, decoder)
    lo = round((clip.start or 0.0) * spec.sample_rate)
    hi = len(wave) if clip.end is None else round(clip.end * spec.sample_rate)
    wave = wave[lo:hi]
    if len(wave) == 0:
        raise ValueError(f"{path}: zero length (no audio samples in the clip)")
    window = round(p.audio_seconds * spec.sample_rate)
    spectrogram = log_spectrogram(fit_length(wave, window, "tile"), spec)
    info = {"source_sample_rate": source_rate, "audio_s": len(wave) / spec.sample_rate}
    return spectrogram, info


@dataclass(frozen=True)
class ClipJob:
    """One clip to decode: its id, the clip, the parameters, its shard file, what it returns (as AVE's
    ``pipeline.DecodeJob``; FRAMES: ``_finish`` does its audio on the writer thread)."""

    id: str
    clip: Clip
    params: ClipParams
    shard: str
    returns: str
    decoder: Decoder = DECORD  # the library that decodes (avel.preprocessing.decoders)


def _decode_job(job: ClipJob) -> dict[str, Any]:
    """One clip: decoded whole into its shard file ({id, ok}; ARRAYS: {id, ok, arrays}); FRAMES: its frames
    ({id, ok, job, frames, info}); or {id, ok, path, reason}. Never raises."""
    try:
        frames, info = decode_clip_frames(job.clip, job.params, job.decoder)
        if job.returns == FRAMES:
            return {"id": job.id, "ok": True, "job": job, "frames": frames, "info": info}
    except Exception as e:
        return _failure(job.id, job.clip.video, e)
    try:
        spectrogram, audio_info = decode_clip_audio(job.clip, job.params, job.decoder)
    except Exception as e:
        return _failure(job.id, job.clip.audio or job.clip.video, e)
    arrays = {"frames": frames, "spectrogram": spectrogram, **info, **audio_info}
    write_shard(Path(job.shard), arrays)
    return {"id": job.id, "ok": True, **({"arrays": arrays} if job.returns == ARRAYS else {})}


def _failure(clip_id: str, path: Path, e: BaseException) -> dict[str, Any]:
    return {"id": clip_id, "ok": False, "path": str(path), "reason": first_line(e).removeprefix(f"{path}: ")}


def _finish(asm: Assembler, result: dict[str, Any]) -> dict[str, Any] | None:
    """Audio, spectrogram, shard and row of a clip whose frames the main process decoded (on the writer
    thread, while the next clip's frames decode); a failure like ``_decode_job``'s if the audio is bad."""
    job: ClipJob = result["job"]
    try:
        spectrogram, audio_info = decode_clip_audio(job.clip, job.params, job.decoder)
    except Exception as e:
        return _failure(job.id, job.clip.audio or job.clip.video, e)
    arrays = {"frames": result["frames"], "spectrogram": spectrogram, **result["info"], **audio_info}
    write_shard(Path(job.shard), arrays)
    asm.write(job.id, arrays)
    return None


def preprocess_clips(
    clip_list: ClipList,
    out_h5: str | Path,
    params: ClipParams = ClipParams(),
    *,
    workers: int = 1,
    threads: int | None = None,
    progress: bool = True,
    wait: bool = False,
    shard: tuple[int, int] | None = None,
    merge: bool = False,
    decoder: Decoder = DECORD,
) -> PreprocessReport:
    """Decode every clip of ``clip_list`` into ``out_h5`` (kind ``avel-clips``); failures in the report.

    As for AVE (``avel.preprocessing.runs``): one run per output (``output_lock``: a second run on the same
    file refuses, naming the first); each clip becomes a shard ``OUT.h5.parts/<id>.shard``, so a killed run
    resumes where it stopped; ``shard=(I, N)`` decodes shard I of N only, ``merge`` writes OUT.h5 from the
    shards of every ``--shard I/N`` run: the file one run writes. ``workers``: decoding processes;
    ``threads``: decoding threads of this process instead (default: ``runs.DEFAULT_THREADS`` with one
    process)."""
    params.check()
    decoder.check()
    threads = check_parallel(workers, threads)
    return run_preprocess(
        clips_decoding(clip_list, params, decoder),
        out_h5,
        workers=workers,
        threads=threads,
        progress=progress,
        wait=wait,
        shard=shard,
        merge=merge,
    )


def clips_decoding(clip_list: ClipList, params: ClipParams, decoder: Decoder = DECORD) -> Decoding:
    """A clip-layout run: a shard and a row per clip (``avel.preprocessing.runs``)."""
    spec = spectrogram_params(params.spectrogram)
    by_id: dict[str, Clip] = {}
    for c in clip_list.clips:  # an id names the clip's shard file: one clip each
        if by_id.setdefault(c.clip_id, c) is not c:
            raise ValueError(f"{clip_list.source}:{c.line}: clip id {c.clip_id!r} is already used")
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
        **decoder.stamp(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    f, s = params.frames, params.frame_size
    width = num_columns(round(params.audio_seconds * spec.sample_rate), spec)

    def jobs(ids: list[str], parts: Path, returns: str) -> list[ClipJob]:
        return [ClipJob(i, by_id[i], params, str(shard_path(parts, i)), returns, decoder) for i in ids]

    def file_rows(failed: set[str]) -> FileRows:
        keep = np.array([i for i, c in enumerate(clip_list.clips) if c.clip_id not in failed], dtype=np.int64)
        ids = [clip_list.clips[i].clip_id for i in keep]
        shape = (spec.n_fft // 2 + 1, width)
        return FileRows(
            CLIPS_KIND, attrs, ids, (f, s, s, 3), shape, lambda fh: _write_meta(fh, clip_list, keep)
        )

    stamp = {**asdict(params), **asdict(spec), **decoder.stamp()}
    return Decoding([c.clip_id for c in clip_list.clips], stamp, jobs, _decode_job, file_rows, _finish)


def _write_meta(fh, clip_list: ClipList, keep: np.ndarray) -> None:
    """Row metadata and split indices (renumbered to the kept rows)."""
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
    new_index = np.full(len(clip_list.clips), -1, dtype=np.int64)
    new_index[keep] = np.arange(len(keep))
    for name, rows in clip_list.splits().items():
        r = new_index[rows]
        create(fh, f"splits/{name}", r[r >= 0])
