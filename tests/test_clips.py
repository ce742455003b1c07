"""Clip datasets: the CREMA-D release layout and the clip manifest, read from files written here in the exact
layouts (flv + separate wav, odd frame rates, a clip shorter than 3 s, a missing clip, a BOM), the embedded
sets of ``avel synth --layout``, the ``avel-clips`` file and its loader, end to end on the command line."""

from __future__ import annotations

import hashlib
import json
import wave
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from avel.cli import app
from avel.families import load_splits
from avel.preprocessing.audio import log_spectrogram
from avel.preprocessing.clip_pipeline import ClipParams, clip_params, preprocess_clips
from avel.preprocessing.clips import carve_val
from avel.preprocessing.cremad import CREMAD_CLASSES, load_cremad, read_list
from avel.preprocessing.manifest import load_manifest
from avel.synth.clips import ClipSynthConfig, synth_clips, write_flv, write_wav

# The full suite only: processes, grids, kills and CLI round trips (the fast tier: -m 'not slow').
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SHARED_CREMAD = next(  # ../shared/crema-d of the checkout (or of the folder holding the worktrees)
    (
        p / "shared" / "crema-d"
        for p in (ROOT.parent, ROOT.parent.parent)
        if (p / "shared" / "crema-d").is_dir()
    ),
    ROOT.parent / "shared" / "crema-d",
)
SR = 16000
STEP = 3  # grey levels per frame index in ramp_frames
runner = CliRunner()


def invoke(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def ramp_frames(n: int, size: int = 64) -> np.ndarray:
    """Frame i is a flat grey of level STEP·i (its index, readable back from a lossy codec)."""
    return np.stack([np.full((size, size, 3), STEP * i, np.uint8) for i in range(n)])


def tone(seconds: float, f0: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory) -> Path:
    """A CREMA-D folder in the release layout: 3 clips at 30, 29.97 and 15 fps (one 2.0 s long), a list
    line naming a clip whose files do not exist, and train.csv with a UTF-8 BOM and CRLF line ends."""
    d = tmp_path_factory.mktemp("crema")
    (d / "AudioWAV").mkdir()
    (d / "VideoFlash").mkdir()
    clips = {"1001_DFA_ANG_XX": (30.0, 2.5), "1002_IEO_HAP_HI": (29.97, 2.0), "1003_TIE_SAD_LO": (15.0, 4.0)}
    for i, (cid, (fps, seconds)) in enumerate(clips.items()):
        write_flv(d / "VideoFlash" / f"{cid}.flv", ramp_frames(int(round(fps * seconds))), fps)
        write_wav(d / "AudioWAV" / f"{cid}.wav", tone(seconds, 300.0 + 100 * i), SR)
    (d / "train.csv").write_bytes(
        "\ufeff1001_DFA_ANG_XX,ANG\r\n1002_IEO_HAP_HI,HAP\r\n1004_ITH_NEU_XX,NEU\r\n".encode()
    )
    (d / "test.csv").write_text("1003_TIE_SAD_LO,SAD\n")
    return d


@pytest.fixture(scope="module")
def release_h5(release_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("crema_h5") / "c.h5"
    clip_list = load_cremad(release_dir, val_fraction=0.0)
    report = preprocess_clips(clip_list, out, ClipParams(frame_size=32), progress=False)
    return out, report


def test_cremad_list_with_bom_and_crlf(release_dir):
    rows = read_list(release_dir / "train.csv")
    assert [r[1:] for r in rows] == [("1001_DFA_ANG_XX", "ANG"), ("1002_IEO_HAP_HI", "HAP"),
                                     ("1004_ITH_NEU_XX", "NEU")]  # fmt: skip
    clip_list = load_cremad(release_dir, val_fraction=0.0)
    assert clip_list.classes == ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]  # the released code's order
    assert clip_list.labels().tolist() == [5, 1, 0, 2]
    assert clip_list.clips[0].audio == release_dir / "AudioWAV" / "1001_DFA_ANG_XX.wav"


def test_missing_clip_is_reported_and_the_rest_written(release_h5):
    out, report = release_h5
    assert [f["id"] for f in report.failed] == ["1004_ITH_NEU_XX"]
    assert report.failed[0]["reason"] == "missing file"
    assert json.loads(Path(f"{out}.report.json").read_text())["failed"][0]["id"] == "1004_ITH_NEU_XX"
    with h5py.File(out) as f:
        assert f.attrs["kind"] == "avel-clips"
        assert f["clip_id"].asstr()[()].tolist() == ["1001_DFA_ANG_XX", "1002_IEO_HAP_HI", "1003_TIE_SAD_LO"]
        assert f["label"][()].tolist() == [5, 1, 2]
        assert f["splits/train"][()].tolist() == [0, 1] and f["splits/test"][()].tolist() == [2]
        assert f["spectrogram"].shape == (3, 257, 299)  # PMR: 257 x 299 for CREMA-D
        assert f["frames"].shape == (3, 10, 32, 32, 3)
        assert f["fps"][()] == pytest.approx([30.0, 29.97, 15.0], abs=1e-3)
        assert f["duration"][()] == pytest.approx([2.5, 2.0, 4.0], abs=0.05)


def test_two_workers_write_the_same_file(release_h5, release_dir, tmp_path):
    out, _ = release_h5
    clip_list = load_cremad(release_dir, val_fraction=0.0)
    report = preprocess_clips(
        clip_list, tmp_path / "w2.h5", ClipParams(frame_size=32), workers=2, progress=False
    )
    assert [f["id"] for f in report.failed] == ["1004_ITH_NEU_XX"]
    with h5py.File(out) as a, h5py.File(tmp_path / "w2.h5") as b:
        for name in ("frames", "spectrogram", "label", "splits/train", "splits/test"):
            np.testing.assert_array_equal(a[name][()], b[name][()])


def test_frames_sit_at_the_centres_of_ten_parts(release_h5):
    out, _ = release_h5
    with h5py.File(out) as f:
        frames, fps, duration = f["frames"][()], f["fps"][()], f["duration"][()]
    for i in range(3):
        n = int(round(duration[i] * fps[i]))  # frames in the file
        expected = np.floor((np.arange(10) + 0.5) / 10 * n + 1e-6)  # frame shown at the centre of part k
        level = frames[i].reshape(10, -1).mean(1) / STEP  # ramp: frame j has grey level STEP j
        assert np.abs(level - expected).max() < 0.6, (i, level.round(1), expected)


def test_short_clip_audio_is_tiled_to_three_seconds(release_h5, release_dir):
    out, _ = release_h5
    with h5py.File(out) as f:
        spec = f["spectrogram"][1]  # 1002_IEO_HAP_HI is 2.0 s long
    wave = tone(2.0, 400.0)
    pcm = np.round(np.clip(wave, -1, 1) * 32767) / 32768  # the 16-bit wav as decoded
    expected = log_spectrogram(np.tile(pcm, 2)[: 3 * SR].astype(np.float32))
    assert np.abs(spec - expected).max() < 1e-2


def test_cremad_list_errors_name_file_and_line(tmp_path):
    (tmp_path / "train.csv").write_text("1001_DFA_ANG_XX,ANG\n1002_DFA_XYZ_XX,XYZ\n")
    with pytest.raises(ValueError, match=r"train\.csv:2: unknown emotion 'XYZ'"):
        read_list(tmp_path / "train.csv")
    (tmp_path / "train.csv").write_text("1001_DFA_ANG_XX\n")
    with pytest.raises(ValueError, match=r"train\.csv:1: expected 2 fields 'clip_id,EMOTION', got 1"):
        read_list(tmp_path / "train.csv")
    (tmp_path / "train.csv").write_text("1001_DFA_ANG_XX,ANG\n")
    (tmp_path / "test.csv").write_text("1001_DFA_ANG_XX,ANG\n")
    with pytest.raises(ValueError, match=r"test\.csv:1: clip 1001_DFA_ANG_XX is already listed"):
        load_cremad(tmp_path)


def test_preprocess_bad_list_is_one_line_exit_2(tmp_path):
    for sub in ("AudioWAV", "VideoFlash"):
        (tmp_path / sub).mkdir()
    (tmp_path / "train.csv").write_text("1001_DFA_ANG_XX,ANGRY\n")
    (tmp_path / "test.csv").write_text("")
    code, text = invoke("preprocess", tmp_path, tmp_path / "o.h5", "--no-progress")
    assert code == 2
    assert (
        text.strip()
        == f"error: {tmp_path / 'train.csv'}:1: unknown emotion 'ANGRY'; valid: {list(CREMAD_CLASSES)}"
    )
    assert not (tmp_path / "o.h5").exists()


def test_carve_val_is_per_class_seeded_and_leaves_one():
    labels = ["a"] * 20 + ["b"] * 10 + ["c"] * 1
    m0, m1 = carve_val(labels, 0.1, 0), carve_val(labels, 0.1, 0)
    assert (m0 == m1).all()
    assert m0[:20].sum() == 2 and m0[20:30].sum() == 1 and m0[30:].sum() == 0
    assert not (carve_val(labels, 0.1, 1) == m0).all()


@pytest.mark.skipif(not (SHARED_CREMAD / "train.csv").is_file(), reason="../shared/crema-d is not present")
def test_shared_cremad_lists():
    train, test = read_list(SHARED_CREMAD / "train.csv"), read_list(SHARED_CREMAD / "test.csv")
    assert (len(train), len(test)) == (6698, 744)
    counts = {k: sum(r[2] == k for r in train) for k in CREMAD_CLASSES}
    assert counts == {"ANG": 1166, "DIS": 1142, "FEA": 1138, "HAP": 1148, "NEU": 973, "SAD": 1131}
    assert all(r[1].split("_")[2] == r[2] for r in train + test)  # the id names its emotion
    assert not {r[1] for r in train} & {r[1] for r in test}


# ------------------------------------------------------------------------------------------- manifest


def test_manifest_with_bom_spans_and_separate_audio(tmp_path):
    frames = ramp_frames(40, 32)  # 4 s at 10 fps
    from avel.synth.ave import write_video

    write_video(tmp_path / "a.mp4", frames, 10.0, tone(4.0)[None], SR)
    write_video(tmp_path / "b.mp4", frames, 10.0, None, SR)  # no audio stream: a separate wav
    write_wav(tmp_path / "b.wav", tone(4.0, 880.0), SR)
    (tmp_path / "m.csv").write_bytes(
        "\ufeffvideo,label,split,start,end,audio\na.mp4,dog,train,1.0,3.0,\nb.mp4,cat,test,,,b.wav\n"
        "a.mp4,cat,train,0,1.5,\n".encode()
    )
    clip_list = load_manifest(tmp_path / "m.csv", val_fraction=0.0)
    assert clip_list.classes == ["dog", "cat"]
    assert [c.clip_id for c in clip_list.clips] == ["a", "b", "a#1"]
    out = tmp_path / "m.h5"
    report = preprocess_clips(clip_list, out, ClipParams(frames=4, frame_size=16, audio_seconds=2.0),
                              progress=False)  # fmt: skip
    assert not report.failed
    with h5py.File(out) as f:
        level = f["frames"][()].reshape(3, 4, -1).mean(-1) / STEP
        assert np.abs(level[0] - [12, 17, 22, 27]).max() < 0.6  # [1, 3) s at 10 fps: centres 1.25 ... 2.75
        assert f["spectrogram"].shape == (3, 257, 199)
        assert f["start"][()][:2] == pytest.approx([1.0, np.nan], nan_ok=True)
        assert f["audio_path"].asstr()[()].tolist() == ["", "b.wav", ""]


@pytest.mark.parametrize(
    "text, message",
    [
        ("video,label\nx.mp4,a\n", r"m\.csv:1: header .* missing columns \['split'\]"),
        ("video,label,split\nx.mp4,a,dev\n", r"m\.csv:2: split 'dev'; valid: \['train', 'val', 'test'\]"),
        ("video,label,split,start,end\nx.mp4,a,train,3,2\n", r"m\.csv:2: end \(2\.0\) must be after start"),
        ("video,label,split,start\nx.mp4,a,train,abc\n", r"m\.csv:2: start must be seconds, got 'abc'"),
    ],
)
def test_manifest_errors_name_file_and_line(tmp_path, text, message):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_manifest(tmp_path / "m.csv")


def test_dataset_defaults():
    assert clip_params("crema-d") == ClipParams(frames=10, audio_seconds=3.0)
    assert clip_params("vggsound", frames=3).audio_seconds == 5.0
    with pytest.raises(ValueError, match="unknown dataset 'ucf'"):
        clip_params("ucf")


# ------------------------------------------------------------------------------------------ embedded


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.mark.parametrize("layout", ["crema-d", "manifest"])
def test_synth_is_bit_identical_per_seed(tmp_path, layout):
    cfg = dict(layout=layout, clips=8, frame_size=32, fps=10.0)
    synth_clips(tmp_path / "a", ClipSynthConfig(**cfg, seed=5))
    synth_clips(tmp_path / "b", ClipSynthConfig(**cfg, seed=5))
    synth_clips(tmp_path / "c", ClipSynthConfig(**cfg, seed=6))
    a = _digest(tmp_path / "a")
    assert a == _digest(tmp_path / "b")
    assert a != _digest(tmp_path / "c")
    if layout == "crema-d":
        assert sum(k.startswith("VideoFlash/") and k.endswith(".flv") for k in a) == 8
        assert sum(k.startswith("AudioWAV/") and k.endswith(".wav") for k in a) == 8


def test_synth_cremad_clip_lengths_and_ids(tmp_path):
    summary = synth_clips(tmp_path, ClipSynthConfig(clips=12, frame_size=32, fps=10.0, seed=0))
    rows = read_list(tmp_path / "train.csv") + read_list(tmp_path / "test.csv")
    assert len(rows) == 12 and summary["splits"] == {"train": 6, "test": 6}

    for _, cid, emotion in rows:
        assert cid.split("_")[2] == emotion
        with wave.open(str(tmp_path / "AudioWAV" / f"{cid}.wav")) as w:
            assert w.getframerate() == SR and w.getnchannels() == 1
            assert 2.0 <= w.getnframes() / SR <= 5.0


def test_synth_refuses_flv_widths_decord_misreads(tmp_path):
    code, text = invoke("synth", tmp_path, "--layout", "crema-d", "--frame-size", "48")
    assert code == 2 and "multiple of 32" in text


# ---------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def cremad_h5(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("synth_crema")
    code, text = invoke("synth", d / "cd", "--layout", "crema-d", "--videos", 36, "--fps", 10)
    assert code == 0, text
    code, text = invoke("preprocess", d / "cd", d / "cd.h5", "--frame-size", 32, "--no-progress")
    assert code == 0, text
    return d / "cd.h5"


def test_loader_draws_train_frames_and_evaluates_on_all(cremad_h5):
    data = load_splits(cremad_h5, family="resnet18", frames=3)
    assert data.meta["num_classes"] == 6
    g = torch.Generator().manual_seed(0)
    tr = data.train.batch(torch.arange(4), train=True, generator=g)
    assert tr.audio.shape == (4, 1, 257, 299) and tr.visual.shape == (4, 3, 3, 32, 32)
    te = data.test.batch(torch.arange(2))
    assert te.visual.shape == (2, 10, 3, 32, 32)
    assert len(data.train) + len(data.val) + len(data.test) == 36
    with pytest.raises(ValueError, match="clip classifiers"):
        load_splits(cremad_h5, family="avel")


def test_cli_cremad_synth_preprocess_train_pmr_evaluate(cremad_h5, tmp_path):
    code, text = invoke("train", cremad_h5, "--model", "resnet18", "--fusion", "concat", "--pmr",
                        "--width", 8, "--frames", 3, "--epochs", 1, "--batch-size", 8,
                        "--out", tmp_path / "run", "--device", "cpu", "--no-progress")  # fmt: skip
    assert code == 0, text
    code, text = invoke("evaluate", tmp_path / "run" / "best.pt", cremad_h5)
    assert code == 0, text
    rep = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert set(rep["per_class_accuracy"]) == set(CREMAD_CLASSES)
    for key in ("accuracy", "macro_f1", "map", "audio_accuracy", "visual_accuracy"):
        assert 0 <= rep[key] <= 1, key
    assert rep["map"] >= 1 / 6 - 1e-6 or rep["rows"] < 6  # AP of any ranking is at least the positive share
    assert "macro-F1" in text and "mAP" in text


def test_cli_manifest_synth_preprocess_train_evaluate(tmp_path):
    code, text = invoke("synth", tmp_path / "m", "--layout", "manifest", "--videos", 24, "--fps", 10,
                        "--frame-size", 32)  # fmt: skip
    assert code == 0, text
    code, text = invoke("preprocess", tmp_path / "m" / "manifest.csv", tmp_path / "m.h5", "--frame-size", 32,
                        "--dataset", "vggsound", "--no-progress")  # fmt: skip
    assert code == 0, text
    with h5py.File(tmp_path / "m.h5") as f:
        assert f["spectrogram"].shape[1:] == (257, 500)  # 5 s window (OGM-GE's VGGSound)
        assert f.attrs["layout"] == "manifest" and f["audio_path"].asstr()[3] == "clips/clip00003.wav"
    code, text = invoke("train", tmp_path / "m.h5", "--model", "resnet18", "--fusion", "sum", "--width", 8,
                        "--frames", 3, "--epochs", 1, "--batch-size", 8, "--out", tmp_path / "run",
                        "--device", "cpu", "--no-progress")  # fmt: skip
    assert code == 0, text
    code, text = invoke("evaluate", tmp_path / "run" / "best.pt", tmp_path / "m.h5")
    assert code == 0, text
    code, text = invoke("info", tmp_path / "m.h5")
    assert code == 0 and "avel-clips" in text


def _tone_of(wav: Path) -> int | None:
    """The class whose pitch dominates a synthesised wav (its spectrum's peak near that class's f0 stands
    > 60× above the median of 100-2000 Hz; an off-screen distractor sine reaches ≈ 45×), or None."""
    from avel.synth.ave import class_traits

    with wave.open(str(wav)) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)
    mag, f = np.abs(np.fft.rfft(x)), np.fft.rfftfreq(len(x), 1 / SR)
    median = np.median(mag[(f > 100) & (f < 2000)])
    score = {k: mag[np.abs(f / class_traits(k)["f0"] - 1) < 0.03].max() / median for k in range(6)}
    best = max(score, key=score.get)
    return best if score[best] > 60 else None


@pytest.mark.parametrize(
    ("knobs", "tone_of_class"),
    [
        (dict(p_audio=1.0, audio_groups=0), dict(NEU=0, HAP=1, SAD=2, FEA=3, DIS=4, ANG=5)),
        (dict(p_audio=1.0, audio_groups=3), dict(NEU=0, HAP=0, SAD=2, FEA=2, DIS=4, ANG=4)),
        (dict(), dict(NEU=0, HAP=0, SAD=2, FEA=2, DIS=4, ANG=4)),  # the defaults: the calibrated set cdp
        (dict(p_audio=0.0, audio_else="none"), dict.fromkeys(CREMAD_CLASSES)),
    ],
)
def test_synth_audio_groups_and_silent_clips_in_the_written_wavs(tmp_path, knobs, tone_of_class):
    """--audio-groups 3: NEU/HAP, SAD/FEA, DIS/ANG each share the tone of the group's first class;
    --audio-else none with p_audio 0: no wav carries a class tone (noise and the distractor only)."""
    synth_clips(tmp_path, ClipSynthConfig(clips=12, frame_size=32, fps=10.0, audio_snr_db=10, **knobs))
    rows = read_list(tmp_path / "train.csv") + read_list(tmp_path / "test.csv")
    tones = {cid: _tone_of(tmp_path / "AudioWAV" / f"{cid}.wav") for _, cid, _ in rows}
    assert tones == {cid: tone_of_class[emotion] for _, cid, emotion in rows}


def test_synth_audio_knob_errors(tmp_path):
    code, text = invoke("synth", tmp_path, "--layout", "crema-d", "--audio-groups", "7")
    assert code == 2 and "audio_groups must be in [0, 6]" in text
    code, text = invoke("synth", tmp_path, "--layout", "crema-d", "--audio-else", "silence")
    assert code == 2 and 'audio_else: "silence" is not allowed: must be one of other, none' in text
