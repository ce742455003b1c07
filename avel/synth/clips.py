"""Embedded clip datasets in the CREMA-D release layout and in the clip-manifest layout (real media files).

``synth_clips(out_dir, ClipSynthConfig(layout="crema-d"))`` writes ``AudioWAV/<id>.wav`` (16 kHz mono PCM,
as the release), ``VideoFlash/<id>.flv`` (FLV1 video, no audio stream: the audio is the wav, as avel reads
it), ``train.csv`` / ``test.csv`` (``clip_id,EMOTION``, no header) with ids ``actor_sentence_emotion_level``
and clips of 2-5 s. ``layout="manifest"`` writes ``clips/<id>.mp4`` (H.264 + AAC, a few with a separate
``.wav`` named in the ``audio`` column) and ``manifest.csv`` (``video,label,split,start,end,audio``), each
video a little longer than its labelled ``[start, end)``.

CREMA-D's imbalance (PMR §3, Fig. 2a and 4): the visual modality alone is better than the audio alone, yet
audio is learned faster and dominates joint training. Here the audio carries the class's harmonic sound in
a fraction ``p_audio`` of the clips (another class's sound in the rest: a low ceiling, learned fast from
the spectrogram), and the visual carries the class's coloured object in a fraction ``p_visual`` of the
frames' clips (a higher ceiling) at a low contrast ``visual_snr`` against clutter (learned slowly).
Two knobs separate the audio's speed from its ceiling: ``audio_groups`` G makes the classes of each of G
groups of consecutive classes share one sound (the group's first class's), so audio alone tells only the
group (a ceiling of G / classes at any SNR: a loud sound is learned fast to a low ceiling), and
``audio_else="none"`` leaves the other ``1 - p_audio`` clips with noise only instead of another class's
sound. The defaults are the calibrated set `cdp` of docs/results.md (2026-11-29): every clip carries
its class's object at contrast 0.4 and its group's sound 12 dB above the noise, with 3 groups (NEU/HAP,
SAD/FEA, DIS/ANG): audio alone caps at 50 % and is learned in 2-3 epochs, the visual alone learns the exact
class more slowly, and audio leads the fused model (PMR's rho > 1, OGM-GE slowing the audio). The
defaults before (p_audio 0.6, p_visual 0.9, -6 dB, contrast 0.35, no groups) are one option list away.

Every clip draws from its own generator seeded by (seed, index) and the encoders run single-threaded with
bit-exact muxing, so a seed gives bit-identical files.
"""

from __future__ import annotations

import time
import wave
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from avel.rules import check, one_of
from avel.synth.ave import SynthConfig, render_audio, render_frames, write_video
from avel.synth.ave import sound_class as grouped_sound

CREMAD_CLASSES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
SENTENCES = ("DFA", "IEO", "IOM", "ITH", "ITS", "IWL", "IWW", "MTI", "TAI", "TIE", "TSI", "WSI")
LEVELS = ("XX", "LO", "MD", "HI")
LAYOUTS = ("crema-d", "manifest")
AUDIO_ELSE = ("other", "none")


@dataclass
class ClipSynthConfig:
    layout: str = "crema-d"
    clips: int = 240
    seed: int = 0
    classes: int = 6  # crema-d: always the 6 emotions
    fps: float = 30.0  # CREMA-D's flv are 30 fps
    frame_size: int = 64  # crema-d: a multiple of 32 (decord 0.6 misreads FLV1 frames of other widths)
    sample_rate: int = 16000
    min_seconds: float = 2.0  # CREMA-D clip lengths
    max_seconds: float = 5.0
    test_fraction: float = 0.1  # 744 of 7,442 in CREMA-D
    p_audio: float = 1.0  # clips whose sound is their own class (else another class's)
    p_visual: float = 1.0  # clips whose object is their own class (else another class's)
    audio_snr_db: float = 12.0
    visual_snr: float = 0.4
    distractors: int = 1
    audio_groups: int = 3  # 0: one sound per class; G: G groups of consecutive classes share a sound
    audio_else: str = "other"  # the sound of the 1 - p_audio clips: another class's, or "none" (noise only)

    def check(self) -> None:
        check("layout", self.layout, one_of(*LAYOUTS))
        if self.layout == "crema-d" and self.classes != len(CREMAD_CLASSES):
            raise ValueError(f"the crema-d layout has {len(CREMAD_CLASSES)} classes, not {self.classes}")
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(
                f"need 0 < min_seconds <= max_seconds, got {self.min_seconds}, {self.max_seconds}"
            )
        if self.frame_size % 2 or self.frame_size < 16:
            raise ValueError(f"frame_size must be even and at least 16, got {self.frame_size}")
        if self.layout == "crema-d" and self.frame_size % 32:
            raise ValueError(
                f"crema-d frame_size must be a multiple of 32 (decord 0.6 misreads FLV1 frames of other "
                f"widths), got {self.frame_size}"
            )
        if not (0 <= self.p_audio <= 1 and 0 <= self.p_visual <= 1):
            raise ValueError(f"p_audio and p_visual must be in [0, 1], got {self.p_audio}, {self.p_visual}")
        if not 0 <= self.audio_groups <= self.classes:
            raise ValueError(
                f"audio_groups must be in [0, {self.classes}] (0: one sound per class), "
                f"got {self.audio_groups}"
            )
        check("audio_else", self.audio_else, one_of(*AUDIO_ELSE))

    def render_config(self) -> SynthConfig:
        """The AVE synthesiser's settings for the sound and frame renderers it shares with this one."""
        return SynthConfig(
            classes=self.classes,
            fps=self.fps,
            frame_size=self.frame_size,
            sample_rate=self.sample_rate,
            audio_snr_db=self.audio_snr_db,
            visual_snr=self.visual_snr,
            distractors=self.distractors,
            audio_groups=0,  # the clip's sound class is chosen here (``sound_class``), not again there
        )


def class_names(cfg: ClipSynthConfig) -> list[str]:
    return list(CREMAD_CLASSES) if cfg.layout == "crema-d" else [f"class{k}" for k in range(cfg.classes)]


def sound_class(k: int, cfg: ClipSynthConfig) -> int:
    """The class whose sound class ``k`` plays: itself, or with ``audio_groups`` G the first class of its
    group (classes ``k * G // classes`` equal share one sound, so audio alone tells only the group)."""
    return grouped_sound(k, cfg.classes, cfg.audio_groups)


def plan_clips(cfg: ClipSynthConfig) -> list[dict[str, Any]]:
    """Id, label, length and split of each clip, and which class its sound and its object show."""
    cfg.check()
    rng = np.random.default_rng([cfg.seed, 0])
    labels = np.arange(cfg.clips) % cfg.classes
    rng.shuffle(labels)
    names = class_names(cfg)
    plans, used = [], set()
    for i, k in enumerate(labels.tolist()):
        while True:
            actor, sentence, level = (
                1001 + int(rng.integers(91)),
                SENTENCES[int(rng.integers(12))],
                LEVELS[int(rng.integers(4))],
            )
            clip_id = f"{actor}_{sentence}_{names[k]}_{level}" if cfg.layout == "crema-d" else f"clip{i:05d}"
            if clip_id not in used:
                used.add(clip_id)
                break
        others = [j for j in range(cfg.classes) if j != k]
        sound: int | None = k if rng.random() < cfg.p_audio else int(rng.choice(others))
        if sound != k and cfg.audio_else == "none":
            sound = None  # noise only (the draw above is kept, so the other fields follow the seed as before)
        if sound is not None:
            sound = sound_class(sound, cfg)
        obj = k if rng.random() < cfg.p_visual else int(rng.choice(others))
        length = float(rng.uniform(cfg.min_seconds, cfg.max_seconds))
        plans.append({"index": i, "id": clip_id, "label": k, "sound": sound, "object": obj, "length": length})
    for k in range(cfg.classes):  # a per-class test share, the rest train
        members = [p for p in plans if p["label"] == k]
        n_test = max(1, round(cfg.test_fraction * len(members))) if len(members) >= 2 else 0
        for j, p in enumerate(members):
            p["split"] = "test" if j < n_test else "train"
    return plans


def write_wav(path: Path, wave_data: np.ndarray, sample_rate: int) -> None:
    """(S,) float in [-1, 1] as 16-bit PCM mono (the CREMA-D AudioWAV format)."""
    pcm = np.round(np.clip(wave_data, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


def write_flv(path: Path, frames: np.ndarray, fps: float) -> None:
    """(T, H, W, 3) uint8 frames as FLV1 (Sorenson H.263, CREMA-D's VideoFlash codec) in an flv file."""
    with av.open(str(path), "w", format="flv", options={"fflags": "+bitexact"}) as c:
        v = c.add_stream("flv", rate=Fraction(fps).limit_denominator(1001))
        v.height, v.width = frames.shape[1:3]
        v.pix_fmt = "yuv420p"
        v.codec_context.thread_count = 1
        v.options = {"qscale": "2", "flags": "+bitexact"}
        for img in frames:
            c.mux(v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(v.encode())


def render_clip(plan: dict[str, Any], cfg: ClipSynthConfig, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """(1, S) audio and (T, H, W, 3) frames of ``seconds`` showing the plan's sound and object throughout."""
    rng = np.random.default_rng([cfg.seed, 1, plan["index"]])
    rc = cfg.render_config()
    n = int(np.ceil(seconds - 1e-6))
    audio = render_audio([plan["sound"]] * n, seconds, rc, rng)
    frames = render_frames([plan["object"]] * n, seconds, rc, rng)
    return audio, frames


def _write_cremad(out: Path, plans: list[dict], cfg: ClipSynthConfig) -> None:
    (out / "AudioWAV").mkdir(parents=True, exist_ok=True)
    (out / "VideoFlash").mkdir(parents=True, exist_ok=True)
    for p in plans:
        audio, frames = render_clip(p, cfg, p["length"])
        write_wav(out / "AudioWAV" / f"{p['id']}.wav", audio[0], cfg.sample_rate)
        write_flv(out / "VideoFlash" / f"{p['id']}.flv", frames, cfg.fps)
    for split in ("train", "test"):
        rows = [f"{p['id']},{CREMAD_CLASSES[p['label']]}\n" for p in plans if p["split"] == split]
        (out / f"{split}.csv").write_text("".join(rows))


def _write_manifest(out: Path, plans: list[dict], cfg: ClipSynthConfig) -> None:
    """Each video holds its clip from ``start`` (0-0.5 s in) to ``end``; every 4th clip's audio is a wav."""
    (out / "clips").mkdir(parents=True, exist_ok=True)
    names = class_names(cfg)
    lines = ["video,label,split,start,end,audio"]
    for p in plans:
        lead = round(float(np.random.default_rng([cfg.seed, 2, p["index"]]).uniform(0, 0.5)), 2)
        total = p["length"] + lead
        audio, frames = render_clip(p, cfg, total)
        separate = p["index"] % 4 == 3
        video = f"clips/{p['id']}.mp4"
        write_video(out / video, frames, cfg.fps, None if separate else audio, cfg.sample_rate)
        wav = ""
        if separate:
            wav = f"clips/{p['id']}.wav"
            write_wav(out / wav, audio[0], cfg.sample_rate)
        split = p["split"]
        lines.append(f"{video},{names[p['label']]},{split},{lead},{round(lead + p['length'], 2)},{wav}")
    (out / "manifest.csv").write_text("\n".join(lines) + "\n")


def synth_clips(out_dir: str | Path, config: ClipSynthConfig | None = None) -> dict[str, Any]:
    """Write an embedded clip set into ``out_dir``; returns a summary."""
    cfg = config or ClipSynthConfig()
    out = Path(out_dir)
    t0 = time.perf_counter()
    plans = plan_clips(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (_write_cremad if cfg.layout == "crema-d" else _write_manifest)(out, plans, cfg)
    return {
        "out_dir": str(out),
        "layout": cfg.layout,
        "clips": len(plans),
        "classes": class_names(cfg),
        "splits": {s: sum(p["split"] == s for p in plans) for s in ("train", "test")},
        "sound_is_label": round(
            float(np.mean([p["sound"] == sound_class(p["label"], cfg) for p in plans])), 3
        ),
        "object_is_label": round(float(np.mean([p["object"] == p["label"] for p in plans])), 3),
        "seconds": round(sum(p["length"] for p in plans), 2),
        "elapsed_s": round(time.perf_counter() - t0, 2),
        "config": asdict(cfg),
    }
