"""``avel preprocess``: decode every AVE video once into frames + log-spectrogram, write one HDF5 file.

Crash-safe and resumable, shardable across machines (``avel.preprocessing.runs``, as for clip sets): each
decoded video becomes a shard ``OUT.h5.parts/<id>.shard``, a re-run skips finished shards, and the final
file is filled in ``OUT.h5.tmp`` while decoding goes on (``avel.preprocessing.assemble``) and renamed onto
``OUT.h5`` only when complete. In one process, ``threads`` N (2 by default) threads decode whole videos
into their shards (decord and torchcodec release the GIL while they decode) and a writer thread writes
their rows; with one thread, a video's audio, spectrogram, shard and rows are done on the writer thread
while the main thread decodes the next video's frames. Bad videos (missing, no audio stream, undecodable,
zero length) go to ``OUT.h5.report.json`` while the rest go on.

Policy for clips that are not exactly 10 s (the AVE file always has 10 segments): longer clips keep
their first 10 s; shorter clips repeat their last decoded frame for the missing seconds and their audio
is zero-padded to 10 s (``audio_pad="tile"`` repeats it instead, like the PMR reference); any fps works
(frame index = floor(time · fps)); stereo and 44.1/48 kHz audio are mixed to mono and resampled to 16 kHz.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avel.preprocessing.annotations import SEGMENTS, AVEAnnotations, load_ave
from avel.preprocessing.assemble import Assembler, FileRows, shard_path, write_shard
from avel.preprocessing.audio import (
    SPECTROGRAM_ATTRS,
    SpecParams,
    fit_length,
    load_audio_and_rate,
    log_spectrogram,
    segment_columns,
    spectrogram_params,
)
from avel.preprocessing.ave import ave_video_path
from avel.preprocessing.decoders import DECORD, Decoder
from avel.preprocessing.h5 import PREPROCESS_KIND, RowsMeta, check_output, create
from avel.preprocessing.runs import ARRAYS, FRAMES, Decoding, PreprocessReport, check_parallel, run_preprocess
from avel.preprocessing.video import first_line, open_checked, read_frames

__all__ = ["PreprocessReport", "decode_clip", "preprocess"]  # PreprocessReport: avel.preprocessing.runs'

AUDIO_PADS = ("zero", "tile")


def decode_video(
    path: str | Path,
    frame_size: int = 224,
    frames_per_segment: int = 1,
    segments: int | None = None,
    decoder: Decoder = DECORD,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Frames (T,K,S,S,3) uint8 and info (duration, fps, num_frames, segments); errors name the file.

    ``segments=None`` takes floor(duration) one-second segments (any video of at least 1 s).
    """
    path = Path(path)
    reader, num_frames, fps = open_checked(path, decoder)
    duration = num_frames / fps
    if segments is None:
        segments = math.floor(duration + 1e-6)
        if segments < 1:
            raise ValueError(f"{path}: {duration:.2f} s long; at least 1 s is needed")
    try:
        frames = read_frames(reader, segments, frames_per_segment, frame_size)
    except Exception as e:
        raise ValueError(f"{path}: undecodable frames ({first_line(e)})") from None
    return frames, {"duration": duration, "fps": fps, "num_frames": num_frames, "segments": segments}


def decode_audio(
    path: str | Path, sample_rate: int = 16000, decoder: Decoder = DECORD
) -> tuple[np.ndarray, dict[str, Any]]:
    """Mono waveform (S,) float32 at ``sample_rate`` and info (audio_seconds, source_sample_rate)."""
    wave, source_rate = load_audio_and_rate(path, sample_rate, decoder)
    if len(wave) == 0:
        raise ValueError(f"{path}: zero length (no audio samples)")
    return wave, {"audio_seconds": len(wave) / sample_rate, "source_sample_rate": source_rate}


def clip_spectrogram(
    wave: np.ndarray, segments: int, audio_pad: str = "zero", spec: SpecParams = SpecParams()
) -> np.ndarray:
    """(257, L) float32 log-spectrogram of ``segments`` seconds of ``wave`` (cut or padded per the policy)."""
    return log_spectrogram(fit_length(wave, segments * spec.sample_rate, audio_pad), spec)


def decode_clip(
    path: str | Path,
    frame_size: int = 224,
    frames_per_segment: int = 1,
    segments: int | None = None,
    audio_pad: str = "zero",
    spec: SpecParams = SpecParams(),
    decoder: Decoder = DECORD,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Frames (T,K,S,S,3) uint8, spectrogram (257,L) float32, segment_columns (T+1,) int64, info.

    ``segments=None`` takes floor(duration) one-second segments (any video of at least 1 s).
    """
    frames, info = decode_video(path, frame_size, frames_per_segment, segments, decoder)
    spectrogram, audio_info = decode_spectrogram(path, info["segments"], audio_pad, spec, decoder)
    return frames, spectrogram, segment_columns(info["segments"], spec), {**info, **audio_info}


def decode_spectrogram(
    path: str | Path,
    segments: int,
    audio_pad: str = "zero",
    spec: SpecParams = SpecParams(),
    decoder: Decoder = DECORD,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(257, L) float32 log-spectrogram of ``segments`` seconds of the file's audio, and the audio info."""
    wave, audio_info = decode_audio(path, spec.sample_rate, decoder)
    return clip_spectrogram(wave, segments, audio_pad, spec), audio_info


# ----------------------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class DecodeParams:
    """What a preprocess run decodes every video with (in OUT.h5's attributes and the shards' stamp)."""

    frame_size: int
    frames_per_segment: int
    segments: int
    audio_pad: str


@dataclass(frozen=True)
class DecodeJob:
    """One video to decode: its id, file, shard path, what it returns (``avel.preprocessing.runs``: FRAMES,
    ARRAYS or SHARD), the parameters."""

    id: str
    path: str
    shard: str
    returns: str
    params: DecodeParams
    spec: SpecParams = SpecParams()  # the spectrogram transform
    decoder: Decoder = DECORD  # the library that decodes (avel.preprocessing.decoders)


def _decode_job(job: DecodeJob) -> dict[str, Any]:
    """Decode one video; returns {id, ok, ...} or {id, ok, path, reason}. Never raises.

    FRAMES (the main thread of a one-thread run): the frames only; ``_finish`` does the rest on the
    writer thread (audio, spectrogram, shard, rows) while the next video's frames decode. Otherwise it
    decodes everything and writes the shard; ARRAYS (a decoding thread) also returns the arrays, whose rows
    the writer thread writes.
    """
    path, p = Path(job.path), job.params
    try:
        if job.returns == FRAMES:
            frames, info = decode_video(path, p.frame_size, p.frames_per_segment, p.segments, job.decoder)
            return {"id": job.id, "ok": True, "job": job, "frames": frames, "info": info}
        frames, spec, _, info = decode_clip(
            path, p.frame_size, p.frames_per_segment, p.segments, p.audio_pad, job.spec, job.decoder
        )
        arrays = {"frames": frames, "spectrogram": spec, **info}
        write_shard(Path(job.shard), arrays)
        return {"id": job.id, "ok": True, **({"arrays": arrays} if job.returns == ARRAYS else {})}
    except Exception as e:
        return _failure(job, e)


def _failure(job: DecodeJob, e: BaseException) -> dict[str, Any]:
    reason = first_line(e).removeprefix(f"{job.path}: ")
    return {"id": job.id, "ok": False, "path": job.path, "reason": reason}


def _finish(asm: Assembler, result: dict[str, Any]) -> dict[str, Any] | None:
    """Audio, spectrogram, shard and rows of a video whose frames the main process decoded (on the
    writer thread); returns a failure like ``_decode_job``'s if the audio is bad."""
    job: DecodeJob = result["job"]
    try:
        spectrogram, audio_info = decode_spectrogram(
            job.path, job.params.segments, job.params.audio_pad, job.spec, job.decoder
        )
    except Exception as e:
        return _failure(job, e)
    arrays = {"frames": result["frames"], "spectrogram": spectrogram, **result["info"], **audio_info}
    write_shard(Path(job.shard), arrays)
    asm.write(job.id, arrays)
    return None


# ---------------------------------------------------------------------------------------- pipeline


def preprocess(
    dataset_dir: str | Path,
    out_h5: str | Path,
    *,
    workers: int = 1,
    threads: int | None = None,
    frame_size: int = 224,
    frames_per_segment: int = 1,
    audio_pad: str = "zero",
    progress: bool = True,
    classes: list[str] | None = None,
    wait: bool = False,
    shard: tuple[int, int] | None = None,
    merge: bool = False,
    spectrogram: str = "avel",
    decoder: Decoder = DECORD,
) -> PreprocessReport:
    """Decode every video of an AVE-layout folder (AVE/<id>.mp4, Annotations.txt, *Set.txt) into OUT.h5.

    One run per output: a second run on the same OUT.h5 refuses at once, naming the first (``wait``:
    waits for it instead); everything the run writes (OUT.h5.tmp, OUT.h5.parts/) is under that lock.

    Across machines: ``shard=(I, N)`` decodes only the videos ``shard_ids`` gives shard I of N into
    OUT.h5.parts/ (one ``<id>.shard`` each, resumable, under the lock OUT.h5.shard-I-of-N.lock) and writes
    OUT.h5.shard-I-of-N.report.json; ``merge`` then writes OUT.h5 from those shards alone (refusing when
    a video has neither a shard nor a failure in a shard report): the file a single run writes
    (``avel.preprocessing.runs``).
    ``spectrogram`` names the transform (``avel.preprocessing.audio.SPECTROGRAMS``): "avel", "pmr" (the
    released PMR code's: 22.05 kHz, Tukey window, log power spectral density) or "pmr16" (the same at 16 kHz).
    ``decoder``: decord (default) or torchcodec (``avel.preprocessing.decoders``). ``workers``: decoding
    processes; ``threads``: decoding threads of this process instead (default: ``runs.DEFAULT_THREADS``
    with one process; the same file for any number).
    """
    spec = spectrogram_params(spectrogram)
    decoder.check()
    if audio_pad not in AUDIO_PADS:
        raise ValueError(f"unknown audio_pad {audio_pad!r}; valid: {list(AUDIO_PADS)}")
    if frame_size < 1 or frames_per_segment < 1:
        raise ValueError(
            f"frame_size and frames_per_segment must be >= 1, got {frame_size}, {frames_per_segment}"
        )
    threads = check_parallel(workers, threads)
    dataset_dir, out_h5 = Path(dataset_dir), Path(out_h5)
    if not dataset_dir.is_dir():
        raise FileNotFoundError(f"{dataset_dir}: no such folder (an AVE-layout dataset folder)")
    ann = load_ave(dataset_dir, classes=classes)
    check_output(out_h5)
    decode = DecodeParams(frame_size, frames_per_segment, SEGMENTS, audio_pad)
    return run_preprocess(
        ave_decoding(dataset_dir, ann, decode, spec, decoder),
        out_h5,
        workers=workers,
        threads=threads,
        progress=progress,
        wait=wait,
        shard=shard,
        merge=merge,
    )


def ave_decoding(
    dataset_dir: Path, ann: AVEAnnotations, decode: DecodeParams, spec: SpecParams, decoder: Decoder = DECORD
) -> Decoding:
    """An AVE-layout run: a shard per video, a row per annotation line (``avel.preprocessing.runs``)."""
    params = {**asdict(decode), **asdict(spec), **decoder.stamp()}
    attrs = {
        **params,
        **SPECTROGRAM_ATTRS[spec.transform],
        "center": False,
        "source_dir": str(dataset_dir.resolve()),
        "annotations": str(ann.source),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }

    def jobs(ids: list[str], parts: Path, returns: str) -> list[DecodeJob]:
        return [
            DecodeJob(
                v,
                str(ave_video_path(dataset_dir, v)),
                str(shard_path(parts, v)),
                returns,
                decode,
                spec,
                decoder,
            )
            for v in ids
        ]

    def file_rows(failed: set[str]) -> FileRows:
        keep = np.array([i for i, r in enumerate(ann.rows) if r.video_id not in failed], dtype=np.int64)
        return ave_file_rows(RowsMeta.from_annotations(ann, keep), attrs, spec)

    return Decoding([r.video_id for r in ann.rows], params, jobs, _decode_job, file_rows, _finish)


def ave_file_rows(meta: RowsMeta, attrs: dict[str, Any], spec: SpecParams) -> FileRows:
    """An ``avel-preprocess`` file of ``meta``'s rows: (10, K, S, S, 3) frames and 10 s of audio each."""
    columns = segment_columns(SEGMENTS, spec)
    k, s = attrs["frames_per_segment"], attrs["frame_size"]

    def write_meta(f) -> None:
        meta.write(f)
        create(f, "segment_columns", columns)

    shape = (spec.n_fft // 2 + 1, int(columns[-1]))
    ids = [str(v) for v in meta.video_id]
    return FileRows(PREPROCESS_KIND, attrs, ids, (SEGMENTS, k, s, s, 3), shape, write_meta)
