"""Misuse and damage, tried for real: two preprocess runs on one output, a file damaged on disk or left
unfinished, mismatched checkpoints, empty splits, bad option values, the worker count, buffered output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from avel.cli import app
from preprocessing.h5 import describe, verify

ROOT = Path(__file__).resolve().parents[1]
AVEL = [sys.executable, "-m", "avel"]


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def small_ave(tmp_path_factory) -> Path:
    """6 real mp4 videos of 2 classes (each split has at least one)."""
    from avel.synth import SynthConfig, synth_dataset

    out = tmp_path_factory.mktemp("small_ave")
    synth_dataset(out, SynthConfig(videos=6, classes=2, frame_size=32, fps=4.0, seed=1))
    return out


# ------------------------------------------------------------------------------- 2. one run per output


HELD_PREPROCESS = (  # `avel preprocess` whose first video waits until the file $RELEASE exists
    "import os, sys, time\n"
    "import preprocessing.pipeline as p\n"
    "d = p._decode_job\n"
    "def held(job):\n"
    "    while not os.path.exists(os.environ['RELEASE']):\n"
    "        time.sleep(0.02)\n"
    "    return d(job)\n"
    "p._decode_job = held\n"
    "from avel.cli import app\n"
    "app(sys.argv[1:], prog_name='avel')\n"
)


def test_second_preprocess_on_one_output_refuses_or_waits(small_ave, tmp_path):
    out = tmp_path / "out.h5"
    args = ["preprocess", str(small_ave), str(out), "--frame-size", "32", "--no-progress"]
    release = tmp_path / "release"
    env = {**os.environ, "RELEASE": str(release)}
    first = subprocess.Popen(
        [sys.executable, "-c", HELD_PREPROCESS, *args], cwd=ROOT, env=env, stderr=subprocess.PIPE
    )
    lock = Path(f"{out}.lock")
    deadline = time.time() + 60
    while not (lock.is_file() and lock.read_text()) and time.time() < deadline and first.poll() is None:
        time.sleep(0.02)
    assert first.poll() is None, first.stderr.read().decode()

    second = invoke(*args)  # refuses at once, naming the running one
    assert second.exit_code == 2
    assert f"out.h5: avel preprocess (pid {first.pid} on host" in second.output
    assert "--wait" in second.output and "Traceback" not in second.output
    assert first.poll() is None  # it goes on, untouched

    waiting = subprocess.Popen(
        [*AVEL, *args, "--wait"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    time.sleep(1.0)
    release.touch()
    stdout, stderr = (s.decode() for s in waiting.communicate(timeout=300))
    assert first.wait(timeout=300) == 0, first.stderr.read().decode()
    assert waiting.returncode == 0, stderr
    assert "6 rows from 6/6 videos" in stdout
    _, damaged = verify(out)
    assert damaged == {}
    with h5py.File(out, "r") as f:
        assert all(name in f for name in ("duration", "fps", "source_sample_rate"))
        assert (f["frames"][()].reshape(6, -1).max(axis=1) > 0).all()  # no all-zero row
    keep = ("out.h5", "out.h5.report.json", "release")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in keep]
    assert leftovers == []  # no lock, .tmp or .parts left behind


# ------------------------------------------------------------------------ 3. checksums, completion marker


def _flip_middle(path: Path, nbytes: int = 4096) -> tuple[str, int]:
    """Invert ``nbytes`` in the middle of the file; returns the dataset and first row of the chunk hit."""
    size = path.stat().st_size
    hit = None
    with h5py.File(path, "r") as f:
        for name in ("frames", "spectrogram"):
            ds = f[name]
            for i in range(ds.id.get_num_chunks()):
                c = ds.id.get_chunk_info(i)
                if c.byte_offset <= size // 2 < c.byte_offset + c.size:
                    hit = (name, c.chunk_offset[0], c.byte_offset, c.size)
    assert hit is not None, "the middle of a preprocess file is inside a frames or spectrogram chunk"
    name, row, offset, chunk_size = hit
    start = max(offset, min(size // 2 - nbytes // 2, offset + chunk_size - nbytes))
    with open(path, "r+b") as fh:
        fh.seek(start)
        block = fh.read(nbytes)
        fh.seek(start)
        fh.write(bytes(b ^ 0xFF for b in block))
    return name, row


def _datasets(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda k, v: names.append(k) if isinstance(v, h5py.Dataset) else None)
    return names


def test_every_dataset_written_has_a_checksum(tiny_h5, tmp_path):
    from preprocessing.h5 import read_rows_meta, write_features_file

    meta = read_rows_meta(tiny_h5)
    n = len(meta)
    feats = tmp_path / "f.h5"
    write_features_file(feats, meta, np.ones((n, 10, 4)), np.ones((n, 10, 1, 1, 2)), {"source": "test"})
    for path in (tiny_h5, feats):
        with h5py.File(path, "r") as f:
            names = [k for k in _datasets(f)]
            assert {"video_id", "label", "splits/train"} <= set(names)
            assert [k for k in names if not f[k].fletcher32] == [], path
            assert f.attrs["complete"] and f.attrs["checksums"] == "fletcher32"
        assert read_rows_meta(path).video_id.tolist() == meta.video_id.tolist()  # strings round trip


def test_damaged_file_is_refused_and_its_rows_named(tiny_h5, tmp_path):
    damaged = tmp_path / "damaged.h5"
    shutil.copy(tiny_h5, damaged)
    name, row = _flip_middle(damaged)

    result = invoke("info", "--verify", damaged)
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {damaged}: damaged file")
    assert f"{name} row {row};" in result.output or f"{name} row {row} " in result.output.replace(";", " ")

    train = invoke(
        "train", damaged, "--epochs", "1", "--width", "8", "--out", tmp_path / "run", "--no-progress"
    )
    assert train.exit_code == 2
    assert f"error: {damaged}: damaged file: dataset {name} row {row} failed its checksum" in train.output

    clean = invoke("info", "--verify", tiny_h5)
    assert clean.exit_code == 0 and "fletcher32 checksums match" in clean.output


def test_old_file_without_checksums_still_opens(features_h5):
    result = invoke("info", "--verify", features_h5)  # written by hand, schema 1: no checksums
    assert result.exit_code == 0, result.output
    assert "checksums: none" in result.output and "verify: no checksums to verify" in result.output


def test_unfinished_or_incomplete_file_is_refused(tiny_h5, tmp_path):
    unfinished = tmp_path / "unfinished.h5"
    shutil.copy(tiny_h5, unfinished)
    with h5py.File(unfinished, "a") as f:
        del f.attrs["complete"]
    with pytest.raises(ValueError, match=r"unfinished\.h5: unfinished file \(no completion marker"):
        describe(unfinished)

    no_fps = tmp_path / "no_fps.h5"
    shutil.copy(tiny_h5, no_fps)
    with h5py.File(no_fps, "a") as f:
        del f["fps"]
    result = invoke("train", no_fps, "--epochs", "1", "--no-progress", "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert f"error: {no_fps}: incomplete avel-preprocess file, missing dataset(s) ['fps']" in result.output

    text = tmp_path / "notes.h5"
    text.write_text("not hdf5\n")
    result = invoke("info", text)
    assert result.exit_code == 2 and result.output.startswith(f"error: {text}: not an HDF5 file")


def test_features_file_written_twice_at_once_is_refused(tiny_h5, tmp_path):
    from preprocessing.h5 import read_rows_meta, write_features_file
    from preprocessing.lock import OutputLocked, output_lock

    out = tmp_path / "f.h5"
    meta = read_rows_meta(tiny_h5)
    with output_lock(out, "avel extract"):
        with pytest.raises(OutputLocked, match=rf"f\.h5: avel extract \(pid {os.getpid()} on host"):
            write_features_file(out, meta, np.ones((len(meta), 10, 4)), np.ones((len(meta), 10, 1, 1, 2)), {})
    assert not out.exists()
