"""The embedded AVE-format dataset: real mp4 files (H.264 + AAC) that every tool takes for AVE.

``synth_dataset(out_dir, SynthConfig(...))`` writes ``OUT/AVE/<id>.mp4``, ``OUT/Annotations.txt`` (with
the header, grouped by class in the AVE order) and ``trainSet.txt`` / ``valSet.txt`` / ``testSet.txt``.

What makes it hard in AVE's ways:
- each class has an audio signature (a harmonic sound: pitch, timbre, amplitude rhythm) and a visual one
  (an object: colour, shape, motion); neighbouring classes share traits, so classes are confusable;
- an event second has both; a background second has noise and clutter and, with some probability, only one
  of the two (an off-screen sound, a silent object), mostly of the video's own class as in AVE (the dog
  barks off-screen, the silent car is in view), so localizing needs both modalities;
- the imbalance knobs: ``audio_snr_db``, ``visual_snr`` (object contrast against clutter and distractor
  objects) and ``audio_groups`` (G groups of consecutive classes share one sound, so audio alone tells only
  the group: a ceiling set by the data, not by how well an encoder happens to learn a faint sound). The
  defaults (−6 dB, 0.45, G = 8: of 10 classes, 0/1 and 5/6 share a sound) are the calibrated set
  ``ave10-a6g8v45`` of docs/results.md (2026-12-07): over five whole-pipeline seeds audio alone beats vision
  alone and fusion beats both, as on AVE. The defaults before (−11 dB, 0.4, no groups: ``--audio-snr-db
  -11 --visual-snr 0.4 --audio-groups 0``) are one option list away.

Every video draws from its own ``numpy`` generator seeded by (seed, index) and x264 runs single-threaded,
so a seed gives bit-identical files whatever the number of worker processes.
"""

from __future__ import annotations

import colorsys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from avel.synth.classes import AVE_CLASSES

HEADER = "Category&VideoID&Quality&StartTime&EndTime"
AAC_PRIMING = 1024  # samples FFmpeg's AAC encoder puts before the signal; decord returns them (no edit list)
ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
PITCHES, HUES, SHAPES, MOTIONS = 14, 7, 4, 3


@dataclass
class SynthConfig:
    """Options of the embedded set; the defaults make the 280-video demo set."""

    videos: int = 280
    seed: int = 0
    classes: int = 28  # the first K AVE classes
    fps: float = 8.0
    frame_size: int = 64  # square frames (even)
    sample_rate: int = 16000
    channels: int = 1  # 1 mono, 2 stereo
    duration: float = 10.0
    duration_jitter: float = 0.0  # ± seconds, uniform, per clip
    audio_snr_db: float = -6.0  # class sound vs noise + off-screen distractor sounds
    visual_snr: float = 0.45  # object contrast against the clutter (0..1); lower = weaker vision
    distractors: int = 2  # random objects of no class in every frame
    p_background_audio_only: float = 0.3  # a background second with a sound of some class, no object
    p_background_visual_only: float = 0.3  # a background second with a silent object of some class
    p_background_own_class: float = 0.8  # that sound / object is the video's own class (else a random one)
    audio_groups: int = 8  # G groups of consecutive classes share one sound; 0 or ≥ classes: one per class
    visual_groups: int = 0  # the same for the object (shape, colour, motion); 0: one per class
    val_fraction: float = 0.1  # of each class's videos (AVE: 402 / 4143); the rest not in val or test trains
    test_fraction: float = 0.1
    workers: int = 2


# The default AVE-form set since 2026-12-07 (`ave10-a6g8g7v40`, issue #25, docs/results.md): `avel synth DIR
# --videos 800 --classes 10 --frame-size 32 --fps 4 --visual-snr 0.4 --visual-groups 7 --test-fraction 0.5
# --seed s`, one set per whole-pipeline seed s (audio -6 dB and 8 sound groups are SynthConfig's defaults).
# Classes 0/1 share a sound and an object (no model tells them apart: fusion stays below ~92 %), 5/6 only a
# sound, 3/4 and 6/7 only an object; 320 / 80 / 400 videos: the accuracy of a 400-video test split has a
# sampling std near 1.3 points (3-6 with 40 videos, whose segments err together).
DEFAULT_SET = {"videos": 800, "classes": 10, "frame_size": 32, "fps": 4.0, "visual_snr": 0.4,
               "visual_groups": 7, "val_fraction": 0.1, "test_fraction": 0.5}  # fmt: skip


# ------------------------------------------------------------------------------------ class signatures


def class_traits(k: int) -> dict[str, Any]:
    """Audio: pitch k mod 14 (two octaves), timbre k // 14, rhythm k mod 4. Visual: hue k mod 7,
    shape k // 7, motion k mod 3. Classes k and k + 14 share a pitch; k and k + 7 a colour."""
    return {
        "f0": 220.0 * 2 ** ((k % PITCHES) / 7),
        "bright": (k // PITCHES) % 2 == 0,
        "am_rate": 1.0 + (k % 4),
        "hue": (k % HUES) / HUES,
        "shape": (k // HUES) % SHAPES,
        "motion": k % MOTIONS,
    }


def group_class(k: int, classes: int, groups: int) -> int:
    """The class whose sound (object) class ``k`` plays (shows): itself, or with ``groups`` G > 0 the first
    class of its group (classes with equal ``k * G // classes`` share one sound / object, so that modality
    alone tells only the group; G ≥ classes leaves every class its own)."""
    if not groups:
        return k
    return min(j for j in range(classes) if j * groups // classes == k * groups // classes)


sound_class = group_class  # --audio-groups (avel.synth.clips imports this name)


def class_sound(k: int, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A harmonic tone with the class's pitch, timbre (harmonic decay) and amplitude rhythm, unit RMS."""
    tr = class_traits(k)
    t = np.arange(int(round(seconds * sr))) / sr
    decay = 0.6 if tr["bright"] else 0.25
    f0 = tr["f0"] * (1 + 0.01 * rng.standard_normal())
    wave = sum(decay**h * np.sin(2 * np.pi * (h + 1) * f0 * t + rng.uniform(0, 6.3)) for h in range(5))
    wave = wave * (0.6 + 0.4 * np.sin(2 * np.pi * tr["am_rate"] * t + rng.uniform(0, 6.3)))
    return (wave / (np.sqrt(np.mean(wave**2)) + 1e-8)).astype(np.float32)


def shape_mask(shape: int, size: int) -> np.ndarray:
    """(size, size) float mask: disc, square, triangle or ring."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size * 2 - 1
    if shape == 0:
        m = x**2 + y**2 <= 1
    elif shape == 1:
        m = (np.abs(x) <= 0.8) & (np.abs(y) <= 0.8)
    elif shape == 2:
        m = (y >= -0.9) & (y <= 0.9) & (np.abs(x) <= (y + 0.9) / 2)
    else:
        r = x**2 + y**2
        m = (r <= 1) & (r >= 0.35)
    return m.astype(np.float32)


def hue_rgb(hue: float, value: float = 1.0) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue, 0.9, value), np.float32) * 255


def object_position(motion: int, tau: np.ndarray, phase: float, span: float) -> tuple[np.ndarray, np.ndarray]:
    """Centre (x, y) in [0, 1] over time: horizontal sweep, vertical sweep, or a circle."""
    w = 2 * np.pi * 0.5 * tau + phase
    if motion == 0:
        return 0.5 + span * np.sin(w), 0.5 + 0.1 * np.sin(phase) * np.ones_like(tau)
    if motion == 1:
        return 0.5 + 0.1 * np.cos(phase) * np.ones_like(tau), 0.5 + span * np.sin(w)
    return 0.5 + span * np.cos(w), 0.5 + span * np.sin(w)


# ----------------------------------------------------------------------------------------------- video


def segment_plan(label: int, start: int, end: int, seconds: int, cfg: SynthConfig, rng) -> tuple[list, list]:
    """Per second: the class whose sound plays and the class whose object shows (None for neither)."""
    sound: list[int | None] = [None] * seconds
    obj: list[int | None] = [None] * seconds
    for t in range(seconds):
        if start <= t < end:
            sound[t] = obj[t] = label
            continue
        u = rng.random()
        other = int(rng.integers(cfg.classes))
        if u >= cfg.p_background_audio_only + cfg.p_background_visual_only:
            continue  # noise and clutter only
        if cfg.p_background_own_class > 0 and rng.random() < cfg.p_background_own_class:
            other = label  # the dog barks off-screen, the silent car is in view
        if u < cfg.p_background_audio_only:
            sound[t] = other  # an off-screen sound
        else:
            obj[t] = other  # a silent object
    return sound, obj


def render_audio(sound: list, length: float, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """(channels, samples): class sounds where planned, at ``audio_snr_db`` below the noise floor."""
    sr = cfg.sample_rate
    n = int(round(length * sr))
    noise = rng.standard_normal(n).astype(np.float32)
    noise = np.convolve(noise, np.ones(4, np.float32) / 2, mode="same")  # a little coloured
    noise /= np.sqrt(np.mean(noise**2)) + 1e-8
    gain = 10 ** (cfg.audio_snr_db / 20)
    wave = noise.copy()
    for t, k in enumerate(sound):
        lo, hi = t * sr, min((t + 1) * sr, n)
        if k is not None and lo < n:
            heard = group_class(k, cfg.classes, cfg.audio_groups)
            wave[lo:hi] += gain * class_sound(heard, 1.0, sr, rng)[: hi - lo]
    # an off-screen distractor sound of random pitch somewhere in the clip (not of any class)
    lo = int(rng.integers(0, max(1, n - sr)))
    t = np.arange(min(sr, n - lo)) / sr
    wave[lo : lo + len(t)] += 0.5 * gain * np.sin(2 * np.pi * rng.uniform(150, 1500) * t)
    wave = 0.5 * wave / (np.abs(wave).max() + 1e-8)
    wave = np.clip(wave, -1, 1).astype(np.float32)
    if cfg.channels == 2:
        return np.stack([wave, 0.9 * wave])
    return wave[None]


def render_frames(obj: list, length: float, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """(T, S, S, 3) uint8: smooth coloured clutter, distractor objects, and the planned class objects."""
    s = cfg.frame_size
    n = max(1, int(round(length * cfg.fps)))
    tau = np.arange(n) / cfg.fps
    coarse = rng.uniform(60, 190, (4, 4, 1)) + rng.uniform(-25, 25, (4, 4, 3))  # greyish, lightly tinted
    coarse = coarse.astype(np.float32)
    base = np.kron(coarse, np.ones((s // 4 + 1, s // 4 + 1, 1), np.float32))[:s, :s]
    frames = np.repeat(base[None], n, axis=0)
    frames += rng.normal(0, 20, frames.shape).astype(np.float32)  # per-frame clutter
    size = max(4, int(s * 0.3))
    for _ in range(cfg.distractors):  # moving objects of random colour and shape, in every frame
        mask = shape_mask(int(rng.integers(SHAPES)), size)
        colour = hue_rgb(rng.random(), rng.uniform(0.5, 1))
        xs, ys = object_position(int(rng.integers(MOTIONS)), tau, rng.uniform(0, 6.3), 0.3)
        paste(frames, mask, colour, xs, ys, np.full(n, 0.5 * cfg.visual_snr + 0.1))
    for k in sorted({k for k in obj if k is not None}):
        tr = class_traits(group_class(k, cfg.classes, cfg.visual_groups))
        on = np.array([obj[min(int(x), len(obj) - 1)] == k for x in tau], np.float32)
        xs, ys = object_position(tr["motion"], tau, rng.uniform(0, 6.3), 0.25)
        paste(frames, shape_mask(tr["shape"], size), hue_rgb(tr["hue"]), xs, ys, on * cfg.visual_snr)
    return np.clip(frames, 0, 255).astype(np.uint8)


def paste(frames: np.ndarray, mask: np.ndarray, colour: np.ndarray, xs, ys, alpha: np.ndarray) -> None:
    """Alpha-blend ``mask`` in ``colour`` centred at (xs, ys) (fractions of the frame) into each frame."""
    s, m = frames.shape[1], mask.shape[0]
    for i in np.flatnonzero(alpha > 0):
        x0 = int(np.clip(xs[i] * s - m / 2, 0, s - m))
        y0 = int(np.clip(ys[i] * s - m / 2, 0, s - m))
        a = alpha[i] * mask[..., None]
        region = frames[i, y0 : y0 + m, x0 : x0 + m]
        region += a * (colour - region)


def write_video(
    path: Path,
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
) -> None:
    """Write (T, H, W, 3) uint8 frames as H.264 and (C, S) float audio in [-1, 1] as AAC into an mp4.

    ``audio=None`` writes a file without an audio stream. x264 runs single-threaded at a constant QP: same
    input, same bytes (its CRF rate control, with mb-tree, gave two different encodes of the same frames in
    about one call out of fifty on a loaded machine).
    The audio is written ``AAC_PRIMING`` samples early (its first 64 ms at 16 kHz dropped), so that what
    decord decodes (priming included) lines up with the frames and the annotated seconds.
    """
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as c:
        v = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        v.height, v.width = frames.shape[1:3]
        v.pix_fmt = "yuv420p"
        v.codec_context.thread_count = 1
        v.options = {"preset": "veryfast", "qp": "20", "threads": "1"}
        if audio is not None:
            a = c.add_stream("aac", rate=sample_rate)
            a.layout = "stereo" if audio.shape[0] == 2 else "mono"
        for img in frames:
            c.mux(v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(v.encode())
        if audio is not None:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio[:, AAC_PRIMING:], np.float32), format="fltp", layout=a.layout.name
            )
            frame.sample_rate = sample_rate
            c.mux(a.encode(frame))
            c.mux(a.encode())


# --------------------------------------------------------------------------------------------- dataset


def video_id(rng: np.random.Generator) -> str:
    """11 characters like a YouTube id."""
    return "".join(ID_ALPHABET[i] for i in rng.integers(0, len(ID_ALPHABET), 11))


def check_synth_config(cfg: SynthConfig) -> None:
    """Every option in its range, named as on the command line."""
    held_out = cfg.val_fraction + cfg.test_fraction
    no_groups = "0 or ≥ classes: no groups"
    checks = [
        ("--videos", cfg.videos, cfg.videos >= 3, "at least 3 (one video per split: train, val, test)"),
        ("--classes", cfg.classes, 1 <= cfg.classes <= len(AVE_CLASSES), f"in 1..{len(AVE_CLASSES)}"),
        ("--fps", cfg.fps, 1 <= cfg.fps <= 120, "in 1..120"),
        ("--sample-rate", cfg.sample_rate, 8000 <= cfg.sample_rate <= 96000, "in 8000..96000"),
        ("--channels", cfg.channels, cfg.channels in (1, 2), "1 (mono) or 2 (stereo)"),
        ("--duration-jitter", cfg.duration_jitter, 0 <= cfg.duration_jitter < cfg.duration - 1, "in [0, 9)"),
        ("--visual-snr", cfg.visual_snr, 0 < cfg.visual_snr <= 1, "in (0, 1]"),
        ("--audio-snr-db", cfg.audio_snr_db, -60 <= cfg.audio_snr_db <= 60, "in -60..60"),
        ("--audio-groups", cfg.audio_groups, cfg.audio_groups >= 0, f"at least 0 ({no_groups})"),
        ("--visual-groups", cfg.visual_groups, cfg.visual_groups >= 0, f"at least 0 ({no_groups})"),
        ("--val-fraction", cfg.val_fraction, 0 < cfg.val_fraction < 1, "in (0, 1)"),
        ("--test-fraction", cfg.test_fraction, 0 < cfg.test_fraction < 1, "in (0, 1)"),
        ("--val-fraction + --test-fraction", held_out, held_out < 1, "below 1 (train keeps the rest)"),
        ("workers", cfg.workers, cfg.workers >= 1, "at least 1"),
    ]
    for name, value, ok, allowed in checks:
        if not ok:
            raise ValueError(f"{name} {value}: must be {allowed}")


def plan_videos(cfg: SynthConfig) -> list[dict[str, Any]]:
    """Label, event span (AVE timing: 66% full length, else 2–9 s anywhere), length and split per video."""
    check_synth_config(cfg)
    if cfg.frame_size % 2 or cfg.frame_size < 16:
        raise ValueError(f"frame_size must be even and at least 16 (H.264 4:2:0), got {cfg.frame_size}")
    p_bg = {k: v for k, v in asdict(cfg).items() if k.startswith("p_background")}
    if (
        any(not 0 <= v <= 1 for v in p_bg.values())
        or cfg.p_background_audio_only + cfg.p_background_visual_only > 1
    ):
        raise ValueError(
            f"background probabilities must be in 0..1 (audio-only + visual-only ≤ 1), got {p_bg}"
        )
    rng = np.random.default_rng([cfg.seed, 0])
    labels = np.arange(cfg.videos) % cfg.classes  # balanced classes
    rng.shuffle(labels)
    ids: list[str] = []
    while len(ids) < cfg.videos:
        vid = video_id(rng)
        if vid not in ids:
            ids.append(vid)
    plans = []
    for i in range(cfg.videos):
        length = cfg.duration + (
            rng.uniform(-cfg.duration_jitter, cfg.duration_jitter) if cfg.duration_jitter else 0
        )
        seconds = max(1, int(np.floor(length + 1e-6)))
        if rng.random() < 0.66 or seconds <= 2:
            start, end = 0, seconds
        else:
            span = int(rng.integers(2, min(9, seconds - 1) + 1))
            start = int(rng.integers(0, seconds - span + 1))
            end = start + span
        plans.append({"index": i, "id": ids[i], "label": int(labels[i]), "start": start, "end": end,
                      "length": float(length)})  # fmt: skip
    assign_splits(plans, cfg.classes, rng, (cfg.val_fraction, cfg.test_fraction))
    return plans


def assign_splits(
    plans: list[dict], classes: int, rng: np.random.Generator, fractions: tuple[float, float] = (0.1, 0.1)
) -> None:
    """Within each class about ``fractions`` (val, test) of the videos, the rest train (AVE: 80/10/10); a
    class with ≥ 3 videos is in every split, any class in train. A split left empty (classes of fewer than
    3 videos) takes a train video of the class with most."""
    for k in range(classes):
        members = [p for p in plans if p["label"] == k]
        rng.shuffle(members)
        n = len(members)
        n_val, n_test = (max(1, round(f * n)) if n >= 3 else 0 for f in fractions)
        n_test = min(n_test, n - 1)
        n_val = min(n_val, max(0, n - 1 - n_test))  # train keeps at least one video of the class
        for j, p in enumerate(members):
            p["split"] = "val" if j < n_val else "test" if j < n_val + n_test else "train"
    for split in ("val", "test"):
        if not any(p["split"] == split for p in plans):
            train = [p for p in plans if p["split"] == "train"]
            per_class = np.bincount([p["label"] for p in train], minlength=classes)
            donor = [p for p in train if p["label"] == int(per_class.argmax())][-1]
            donor["split"] = split


def make_video(job: tuple[dict, SynthConfig, str]) -> str:
    plan, cfg, path = job
    rng = np.random.default_rng([cfg.seed, 1, plan["index"]])
    seconds = int(np.ceil(plan["length"] - 1e-6))
    sound, obj = segment_plan(plan["label"], plan["start"], plan["end"], seconds, cfg, rng)
    audio = render_audio(sound, plan["length"], cfg, rng)
    frames = render_frames(obj, plan["length"], cfg, rng)
    write_video(Path(path), frames, cfg.fps, audio, cfg.sample_rate)
    return path


def annotation_line(p: dict) -> str:
    return f"{AVE_CLASSES[p['label']]}&{p['id']}&good&{p['start']}&{p['end']}"


def synth_dataset(out_dir: Path, config: SynthConfig | None = None) -> dict[str, Any]:
    """Write the embedded set into ``out_dir``; returns a summary (counts, seconds, paths)."""
    cfg = config or SynthConfig()
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    plans = plan_videos(cfg)
    (out_dir / "AVE").mkdir(parents=True, exist_ok=True)
    jobs = [(p, cfg, str(out_dir / "AVE" / f"{p['id']}.mp4")) for p in plans]
    if cfg.workers > 1 and len(jobs) > 8:
        with ProcessPoolExecutor(cfg.workers) as pool:
            list(pool.map(make_video, jobs, chunksize=4))
    else:
        for job in jobs:
            make_video(job)
    ordered = sorted(plans, key=lambda p: (p["label"], p["index"]))  # grouped by class, AVE order
    (out_dir / "Annotations.txt").write_text("\n".join([HEADER, *map(annotation_line, ordered)]) + "\n")
    counts = {}
    for split in ("train", "val", "test"):
        rows = [annotation_line(p) for p in ordered if p["split"] == split]
        (out_dir / f"{split}Set.txt").write_text("".join(r + "\n" for r in rows))
        counts[split] = len(rows)
    return {
        "out_dir": str(out_dir),
        "videos": len(plans),
        "classes": cfg.classes,
        "splits": counts,
        "event_seconds": int(sum(p["end"] - p["start"] for p in plans)),
        "seconds": round(sum(p["length"] for p in plans), 2),
        "elapsed_s": round(time.perf_counter() - t0, 2),
        "config": asdict(cfg),
    }
