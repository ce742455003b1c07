"""`avel synth`: the AVE layout, decodable mp4 files, determinism, and class content in the right seconds."""

from __future__ import annotations

import hashlib
from pathlib import Path

import decord
import numpy as np
import pytest

from avel.preprocessing.annotations import read_annotations
from avel.synth.ave import (
    HEADER,
    SynthConfig,
    class_traits,
    hue_rgb,
    segment_plan,
    sound_class,
    synth_dataset,
    write_video,
)
from avel.synth.classes import AVE_CLASSES


def _sha(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synth_dataset(out, SynthConfig(videos=6, classes=3, frame_size=32, fps=4.0, seed=3, workers=1))
    return out


def test_layout_and_annotations(small):
    lines = (small / "Annotations.txt").read_text().splitlines()
    assert lines[0] == HEADER and len(lines) == 7
    rows = [ln.split("&") for ln in lines[1:]]
    assert [r[0] for r in rows] == sorted((r[0] for r in rows), key=AVE_CLASSES.index)  # grouped, AVE order
    assert {r[0] for r in rows} == set(AVE_CLASSES[:3])
    for _cat, vid, quality, start, end in rows:
        assert len(vid) == 11 and quality == "good" and 0 <= int(start) < int(end) <= 10
        assert (small / "AVE" / f"{vid}.mp4").is_file()
    split_rows = sum(len((small / f"{s}Set.txt").read_text().splitlines()) for s in ("train", "val", "test"))
    assert split_rows == 6
    train = {ln.split("&")[0] for ln in (small / "trainSet.txt").read_text().splitlines()}
    assert train == set(AVE_CLASSES[:3])  # every class in train
    assert len(read_annotations(small / "Annotations.txt")) == 6  # the preprocessing parser reads it


def test_decodes_with_decord(small):
    path = next((small / "AVE").glob("*.mp4"))
    vr = decord.VideoReader(str(path))
    assert len(vr) == 40 and vr.get_avg_fps() == pytest.approx(4.0)
    assert vr[0].shape == (32, 32, 3)
    audio = decord.AudioReader(str(path), sample_rate=16000, mono=True)
    assert abs(audio.shape[1] - 160000) < 2048  # AAC frames round the tail up


def test_same_seed_same_bytes(small, tmp_path):
    synth_dataset(tmp_path, SynthConfig(videos=6, classes=3, frame_size=32, fps=4.0, seed=3, workers=1))
    assert _sha(tmp_path) == _sha(small)
    other = tmp_path / "other"
    synth_dataset(other, SynthConfig(videos=6, classes=3, frame_size=32, fps=4.0, seed=4, workers=1))
    assert _sha(other) != _sha(small)


def test_stereo_44k_and_odd_fps(tmp_path):
    cfg = SynthConfig(videos=3, classes=1, frame_size=32, fps=29.97, sample_rate=44100, channels=2, workers=1)
    synth_dataset(tmp_path, cfg)
    path = next((tmp_path / "AVE").glob("*.mp4"))
    audio = decord.AudioReader(str(path), sample_rate=-1, mono=False)
    assert audio.shape[0] == 2 and abs(audio.shape[1] - 441000) < 4096
    vr = decord.VideoReader(str(path))
    assert vr.get_avg_fps() == pytest.approx(29.97, abs=0.01) and abs(len(vr) - 300) <= 1


def test_audio_lines_up_with_the_second(tmp_path):
    sr = 16000
    wave = np.zeros((1, 10 * sr), np.float32)
    wave[0, 5 * sr : 6 * sr] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)
    write_video(tmp_path / "a.mp4", np.zeros((40, 32, 32, 3), np.uint8), 4.0, wave, sr)
    x = decord.AudioReader(str(tmp_path / "a.mp4"), sample_rate=sr, mono=True)[:].asnumpy().ravel()
    loud = np.flatnonzero(np.abs(x) > 0.05)
    assert abs(loud[0] / sr - 5.0) < 0.005 and abs(loud[-1] / sr - 6.0) < 0.005  # within 5 ms


def test_event_second_has_the_class_sound_and_object(tmp_path):
    clean = {"distractors": 0, "p_background_audio_only": 0, "p_background_visual_only": 0}
    cfg = SynthConfig(videos=12, classes=2, frame_size=64, fps=4.0, seed=1, workers=1, audio_snr_db=0,
                      visual_snr=0.9, **clean)  # fmt: skip
    synth_dataset(tmp_path, cfg)
    rows = [ln.split("&") for ln in (tmp_path / "Annotations.txt").read_text().splitlines()[1:]]
    cat, vid, _, start, end = next(r for r in rows if int(r[3]) >= 1)  # a video with background first
    k, start = AVE_CLASSES.index(cat), int(start)
    path = str(tmp_path / "AVE" / f"{vid}.mp4")
    x = decord.AudioReader(path, sample_rate=16000, mono=True)[:].asnumpy().ravel()
    spectrum = np.abs(np.fft.rfft(x[start * 16000 : (start + 1) * 16000]))
    f0 = class_traits(k)["f0"]
    band = spectrum[int(f0) - 8 : int(f0) + 9].max()
    assert band > 5 * np.median(spectrum)  # the class pitch in the event second
    before = np.abs(np.fft.rfft(x[:16000]))
    assert before[int(f0) - 8 : int(f0) + 9].max() < 0.3 * band  # not in a clean background second
    vr = decord.VideoReader(path)
    colour = hue_rgb(class_traits(k)["hue"])

    def closeness(frame: np.ndarray) -> float:  # pixels near the class colour
        return float((np.abs(frame.astype(np.float32) - colour).max(-1) < 60).mean())

    assert closeness(vr[start * 4 + 2].asnumpy()) > 0.03
    assert closeness(vr[2].asnumpy()) < 0.01


def test_audio_groups_share_the_group_sound(tmp_path):
    """--audio-groups 1 of 2 classes: class 1's event seconds play class 0's pitch, not its own."""
    clean = {"distractors": 0, "p_background_audio_only": 0, "p_background_visual_only": 0}
    cfg = SynthConfig(videos=6, classes=2, frame_size=32, fps=4.0, seed=1, workers=1, audio_snr_db=0,
                      audio_groups=1, **clean)  # fmt: skip
    synth_dataset(tmp_path, cfg)
    rows = [ln.split("&") for ln in (tmp_path / "Annotations.txt").read_text().splitlines()[1:]]
    _, vid, _, start, _ = next(r for r in rows if r[0] == AVE_CLASSES[1])
    x = decord.AudioReader(str(tmp_path / "AVE" / f"{vid}.mp4"), sample_rate=16000, mono=True)[:]
    second = x.asnumpy().ravel()[int(start) * 16000 : (int(start) + 1) * 16000]
    spectrum = np.abs(np.fft.rfft(second))
    peak = {
        k: spectrum[int(class_traits(k)["f0"]) - 6 : int(class_traits(k)["f0"]) + 7].max() for k in (0, 1)
    }
    assert peak[0] > 5 * np.median(spectrum) and peak[1] < 0.2 * peak[0]
    assert [sound_class(k, 10, 7) for k in range(10)] == [0, 0, 2, 3, 3, 5, 6, 6, 8, 9]
    assert [sound_class(k, 3, 8) for k in range(3)] == [0, 1, 2]  # G ≥ classes: every class its own sound
    with pytest.raises(ValueError, match="--audio-groups -1: must be at least 0"):
        synth_dataset(Path("/nonexistent"), SynthConfig(classes=2, audio_groups=-1))


def test_visual_groups_share_the_group_object(tmp_path):
    """--visual-groups 1 of 2 classes: class 1's event frames show class 0's object (hue), not its own; the
    audio is that of the set without visual groups."""
    clean = {"distractors": 0, "p_background_audio_only": 0, "p_background_visual_only": 0}
    base = dict(videos=6, classes=2, frame_size=64, fps=4.0, seed=1, workers=1, visual_snr=0.9, **clean)
    synth_dataset(tmp_path / "g", SynthConfig(**base, visual_groups=1))
    synth_dataset(tmp_path / "n", SynthConfig(**base))
    rows = [ln.split("&") for ln in (tmp_path / "g" / "Annotations.txt").read_text().splitlines()[1:]]
    _, vid, _, start, _ = next(r for r in rows if r[0] == AVE_CLASSES[1])

    def near(folder: str, k: int) -> float:  # share of the event frame's pixels near class k's colour
        frame = decord.VideoReader(str(tmp_path / folder / "AVE" / f"{vid}.mp4"))[int(start) * 4 + 2]
        colour = hue_rgb(class_traits(k)["hue"])
        return float((np.abs(frame.asnumpy().astype(np.float32) - colour).max(-1) < 60).mean())

    assert near("g", 0) > 0.03 and near("g", 1) < 0.01
    assert near("n", 1) > 0.03 and near("n", 0) < 0.01
    audio = [decord.AudioReader(str(tmp_path / f / "AVE" / f"{vid}.mp4"), sample_rate=16000)[:].asnumpy()
             for f in ("g", "n")]  # fmt: skip
    assert np.array_equal(*audio)
    with pytest.raises(ValueError, match="--visual-groups -1: must be at least 0"):
        synth_dataset(Path("/nonexistent"), SynthConfig(classes=2, visual_groups=-1))


def test_split_fractions_move_videos_between_splits_only():
    """--val-fraction / --test-fraction: per class that share of videos in val / test, the rest in train; the
    videos themselves (ids, labels, event timing) are those of the default 80/10/10 split."""
    from avel.synth.ave import plan_videos

    def counts(plans: list[dict]) -> dict[str, int]:
        return {s: sum(p["split"] == s for p in plans) for s in ("train", "val", "test")}

    default = plan_videos(SynthConfig(videos=400, classes=10))
    wide = plan_videos(SynthConfig(videos=800, classes=10, val_fraction=0.1, test_fraction=0.5))
    assert counts(default) == {"train": 320, "val": 40, "test": 40}
    assert counts(wide) == {"train": 320, "val": 80, "test": 400}
    for k in range(10):  # every class: 32 train, 8 val, 40 test
        assert counts([p for p in wide if p["label"] == k]) == {"train": 32, "val": 8, "test": 40}
    same = plan_videos(SynthConfig(videos=400, classes=10, val_fraction=0.2, test_fraction=0.3))
    assert counts(same) == {"train": 200, "val": 80, "test": 120}
    keys = ("id", "label", "start", "end")
    assert [[p[k] for k in keys] for p in same] == [[p[k] for k in keys] for p in default]
    with pytest.raises(ValueError, match=r"--test-fraction 0.0: must be in \(0, 1\)"):
        plan_videos(SynthConfig(test_fraction=0.0))
    with pytest.raises(ValueError, match=r"--val-fraction \+ --test-fraction 1.0: must be below 1"):
        plan_videos(SynthConfig(val_fraction=0.5, test_fraction=0.5))


def test_synth_command_passes_the_split_fractions(tmp_path):
    from typer.testing import CliRunner

    from avel.cli import app

    args = ["synth", str(tmp_path), "--videos", "8", "--classes", "2", "--frame-size", "16", "--fps", "1"]
    result = CliRunner().invoke(app, [*args, "--test-fraction", "1.5"])
    assert result.exit_code == 2 and "--test-fraction 1.5: must be in (0, 1)" in result.output
    assert not (tmp_path / "Annotations.txt").exists()
    result = CliRunner().invoke(app, [*args, "--val-fraction", "0.25", "--test-fraction", "0.5"])
    assert result.exit_code == 0, result.output
    rows = [len((tmp_path / f"{s}Set.txt").read_text().splitlines()) for s in ("train", "val", "test")]
    assert rows == [2, 2, 4]


def test_bad_options():
    with pytest.raises(ValueError, match="--classes 29: must be in 1..28"):
        synth_dataset(Path("/nonexistent"), SynthConfig(classes=29))
    with pytest.raises(ValueError, match="frame_size must be even"):
        synth_dataset(Path("/nonexistent"), SynthConfig(frame_size=33))
    with pytest.raises(
        ValueError, match=r"background probabilities must be in 0..1 .*'p_background_own_class': 1.5"
    ):
        synth_dataset(Path("/nonexistent"), SynthConfig(p_background_own_class=1.5))


@pytest.mark.parametrize("p_own", [0.0, 1.0])
def test_background_sounds_and_objects_of_the_videos_own_class(p_own):
    cfg = SynthConfig(
        classes=10, p_background_audio_only=0.5, p_background_visual_only=0.5, p_background_own_class=p_own
    )
    rng = np.random.default_rng(0)
    sound, obj = [], []
    for _ in range(50):  # label 3, event in seconds 4..5, background elsewhere
        s, o = segment_plan(3, 4, 6, 10, cfg, rng)
        sound += s[:4] + s[6:]
        obj += o[:4] + o[6:]
    assert all((s is None) != (o is None) for s, o in zip(sound, obj, strict=True))  # one of the two
    own = [k == 3 for k in sound + obj if k is not None]
    assert len(own) == 400
    if p_own == 1.0:
        assert all(own)  # the dog barks off-screen, the silent car is in view
    else:
        assert 0.05 < sum(own) / len(own) < 0.15  # a random class of 10
