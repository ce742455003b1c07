"""``avel preprocess``: decode every AVE video once into frames + log-spectrogram, write one HDF5 file.

Crash-safe and resumable: each decoded video becomes a shard ``OUT.h5.parts/<id>.shard`` (written to a
temporary name, then ``os.replace``d), a re-run skips finished shards, and the final file is filled in
``OUT.h5.tmp`` while decoding goes on (``preprocessing.assemble``) and renamed onto ``OUT.h5`` only when
complete. With one process, a video's audio, spectrogram, shard and rows are done on a writer thread while
the main thread decodes the next video's frames (decord releases the GIL while it decodes). Bad videos
(missing, no audio stream, undecodable, zero length) go to ``OUT.h5.report.json`` while the rest go on.

Policy for clips that are not exactly 10 s (the AVE file always has 10 segments): longer clips keep
their first 10 s; shorter clips repeat their last decoded frame for the missing seconds and their audio
is zero-padded to 10 s (``audio_pad="tile"`` repeats it instead, like the PMR reference); any fps works
(frame index = floor(time · fps)); stereo and 44.1/48 kHz audio are mixed to mono and resampled to 16 kHz.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from preprocessing.annotations import SEGMENTS, AVEAnnotations, load_ave
from preprocessing.assemble import Assembler, assemble_from_shards, write_shard
from preprocessing.audio import (
    SPECTROGRAM_ATTRS,
    SpecParams,
    fit_length,
    load_audio,
    log_spectrogram,
    segment_columns,
    spectrogram_params,
)
from preprocessing.audio import source_sample_rate as read_source_rate
from preprocessing.ave import ave_video_path
from preprocessing.h5 import RowsMeta, check_output
from preprocessing.lock import output_lock
from preprocessing.video import first_line, open_checked, read_frames
from preprocessing.workers import run_jobs

AUDIO_PADS = ("zero", "tile")


def decode_video(
    path: str | Path, frame_size: int = 224, frames_per_segment: int = 1, segments: int | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Frames (T,K,S,S,3) uint8 and info (duration, fps, num_frames, segments); errors name the file.

    ``segments=None`` takes floor(duration) one-second segments (any video of at least 1 s).
    """
    path = Path(path)
    reader, num_frames, fps = open_checked(path)
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


def decode_audio(path: str | Path, sample_rate: int = 16000) -> tuple[np.ndarray, dict[str, Any]]:
    """Mono waveform (S,) float32 at ``sample_rate`` and info (audio_seconds, source_sample_rate)."""
    wave = load_audio(path, sample_rate)
    if len(wave) == 0:
        raise ValueError(f"{path}: zero length (no audio samples)")
    return wave, {"audio_seconds": len(wave) / sample_rate, "source_sample_rate": read_source_rate(path)}


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Frames (T,K,S,S,3) uint8, spectrogram (257,L) float32, segment_columns (T+1,) int64, info.

    ``segments=None`` takes floor(duration) one-second segments (any video of at least 1 s).
    """
    frames, info = decode_video(path, frame_size, frames_per_segment, segments)
    spectrogram, audio_info = decode_spectrogram(path, info["segments"], audio_pad, spec)
    return frames, spectrogram, segment_columns(info["segments"], spec), {**info, **audio_info}


def decode_spectrogram(
    path: str | Path, segments: int, audio_pad: str = "zero", spec: SpecParams = SpecParams()
) -> tuple[np.ndarray, dict[str, Any]]:
    """(257, L) float32 log-spectrogram of ``segments`` seconds of the file's audio, and the audio info."""
    wave, audio_info = decode_audio(path, spec.sample_rate)
    return clip_spectrogram(wave, segments, audio_pad, spec), audio_info


# ------------------------------------------------------------------------------------------- report


@dataclass
class PreprocessReport:
    out: str
    rows: int = 0  # rows in the written file
    videos: int = 0  # distinct videos in the annotations
    decoded: int = 0  # decoded in this run
    resumed: int = 0  # found finished from an earlier run
    failed: list[dict[str, str]] = field(default_factory=list)  # {id, path, reason}
    seconds: float = 0.0

    @property
    def videos_per_s(self) -> float:
        return self.decoded / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        s = (
            f"{self.out}: {self.rows} rows from {self.videos - len(self.failed)}/{self.videos} videos "
            f"({self.decoded} decoded, {self.resumed} resumed, {self.videos_per_s:.1f} videos/s)"
        )
        if self.failed:
            s += f"; {len(self.failed)} failed, see {self.out}.report.json"
        return s

    def save(self) -> None:
        Path(f"{self.out}.report.json").write_text(
            json.dumps({**asdict(self), "videos_per_s": self.videos_per_s}, indent=2)
        )


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
    """One video to decode: its id, file, shard path, whether it runs in the main process, the parameters."""

    id: str
    path: str
    shard: str
    in_process: bool
    params: DecodeParams
    spec: SpecParams = SpecParams()  # the spectrogram transform


def _decode_job(job: DecodeJob) -> dict[str, Any]:
    """Decode one video; returns {id, ok, ...} or {id, ok, path, reason}. Never raises.

    In a worker process (``job.in_process`` false) it decodes everything and writes the shard. In the
    main process it decodes the frames only and ``_finish`` does the rest on the writer thread (audio,
    spectrogram, shard, rows) while the next video's frames decode.
    """
    path, p = Path(job.path), job.params
    try:
        if job.in_process:
            frames, info = decode_video(path, p.frame_size, p.frames_per_segment, p.segments)
            return {"id": job.id, "ok": True, "job": job, "frames": frames, "info": info}
        frames, spec, _, info = decode_clip(
            path, p.frame_size, p.frames_per_segment, p.segments, p.audio_pad, job.spec
        )
        write_shard(Path(job.shard), {"frames": frames, "spectrogram": spec, **info})
        return {"id": job.id, "ok": True}
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
            job.path, job.params.segments, job.params.audio_pad, job.spec
        )
    except Exception as e:
        return _failure(job, e)
    arrays = {"frames": result["frames"], "spectrogram": spectrogram, **result["info"], **audio_info}
    write_shard(Path(job.shard), arrays)
    asm.write(job.id, arrays)
    return None


def _run_jobs(jobs: list[DecodeJob], workers: int, progress: bool):
    """Yield job results as they finish, with a rich progress bar (videos/s) when asked."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed or 0:.1f} videos/s")

    bar = Progress(
        "preprocess", BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn(), disable=not progress
    )
    with bar:
        task = bar.add_task("decode", total=len(jobs))
        for r in run_jobs(_decode_job, jobs, workers):
            bar.advance(task)
            yield r


# ---------------------------------------------------------------------------------------- pipeline


def preprocess(
    dataset_dir: str | Path,
    out_h5: str | Path,
    *,
    workers: int = 1,
    frame_size: int = 224,
    frames_per_segment: int = 1,
    audio_pad: str = "zero",
    progress: bool = True,
    classes: list[str] | None = None,
    wait: bool = False,
    shard: tuple[int, int] | None = None,
    merge: bool = False,
    spectrogram: str = "avel",
) -> PreprocessReport:
    """Decode every video of an AVE-layout folder (AVE/<id>.mp4, Annotations.txt, *Set.txt) into OUT.h5.

    One run per output: a second run on the same OUT.h5 refuses at once, naming the first (``wait``:
    waits for it instead); everything the run writes (OUT.h5.tmp, OUT.h5.parts/) is under that lock.

    Across machines: ``shard=(I, N)`` decodes only the videos ``shard_ids`` gives shard I of N into
    OUT.h5.parts/ (one ``<id>.shard`` each, resumable, under the lock OUT.h5.shard-I-of-N.lock) and writes
    OUT.h5.shard-I-of-N.report.json; ``merge`` then writes OUT.h5 from those shards alone (refusing when
    a video has neither a shard nor a failure in a shard report): the file a single run writes.
    ``spectrogram`` names the transform (``preprocessing.audio.SPECTROGRAMS``): "avel", "pmr" (the
    released PMR code's: 22.05 kHz, Tukey window, log power spectral density) or "pmr16" (the same at 16 kHz).
    """
    spec = spectrogram_params(spectrogram)
    if audio_pad not in AUDIO_PADS:
        raise ValueError(f"unknown audio_pad {audio_pad!r}; valid: {list(AUDIO_PADS)}")
    if frame_size < 1 or frames_per_segment < 1:
        raise ValueError(
            f"frame_size and frames_per_segment must be >= 1, got {frame_size}, {frames_per_segment}"
        )
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    dataset_dir, out_h5 = Path(dataset_dir), Path(out_h5)
    if not dataset_dir.is_dir():
        raise FileNotFoundError(f"{dataset_dir}: no such folder (an AVE-layout dataset folder)")
    ann = load_ave(dataset_dir, classes=classes)
    check_output(out_h5)
    decode = DecodeParams(frame_size, frames_per_segment, SEGMENTS, audio_pad)
    if shard is not None:
        index, count = check_shard(shard)
        with output_lock(f"{out_h5}.shard-{index}-of-{count}", "avel preprocess --shard", wait=wait):
            return _preprocess_shard(dataset_dir, out_h5, ann, index, count, decode, workers, progress, spec)
    with output_lock(out_h5, "avel preprocess", wait=wait):
        return _preprocess_locked(
            dataset_dir,
            out_h5,
            ann,
            workers,
            frame_size,
            frames_per_segment,
            audio_pad,
            progress,
            merge,
            spec,
        )


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    """(I, N) with N >= 1 and 0 <= I < N, or a one-line error."""
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {index}/{count}: needs I/N with N >= 1 and 0 <= I < N (I counts from 0)")
    return index, count


def shard_ids(ids: list[str], index: int, count: int) -> list[str]:
    """Shard ``index`` of ``count``: every ``count``-th distinct video id in annotation order, from the
    ``index``-th (0-based), so the shards are disjoint, cover every video and differ by at most one."""
    return ids[index::count]


def _preprocess_shard(
    dataset_dir: Path,
    out_h5: Path,
    ann: AVEAnnotations,
    index: int,
    count: int,
    decode: DecodeParams,
    workers: int,
    progress: bool,
    spec: SpecParams = SpecParams(),
) -> PreprocessReport:
    """Shard ``index`` of ``count``: its videos' shard files in OUT.h5.parts/ and its report (no OUT.h5)."""
    parts = _parts_dir(out_h5, {**asdict(decode), **asdict(spec)})
    ids = shard_ids(list(dict.fromkeys(r.video_id for r in ann.rows)), index, count)
    report = PreprocessReport(f"{out_h5}.shard-{index}-of-{count}", videos=len(ids))
    t0 = time.perf_counter()
    jobs = [
        DecodeJob(
            vid, str(ave_video_path(dataset_dir, vid)), str(parts / f"{vid}.shard"), False, decode, spec
        )
        for vid in ids
        if not (parts / f"{vid}.shard").is_file()
    ]
    report.resumed = len(ids) - len(jobs)
    failed = [r for r in _run_jobs(jobs, workers, progress) if not r["ok"]]
    report.failed = sorted(
        ({k: r[k] for k in ("id", "path", "reason")} for r in failed), key=lambda f: f["id"]
    )
    report.decoded = len(jobs) - len(failed)
    bad = {f["id"] for f in report.failed}
    report.rows = sum(1 for r in ann.rows if r.video_id in set(ids) - bad)
    report.seconds = time.perf_counter() - t0
    report.save()
    return report


def _shard_failures(out_h5: Path) -> dict[str, dict[str, str]]:
    """The failed videos of every shard report of OUT.h5 (OUT.h5.shard-*-of-*.report.json), by id."""
    failed = {}
    for path in sorted(out_h5.parent.glob(f"{out_h5.name}.shard-*-of-*.report.json")):
        for f in json.loads(path.read_text())["failed"]:
            failed[f["id"]] = {"id": f["id"], "ok": False, "path": f["path"], "reason": f["reason"]}
    return failed


def _preprocess_locked(
    dataset_dir: Path,
    out_h5: Path,
    ann: AVEAnnotations,
    workers: int,
    frame_size: int,
    frames_per_segment: int,
    audio_pad: str,
    progress: bool,
    merge: bool = False,
    spec: SpecParams = SpecParams(),
) -> PreprocessReport:
    decode = DecodeParams(frame_size, frames_per_segment, SEGMENTS, audio_pad)
    params = {**asdict(decode), **asdict(spec)}
    parts = _parts_dir(out_h5, params)
    attrs = {
        **params,
        **SPECTROGRAM_ATTRS[spec.transform],
        "center": False,
        "source_dir": str(dataset_dir.resolve()),
        "annotations": str(ann.source),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    ids = list(dict.fromkeys(r.video_id for r in ann.rows))
    report = PreprocessReport(str(out_h5), videos=len(ids))
    in_process = workers <= 1
    t0 = time.perf_counter()
    failed_in_shards = _shard_failures(out_h5) if merge else {}
    if merge:
        missing = [v for v in ids if v not in failed_in_shards and not (parts / f"{v}.shard").is_file()]
        if missing:
            raise ValueError(
                f"{parts}: {len(missing)} of {len(ids)} videos have no shard (first: {missing[0]}); "
                "run every --shard I/N to the end before --merge"
            )
    asm = Assembler(out_h5, RowsMeta.from_annotations(ann), attrs, spec)
    try:
        jobs = []
        for vid in ids:
            shard = parts / f"{vid}.shard"
            if shard.is_file():
                report.resumed += 1
                asm.submit(asm.write_shard_file, vid, shard)
            elif vid in failed_in_shards:  # --merge: failed in its shard run, as it would in one run
                asm.failed.append(failed_in_shards[vid])
            else:
                path = str(ave_video_path(dataset_dir, vid))
                jobs.append(DecodeJob(vid, path, str(shard), in_process, decode, spec))
        for r in _run_jobs(jobs, workers, progress):
            if not r["ok"]:
                asm.failed.append(r)
            elif "frames" in r:
                asm.submit(_finish, asm, r)
            else:
                asm.submit(asm.write_shard_file, r["id"], parts / f"{r['id']}.shard")
        asm.wait()
    except BaseException:
        asm.close(keep=False)
        raise
    report.failed = [{k: r[k] for k in ("id", "path", "reason")} for r in asm.failed]
    report.decoded = len(jobs) - len(report.failed)
    if report.failed:  # the file lacks their rows: write it again, from the shards, without them
        asm.close(keep=False)
        failed = {f["id"] for f in report.failed}
        keep = np.array([i for i, r in enumerate(ann.rows) if r.video_id not in failed], dtype=np.int64)
        report.rows = assemble_from_shards(out_h5, parts, RowsMeta.from_annotations(ann, keep), attrs, spec)
    else:
        report.rows = asm.close(keep=True)
    report.seconds = time.perf_counter() - t0
    shutil.rmtree(parts)
    report.failed.sort(key=lambda f: f["id"])
    report.save()
    return report


def _parts_dir(out_h5: Path, params: dict[str, Any]) -> Path:
    """OUT.h5.parts/, created with params.json; shards from other parameters are an error."""
    parts = Path(f"{out_h5}.parts")
    stamp = parts / "params.json"
    if stamp.is_file():
        old = json.loads(stamp.read_text())
        if old != params:
            diff = {k: (old.get(k), v) for k, v in params.items() if old.get(k) != v}
            raise ValueError(
                f"{parts}: unfinished shards from another run with different parameters "
                f"(found vs needed: {diff}); delete that folder to start over"
            )
    else:
        parts.mkdir(parents=True, exist_ok=True)  # --shard runs may start at once: stamp atomically
        tmp = parts / f"params.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(params))
        os.replace(tmp, stamp)
    return parts
