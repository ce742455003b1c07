"""preprocess round trip on real mp4 files written with PyAV: labels, frame timing, spectrograms, bad
inputs, resume after SIGKILL, parameter checks, decode_clip for videos of any length."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import h5py
import numpy as np
import pytest

from avel.preprocessing.audio import fit_length, num_columns
from avel.preprocessing.h5 import check_params, describe
from avel.preprocessing.pipeline import decode_clip, preprocess

SIZE = 32  # stored frame size


def level(second: int) -> int:
    """Grey level of every frame of one second: the frame content encodes its second."""
    return 20 + 20 * second


def write_mp4(
    path: Path,
    seconds: float,
    fps: float = 10.0,
    sr: int = 44100,
    channels: int = 2,
    audio: bool = True,
    hw: tuple[int, int] = (48, 64),
) -> None:
    from fractions import Fraction

    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        v.height, v.width = hw
        v.pix_fmt = "yuv420p"
        if audio:
            a = c.add_stream("aac", rate=sr)
            a.layout = "stereo" if channels == 2 else "mono"
        for i in range(round(seconds * fps)):
            img = np.full((*hw, 3), level(int(i / fps)), np.uint8)
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        if audio:
            t = np.arange(int(seconds * sr)) / sr
            wave = np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * channels).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout=a.layout.name)
            frame.sample_rate = sr
            for p in [*a.encode(frame), *a.encode()]:
                c.mux(p)


ROWS = [  # category, id, quality, start, end
    ("Bark", "vid_a", "good", 2, 7),
    ("Frying (food)", "v-b_1", "good", 0, 10),
    ("Male speech, man speaking", "short7", "good", 0, 0),
    ("Bark", "missing", "good", 0, 10),
    ("Frying (food)", "vid_a", "good", 8, 10),  # repeated id: second event of vid_a
    ("Bark", "noaudio", "good", 1, 3),
    ("Bark", "truncated", "good", 0, 10),
    ("Bark", "empty", "good", 0, 10),
]
SPLITS = {"trainSet.txt": [0, 1, 3, 4, 5], "valSet.txt": [2, 6], "testSet.txt": [7, 4]}


def make_dataset(root: Path) -> Path:
    ave = root / "AVE"
    ave.mkdir(parents=True)
    write_mp4(ave / "vid_a.mp4", 10.0)
    write_mp4(ave / "v-b_1.mp4", 10.0, fps=30000 / 1001, sr=48000, channels=1)  # 29.97 fps, 48 kHz mono
    write_mp4(ave / "short7.mp4", 7.0)
    write_mp4(ave / "noaudio.mp4", 10.0, audio=False)
    write_mp4(ave / "full.mp4", 10.0)
    (ave / "truncated.mp4").write_bytes((ave / "full.mp4").read_bytes()[:1500])
    (ave / "full.mp4").unlink()
    (ave / "empty.mp4").write_bytes(b"")
    lines = ["&".join(map(str, r)) for r in ROWS]
    header = "Category&VideoID&Quality&StartTime&EndTime"
    (root / "Annotations.txt").write_text("\r\n".join([header, *lines]) + "\r\n", newline="")
    for name, idx in SPLITS.items():
        (root / name).write_text("\n".join(lines[i] for i in idx) + "\n")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds"))


@pytest.fixture(scope="module")
def result(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "ave.h5"
    report = preprocess(dataset, out, frame_size=SIZE, progress=False)
    return out, report


GOOD_ROWS = [0, 1, 2, 4]  # annotation rows whose video decodes


def test_rows_labels_and_splits(result):
    out, report = result
    with h5py.File(out, "r") as f:
        assert f.attrs["kind"] == "avel-preprocess" and f.attrs["schema_version"] == 2
        assert json.loads(f.attrs["classes"]) == [
            "Bark",
            "Frying (food)",
            "Male speech, man speaking",
            "background",
        ]
        assert f["annotation_row"][()].tolist() == GOOD_ROWS
        assert f["video_id"].asstr()[()].tolist() == ["vid_a", "v-b_1", "short7", "vid_a"]
        assert f["label"][()].tolist() == [0, 1, 2, 1]
        bg = 3
        expected = np.full((4, 10), bg)
        expected[0, 2:7] = 0
        expected[1, :] = 1
        expected[3, 8:10] = 1
        np.testing.assert_array_equal(f["segment_labels"][()], expected)
        np.testing.assert_array_equal(f["onehot"][()].argmax(-1), expected)
        assert f["onehot"].dtype == np.uint8 and f["onehot"].shape == (4, 10, 4)
        # splits renumbered to final rows; rows of failed videos dropped
        assert f["splits/train"][()].tolist() == [0, 1, 3]
        assert f["splits/val"][()].tolist() == [2]
        assert f["splits/test"][()].tolist() == [3]
        assert f["frames"].chunks == (1, 10, 1, SIZE, SIZE, 3)
        assert f["spectrogram"].chunks == (1, 257, 1004)
        np.testing.assert_allclose(f["fps"][()], [10, 30000 / 1001, 10, 10], rtol=1e-4)
        assert f["source_sample_rate"][()].tolist() == [44100, 48000, 44100, 44100]
        np.testing.assert_allclose(f["duration"][()], [10, 10, 7, 10], atol=0.05)
    assert report.rows == 4 and report.videos == 7 and report.decoded == 3


def test_frames_come_from_the_right_second(result):
    out, _ = result
    with h5py.File(out, "r") as f:
        frames = f["frames"][()].astype(float)  # (N, 10, 1, S, S, 3)
    means = frames.mean(axis=(2, 3, 4, 5))  # (N, 10)
    expected = np.array([level(t) for t in range(10)])
    np.testing.assert_allclose(means[0], expected, atol=3)
    np.testing.assert_allclose(means[1], expected, atol=3)  # 29.97 fps
    short = np.array([level(min(t, 6)) for t in range(10)])  # 7 s clip repeats its last frame
    np.testing.assert_allclose(means[2], short, atol=3)
    np.testing.assert_array_equal(frames[3], frames[0])  # repeated id: same decoded arrays


def test_spectrogram_and_columns(result):
    out, _ = result
    with h5py.File(out, "r") as f:
        spec = f["spectrogram"][()]
        cols = f["segment_columns"][()]
    assert spec.shape == (4, 257, 1004) and spec.dtype == np.float32
    np.testing.assert_allclose(spec.mean(axis=(1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(spec.std(axis=(1, 2)), 1, atol=1e-3)
    # column c covers samples [159c, 159c + 512) and belongs to the second holding its centre 159c + 256
    assert cols.tolist() == [0, 100, 200, 301, 401, 502, 603, 703, 804, 905, 1004]
    centre = np.arange(1004) * 159 + 256
    for t in range(10):
        assert (centre[cols[t] : cols[t + 1]] // 16000 == t).all()


def test_bad_videos_are_reported(result):
    out, report = result
    reasons = {f["id"]: f["reason"] for f in report.failed}
    assert reasons["missing"] == "missing file"
    assert reasons["noaudio"] == "no audio stream"
    assert reasons["truncated"] == "undecodable video (truncated or not a video)"
    assert reasons["empty"] == "zero length (empty file)"
    saved = json.loads(Path(f"{out}.report.json").read_text())
    assert {f["id"] for f in saved["failed"]} == {"missing", "noaudio", "truncated", "empty"}
    assert all(f["path"].endswith(f"{f['id']}.mp4") for f in saved["failed"])
    assert not Path(f"{out}.parts").exists() and not Path(f"{out}.tmp").exists()
    assert "4 failed" in report.summary()


def test_check_params_message(result):
    out, _ = result
    check_params(out, "avel-preprocess", frame_size=SIZE, frames_per_segment=1, hop_length=159)
    with pytest.raises(ValueError) as e:
        check_params(out, "avel-preprocess", frame_size=224)
    assert str(e.value) == f"{out}: parameter frame_size = {SIZE}, but frame_size = 224 is needed"
    with pytest.raises(ValueError, match="kind = 'avel-preprocess', but 'avel-features' is needed"):
        check_params(out, "avel-features")


def test_describe(result):
    out, _ = result
    text = describe(out)
    assert "rows: 4" in text and "train  3" in text and "frame_size" in text
    assert "background segments: 57.5%" in text  # (5 + 0 + 10 + 8) / 40


@pytest.mark.parametrize(
    "threads",
    [None, pytest.param(1, marks=pytest.mark.slow)],  # killed on 2 decoding threads (the default) or 1
)
def test_resume_after_sigkill_equals_uninterrupted_run(dataset, result, tmp_path, threads):
    out = tmp_path / "killed.h5"
    parts = Path(f"{out}.parts")
    code = (
        "import sys, time; from avel.preprocessing.pipeline import preprocess, _decode_job as d\n"
        "import avel.preprocessing.pipeline as p\n"
        "p._decode_job = lambda job: (time.sleep(0.3), d(job))[1]  # slow enough to kill mid-run\n"
        f"preprocess({str(dataset)!r}, {str(out)!r}, frame_size={SIZE}, progress=False, threads={threads})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[1])
    deadline = time.time() + 60
    while not list(parts.glob("*.shard")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and len(list(parts.glob("*.shard"))) >= 1
    resume = {"workers": 2} if threads is None else {"threads": 2}
    report = preprocess(dataset, out, frame_size=SIZE, progress=False, **resume)
    assert report.resumed >= 1 and report.rows == 4
    reference, _ = result
    with h5py.File(reference, "r") as a, h5py.File(out, "r") as b:
        names = []
        a.visit(lambda n: names.append(n) if isinstance(a[n], h5py.Dataset) else None)
        for n in names:
            np.testing.assert_array_equal(a[n][()], b[n][()], err_msg=n)


@pytest.mark.slow  # two whole preprocess runs (the fast tier keeps the resume-after-kill one)
def test_clean_set_written_while_decoding_equals_rebuild_from_shards(dataset, result, tmp_path):
    """No failures: OUT.h5 is filled while decoding (1 process: on the writer thread; 2: from the workers'
    shards). With failures it is rebuilt from the shards (``result``). Same arrays either way."""
    (tmp_path / "AVE").mkdir()
    for vid in ("vid_a", "v-b_1", "short7"):
        (tmp_path / "AVE" / f"{vid}.mp4").write_bytes((dataset / "AVE" / f"{vid}.mp4").read_bytes())
    lines = ["&".join(map(str, ROWS[i])) for i in GOOD_ROWS]
    (tmp_path / "Annotations.txt").write_text("\n".join(lines) + "\n")
    for name in SPLITS:
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    reference, _ = result
    for workers, threads in ((1, 1), (2, None), (1, None)):  # 1 thread, 2 processes, the default threads
        out = tmp_path / f"w{workers}t{threads}.h5"
        report = preprocess(tmp_path, out, frame_size=SIZE, workers=workers, threads=threads, progress=False)
        assert (report.rows, report.decoded, report.failed) == (4, 3, [])
        assert not Path(f"{out}.parts").exists() and not Path(f"{out}.tmp").exists()
        with h5py.File(reference, "r") as a, h5py.File(out, "r") as b:
            for n in ("frames", "spectrogram", "duration", "fps", "source_sample_rate", "segment_labels"):
                np.testing.assert_array_equal(a[n][()], b[n][()], err_msg=f"{n}, {workers}w {threads}t")


def test_one_thread_reports_the_same_failures_and_writes_the_same_file(dataset, result, tmp_path):
    """Missing, empty, truncated and audio-less videos on one thread (frames on the main thread, audio on
    the writer): the report and the file of the default run on 2 decoding threads (``result``)."""
    reference, one = result
    out = tmp_path / "t1.h5"
    report = preprocess(dataset, out, frame_size=SIZE, threads=1, progress=False)
    assert report.failed == one.failed and len(report.failed) == 4
    assert (report.rows, report.decoded, report.videos) == (one.rows, one.decoded, one.videos)
    assert json.loads(Path(f"{out}.report.json").read_text())["failed"] == one.failed
    with h5py.File(reference, "r") as a, h5py.File(out, "r") as b:
        names = []
        a.visit(lambda n: names.append(n) if isinstance(a[n], h5py.Dataset) else None)
        for n in names:
            np.testing.assert_array_equal(a[n][()], b[n][()], err_msg=n)


def test_parts_from_other_parameters_are_refused(dataset, tmp_path):
    out = tmp_path / "x.h5"
    Path(f"{out}.parts").mkdir()
    Path(f"{out}.parts/params.json").write_text(json.dumps({"frame_size": 64}))
    with pytest.raises(ValueError, match=r"x\.h5\.parts: unfinished shards from another run") as e:
        preprocess(dataset, out, frame_size=SIZE, progress=False)
    assert "'frame_size': (64, 32)" in str(e.value)


def test_decode_clip_any_length(tmp_path):
    path = tmp_path / "mine.mp4"
    write_mp4(path, 3.5, fps=12.5, sr=22050, hw=(40, 30))
    frames, spec, cols, info = decode_clip(path, frame_size=16, frames_per_segment=2)
    assert frames.shape == (3, 2, 16, 16, 3) and frames.dtype == np.uint8
    assert spec.shape == (257, num_columns(48000)) and cols.tolist() == [0, 100, 200, num_columns(48000)]
    assert info["segments"] == 3 and info["source_sample_rate"] == 22050
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3, 4)), [level(0), level(1), level(2)], atol=3)
    with pytest.raises(FileNotFoundError, match="nothere.mp4: missing file"):
        decode_clip(tmp_path / "nothere.mp4")


def test_audio_pad_policies():
    wave = np.array([1, 2, 3], np.float32)
    assert fit_length(wave, 7, "zero").tolist() == [1, 2, 3, 0, 0, 0, 0]
    assert fit_length(wave, 7, "tile").tolist() == [1, 2, 3, 1, 2, 3, 1]
    assert fit_length(wave, 2, "tile").tolist() == [1, 2]
    with pytest.raises(ValueError, match="unknown audio_pad 'x'"):
        fit_length(wave, 7, "x")


def test_cli_info_and_preprocess_exit_code(dataset, result, tmp_path):
    from typer.testing import CliRunner

    from avel.cli import app

    out, _ = result
    info = CliRunner().invoke(app, ["info", str(out)])
    assert info.exit_code == 0 and "kind: avel-preprocess" in info.output
    run = CliRunner().invoke(
        app, ["preprocess", str(dataset), str(tmp_path / "c.h5"), "--frame-size", "16", "--no-progress"]
    )
    assert run.exit_code == 1 and "4 failed" in run.output  # bad videos make the command fail
    assert (tmp_path / "c.h5").is_file()
