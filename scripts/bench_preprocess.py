"""Benchmark: videos/s of ``preprocess`` beside the decode-only floor on the same files (not a test).

The floor is decord alone reading what preprocess reads (the same frame indices with ``get_batch`` and
the 16 kHz mono audio), nothing else. The set is written with PyAV here: 10 s clips of a moving
texture, H.264 at the given size and fps, 44.1 kHz stereo AAC noise.

    python scripts/bench_preprocess.py --videos 24 --frame-size 224 --width 320 --height 240 --fps 25
    python scripts/bench_preprocess.py --videos 48 --steps     # also each step's ms per video, timed alone
    python scripts/bench_preprocess.py --decoders decord,torchcodec --clock cpu --steps  # per thread, CPU
    python scripts/bench_preprocess.py --decoders decord,torchcodec --clock cpu   # both decoders, CPU time

``--threads 1,2`` times ``preprocess --threads N`` for each N (decoding threads of one process), each
beside the floors in the same interleaved runs; without it preprocess runs with its default (2 threads
with ``--workers 1``, 1 with worker processes). ``--media DIR`` keeps the generated set in DIR and reuses
it on the next run with the same set options (generate it once, time it later, e.g. on idle cores):

    python scripts/bench_preprocess.py --media /tmp/set24 --videos 24 --generate-only
    python scripts/bench_preprocess.py --media /tmp/set24 --decoders decord,torchcodec --threads 1,2

``--decoders`` adds, per decoder, its own decode-only floor (torchcodec: ``VideoDecoder.get_frames_at`` of
the same indices and ``AudioDecoder`` at 16 kHz mono) and ``preprocess --decoder``, all beside the decord
floor in the same interleaved runs. ``--clock cpu`` times process CPU time (every thread of this process
and of its worker processes; other processes on a shared machine do not count): a measure of work, not of
how two cores overlap it. With the wall clock the script also prints the CPU time other processes used
during the timed runs (``/proc/stat`` less this process's): a wall figure is an idle-core figure only
when that is near zero.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import decord
import numpy as np

from avel.preprocessing.annotations import SEGMENTS
from avel.preprocessing.assemble import write_shard
from avel.preprocessing.audio import decoded_samples, load_audio, load_audio_and_rate
from avel.preprocessing.decoders import Decoder, TorchcodecVideo, torchcodec_audio, torchcodec_unavailable
from avel.preprocessing.pipeline import clip_spectrogram, preprocess
from avel.preprocessing.video import (
    frame_indices,
    frame_times,
    open_video,
    read_frames,
    resize_center_crop,
)


def write_mp4(
    path: Path, rng: np.random.Generator, fps: int, hw: tuple[int, int], seconds=10, sr=44100
) -> None:
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=Fraction(fps))
        v.height, v.width = hw
        v.pix_fmt = "yuv420p"
        a = c.add_stream("aac", rate=sr)
        a.layout = "stereo"
        base = rng.integers(0, 255, (hw[0] // 8, hw[1] // 8, 3), dtype=np.uint8)
        for i in range(seconds * fps):
            img = np.roll(np.kron(base, np.ones((8, 8, 1), np.uint8)), i, axis=1)  # moving texture
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        wave = (0.1 * rng.standard_normal((2, seconds * sr))).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="stereo")
        frame.sample_rate = sr
        for p in [*a.encode(frame), *a.encode()]:
            c.mux(p)


def make_set(root: Path, videos: int, seed: int, hw: tuple[int, int], fps: int) -> None:
    rng = np.random.default_rng(seed)
    (root / "AVE").mkdir(parents=True)
    lines = []
    for i in range(videos):
        write_mp4(root / "AVE" / f"vid{i:04d}.mp4", rng, fps=fps, hw=hw)
        lines.append(f"Class {i % 4}&vid{i:04d}&good&0&10")
    (root / "Annotations.txt").write_text("\n".join(lines) + "\n")
    for name in ("trainSet.txt", "valSet.txt", "testSet.txt"):
        (root / name).write_text("\n".join(lines) + "\n")


CLOCK = time.perf_counter  # --clock cpu: cpu_time
MAIN_THREAD: dict[str, list[float]] = {}  # each preprocess run's CPU seconds on the main thread


def cpu_time() -> float:
    """CPU seconds of this process and of its waited-for children (``--workers`` > 1: the pool's)."""
    return sum(os.times()[:4])


def busy_seconds() -> float:
    """CPU seconds every process of the machine has used so far (``/proc/stat``; 0 where it is absent)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def decode_floor(root: Path, frames_per_segment: int, decoder: str = "decord") -> float:
    """Seconds for the decoder alone to read every video's frames and audio."""
    paths = sorted((root / "AVE").glob("*.mp4"))
    t0 = CLOCK()
    for p in paths:
        if decoder == "torchcodec":
            vr = TorchcodecVideo(p)
            idx = frame_indices(frame_times(SEGMENTS, frames_per_segment), vr.get_avg_fps(), len(vr))
            vr.get_batch(np.unique(idx).tolist()).asnumpy()
            torchcodec_audio(p, 16000)  # and the source rate, which the decord floor does not probe
            continue
        vr = decord.VideoReader(str(p), num_threads=1)
        idx = frame_indices(frame_times(SEGMENTS, frames_per_segment), vr.get_avg_fps(), len(vr))
        vr.get_batch(np.unique(idx).tolist()).asnumpy()
        decoded_samples(decord.AudioReader(str(p), sample_rate=16000, mono=True))
    return CLOCK() - t0


def time_preprocess(
    root: Path, args: argparse.Namespace, decoder: str = "decord", threads: int | None = None
) -> float:
    """Seconds of one ``preprocess`` run from scratch (no shards, no output file)."""
    (root / "out.h5").unlink(missing_ok=True)
    t0, main0 = CLOCK(), time.thread_time()
    report = preprocess(
        args.set_dir,
        root / "out.h5",
        workers=args.workers,
        threads=threads,
        frame_size=args.frame_size,
        frames_per_segment=args.frames_per_segment,
        progress=False,
        decoder=Decoder(decoder, args.decoder_device if decoder == "torchcodec" else "cpu"),
    )
    assert not report.failed, report.failed
    MAIN_THREAD.setdefault(f"{decoder}/{threads}", []).append(time.thread_time() - main0)
    return CLOCK() - t0


def step_times(root: Path, args: argparse.Namespace, decoder: str = "decord") -> dict[str, float]:
    """Milliseconds per video of each step of preprocess with ``decoder``, timed alone over the set (on
    ``--clock``): the main thread's (open + frames: decode, resize) and the writer thread's (audio with the
    source rate, spectrogram, shard write)."""
    paths = sorted((root / "AVE").glob("*.mp4"))
    dec = Decoder(decoder)
    wave = load_audio(paths[0], decoder=dec)
    spec = clip_spectrogram(wave, SEGMENTS)
    frames = read_frames(open_video(paths[0], dec), SEGMENTS, args.frames_per_segment, args.frame_size)
    shard = root / "step.shard"
    arrays = {"frames": frames, "spectrogram": spec, "duration": 10.0, "fps": 25.0, "num_frames": 250}
    arrays |= {"segments": SEGMENTS, "audio_seconds": 10.0, "source_sample_rate": 44100}
    steps = {
        f"main thread: open + frames ({decoder} decode)": lambda p: open_video(p, dec).get_batch(
            np.unique(frame_indices(frame_times(SEGMENTS, args.frames_per_segment), 25.0, 250)).tolist()
        ),
        "main thread: resize + crop (torch, antialiased)": lambda p: resize_center_crop(raw, args.frame_size),
        f"writer thread: audio 16 kHz mono + source rate ({decoder})": lambda p: load_audio_and_rate(
            p, 16000, dec
        ),
        "writer thread: log-spectrogram": lambda p: clip_spectrogram(wave, SEGMENTS),
        "writer thread: shard write": lambda p: write_shard(shard, arrays),
    }
    raw = open_video(paths[0], dec).get_batch(list(range(12, 250, 25))).asnumpy()
    times = {}
    for name, fn in steps.items():
        t0 = CLOCK()
        for p in paths:
            fn(p)
        times[name] = (CLOCK() - t0) / len(paths) * 1000
    return times


def media_set(args: argparse.Namespace, root: Path) -> Path:
    """The set to time: ``--media DIR`` when it holds one made with the same options (else it is made
    there), or a fresh one under ``root``."""
    options = {k: getattr(args, k) for k in ("videos", "seed", "width", "height", "fps")}
    if args.media is None:
        make_set(root / "set", args.videos, args.seed, (args.height, args.width), args.fps)
        return root / "set"
    stamp = args.media / "bench_set.json"
    if stamp.is_file():
        if json.loads(stamp.read_text()) != options:
            raise SystemExit(f"{args.media}: a set made with {stamp.read_text()}, not {options}")
        return args.media
    if args.media.exists():
        raise SystemExit(f"{args.media}: exists and is not a set of this script (no bench_set.json)")
    make_set(args.media, args.videos, args.seed, (args.height, args.width), args.fps)
    stamp.write_text(json.dumps(options))
    return args.media


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--frame-size", type=int, default=224)
    ap.add_argument("--frames-per-segment", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument(
        "--threads", default="", help="preprocess --threads: one or more, comma-separated (default: its own)"
    )
    ap.add_argument("--media", type=Path, help="keep the generated set here and reuse it when it matches")
    ap.add_argument("--generate-only", action="store_true", help="with --media: write the set and stop")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each; medians are reported")
    ap.add_argument("--steps", action="store_true", help="also time each step of preprocess alone")
    ap.add_argument("--decoders", default="decord", help="decord and/or torchcodec, comma-separated")
    ap.add_argument(
        "--decoder-device", default="cpu", help="torchcodec's preprocess runs: cpu | cuda (NVDEC)"
    )
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="cpu: process CPU time")
    args = ap.parse_args()
    global CLOCK
    CLOCK = cpu_time if args.clock == "cpu" else time.perf_counter
    decoders = args.decoders.split(",")
    why = torchcodec_unavailable() if "torchcodec" in decoders else ""
    if why:  # the other decoders still run; the line says why this one did not
        print(f"decoder torchcodec skipped: torchcodec cannot load here: {why}")
        decoders = [d for d in decoders if d != "torchcodec"] or ["decord"]
    thread_counts = [int(t) for t in args.threads.split(",")] if args.threads else [None]
    root = Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    try:
        args.set_dir = media_set(args, root)
        if args.generate_only:
            print(f"set written: {args.set_dir}")
            return
        n = len(list((args.set_dir / "AVE").glob("*.mp4")))
        for d in decoders:
            decode_floor(args.set_dir, args.frames_per_segment, d)  # warm the page cache and the decoder
        floors: dict[str, list[float]] = {d: [] for d in ["decord", *decoders]}
        runs = [(d, t) for d in decoders for t in thread_counts]
        totals: dict[tuple[str, int], list[float]] = {r: [] for r in runs}
        busy0, own0, wall0 = busy_seconds(), cpu_time(), time.perf_counter()
        for _ in range(args.repeat):  # interleaved, so all see the same machine noise; medians reported
            for d in floors:
                floors[d].append(decode_floor(args.set_dir, args.frames_per_segment, d))
            for d, t in runs:
                totals[d, t].append(time_preprocess(root, args, d, t))
        foreign = busy_seconds() - busy0 - (cpu_time() - own0)  # other processes' CPU seconds
        wall = time.perf_counter() - wall0
        floor_vps = n / statistics.median(floors["decord"])
        print(
            f"videos: {n}, frame_size {args.frame_size}, K {args.frames_per_segment}, workers {args.workers}",
            f"(floor: 1 process, 1 thread), median of {args.repeat} interleaved runs, {args.clock} clock",
        )
        print(f"source: {args.width}x{args.height} at {args.fps} fps, 10 s, 44.1 kHz stereo")
        print(
            f"other processes during the timed runs: {max(foreign, 0.0):.1f} CPU-s in {wall:.1f} s "
            f"({max(foreign, 0.0) / wall:.2f} cores on average; {os.cpu_count()} cores)"
        )
        print(f"decode-only floor (decord, 1 process): {floor_vps:.2f} videos/s")
        for d in decoders:
            if d != "decord":
                d_floor = n / statistics.median(floors[d])
                print(
                    f"decode-only floor ({d}, 1 process): {d_floor:.2f} videos/s ({d_floor / floor_vps:.2f}x)"
                )
        for d, t in runs:
            pre_vps = n / statistics.median(totals[d, t])
            name = f"--decoder {d}" + (f" --threads {t}" if t else " (default threads)")
            print(f"preprocess {name} (end to end, incl. HDF5 assembly): {pre_vps:.2f} videos/s")
            print(
                f"ratio preprocess ({name}) / decord floor: {pre_vps / floor_vps:.2f}x (goal >= 0.8x; "
                "#30: 1.5x)"
            )
            print(
                f"ms per video: decord floor {1000 / floor_vps:.1f}, preprocess ({name}) {1000 / pre_vps:.1f}"
            )
            if args.clock == "cpu" and args.workers == 1 and t == 1:  # main thread: frames; writer: the rest
                main_ms = 1000 * statistics.median(MAIN_THREAD[f"{d}/{t}"]) / n
                rest_ms = 1000 / pre_vps - main_ms
                print(
                    f"  of which main thread {main_ms:.1f} ms, other threads {rest_ms:.1f} ms: on two free "
                    f"cores the longer paces preprocess: {1000 / max(main_ms, rest_ms):.1f} videos/s, "
                    f"{1000 / floor_vps / max(main_ms, rest_ms):.2f}x the decord floor (projected)"
                )
        if args.steps:
            for d in decoders:
                times = step_times(args.set_dir, args, d)
                for name, ms in times.items():
                    print(f"  {name}: {ms:.1f} ms per video ({args.clock} clock)")
                main_ms = sum(ms for name, ms in times.items() if name.startswith("main"))
                writer_ms = sum(ms for name, ms in times.items() if name.startswith("writer"))
                pace = max(main_ms, writer_ms)  # two free cores: the longer thread paces preprocess
                print(
                    f"  {d}: main thread {main_ms:.1f} ms, writer thread {writer_ms:.1f} ms per video: "
                    f"on two free cores {1000 / pace:.1f} videos/s, {1000 / floor_vps / pace:.2f}x the "
                    "decord floor (projected: the threads' sum of steps, without the HDF5 assembly)"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
