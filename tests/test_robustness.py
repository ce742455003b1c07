"""Misuse and damage, tried for real: two preprocess runs on one output, a file damaged on disk or left
unfinished, mismatched checkpoints, empty splits, bad option values, the worker count, buffered output."""

from __future__ import annotations

import json
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
from avel.preprocessing.h5 import describe, verify

# The full suite only: processes, grids, kills and CLI round trips (the fast tier: -m 'not slow').
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
AVEL = [sys.executable, "-m", "avel"]
TINY = ["--width", "8", "--batch-size", "8", "--device", "cpu", "--no-progress"]


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def small_ave(tmp_path_factory) -> Path:
    """6 real mp4 videos of 2 classes (each split has at least one)."""
    from avel.synth.ave import SynthConfig, synth_dataset

    out = tmp_path_factory.mktemp("small_ave")
    synth_dataset(out, SynthConfig(videos=6, classes=2, frame_size=32, fps=4.0, seed=1))
    return out


# ------------------------------------------------------------------------------- 2. one run per output


HELD_PREPROCESS = (  # `avel preprocess` whose first video waits until the file $RELEASE exists
    "import os, sys, time\n"
    "import avel.preprocessing.pipeline as p\n"
    "d = p._decode_job\n"
    "def held(job):\n"
    "    while not os.path.exists(os.environ['RELEASE']):\n"
    "        time.sleep(0.02)\n"
    "    return d(job)\n"
    "p._decode_job = held\n"
    "from avel.cli import app\n"
    "app(sys.argv[1:], prog_name='avel')\n"
)


def blocked_on_flock(pid: int, path: Path) -> bool:
    """The kernel lists process ``pid`` as waiting for the flock on the file ``path`` (``/proc/locks``:
    ``N: -> FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF``, device numbers in hex)."""
    st = os.stat(path)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    lines = [line.split() for line in Path("/proc/locks").read_text().splitlines()]
    return any(p[1:3] == ["->", "FLOCK"] and p[5] == str(pid) and p[6] == inode for p in lines if len(p) > 6)


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
    assert second.exit_code == 3  # Exit.LOCKED
    assert f"out.h5: avel preprocess (pid {first.pid} on host" in second.output
    assert "--wait" in second.output and "Traceback" not in second.output
    assert first.poll() is None  # it goes on, untouched

    waiting = subprocess.Popen(
        [*AVEL, *args, "--wait"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while not blocked_on_flock(waiting.pid, lock) and time.time() < deadline and waiting.poll() is None:
        time.sleep(0.02)  # polling for a state, not a sleep standing in for one
    # the waiter sits in flock on this very lock file, which still names the first run, before the release
    assert blocked_on_flock(waiting.pid, lock) and waiting.poll() is None
    assert json.loads(lock.read_text())["pid"] == first.pid and first.poll() is None and not out.exists()
    release.touch()
    assert first.wait(timeout=300) == 0, first.stderr.read().decode()
    stdout, stderr = (s.decode() for s in waiting.communicate(timeout=300))
    assert waiting.returncode == 0, stderr
    assert "6 rows from 6/6 videos" in stdout
    _, damaged, nonfinite = verify(out)
    assert damaged == {} and nonfinite == {}
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
    from avel.preprocessing.h5 import read_rows_meta, write_features_file

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


def test_old_file_without_checksums_still_opens(features_h5, tmp_path):
    old = tmp_path / "old.h5"  # as avel wrote files before checksums: schema 1, plain datasets, no marker
    with h5py.File(features_h5, "r") as src, h5py.File(old, "w") as dst:
        for name in _datasets(src):
            dst.create_dataset(name, data=src[name][()])
        for key, value in src.attrs.items():
            if key not in ("checksums", "complete"):
                dst.attrs[key] = value
        dst.attrs["schema_version"] = 1
    result = invoke("info", "--verify", old)
    assert result.exit_code == 0, result.output
    assert "checksums: none" in result.output and "verify: no checksums to verify" in result.output
    train = invoke("train", old, "--epochs", "1", "--out", tmp_path / "run", *TINY)
    assert train.exit_code == 0, train.output


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
    result = invoke("info", tmp_path)
    assert result.exit_code == 2
    assert result.output == f"error: {tmp_path}: is a folder; give an avel HDF5 file\n"


def test_features_file_written_twice_at_once_is_refused(tiny_h5, tmp_path):
    from avel.preprocessing.h5 import read_rows_meta, write_features_file
    from avel.preprocessing.lock import OutputLocked, output_lock

    out = tmp_path / "f.h5"
    meta = read_rows_meta(tiny_h5)
    with output_lock(out, "avel extract"):
        with pytest.raises(OutputLocked, match=rf"f\.h5: avel extract \(pid {os.getpid()} on host"):
            write_features_file(out, meta, np.ones((len(meta), 10, 4)), np.ones((len(meta), 10, 1, 1, 2)), {})
    assert not out.exists()


# --------------------------------------------------------------------- 4. checkpoint and data mismatched


@pytest.fixture(scope="module")
def checkpoints(tiny_h5, features_h5, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    runs = {"e2e": (tiny_h5, []), "features": (features_h5, [])}
    for name, (data, extra) in runs.items():
        result = invoke("train", data, "--epochs", "1", "--out", root / name, *TINY, *extra)
        assert result.exit_code == 0, result.output
    return {name: root / name / "best.pt" for name in runs}


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_checkpoint_and_data_of_another_kind_are_refused(checkpoints, tiny_h5, features_h5, tmp_path):
    e2e, feats = checkpoints["e2e"], checkpoints["features"]
    line = _one_error_line(invoke("evaluate", e2e, features_h5, "--out", tmp_path / "a"))
    assert f"{e2e} is an AVEL model trained end to end on frames and spectrograms" in line
    assert f"but {features_h5} is a features file (audio 16-d, visual 4 regions x 8, 5 labels)" in line

    line = _one_error_line(invoke("evaluate", feats, tiny_h5, "--out", tmp_path / "b"))
    assert f"{feats} is an AVEL model trained on a features file (audio 16-d, visual 4 regions x 8" in line
    assert f"but {tiny_h5} is an `avel preprocess` file" in line

    line = _one_error_line(invoke("extract", e2e, features_h5, tmp_path / "x.h5"))
    assert f"but {features_h5} is a features file" in line and not (tmp_path / "x.h5").exists()
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_features_of_other_sizes_are_refused(checkpoints, tiny_h5, tmp_path):
    from avel.preprocessing.h5 import read_rows_meta, write_features_file

    meta = read_rows_meta(tiny_h5)
    other = tmp_path / "other.h5"  # 4 event classes like the toy features, but 6-d audio and a 3x3 grid
    write_features_file(other, meta, np.ones((len(meta), 10, 6)), np.ones((len(meta), 10, 3, 3, 8)), {})
    line = _one_error_line(invoke("evaluate", checkpoints["features"], other))
    assert "(audio 16-d, visual 4 regions x 8, 5 labels)" in line
    assert f"but {other} is a features file (audio 6-d, visual 9 regions x 8, 5 labels)" in line


def test_predict_with_a_features_model_is_refused(checkpoints, small_ave):
    video = next((small_ave / "AVE").glob("*.mp4"))
    line = _one_error_line(invoke("predict", checkpoints["features"], video))
    assert "trained on precomputed features" in line


# ------------------------------------------------------------------------------ 5. empty, unusable splits


def test_synth_gives_every_split_a_video_or_refuses():
    from avel.synth.ave import SynthConfig, plan_videos

    for videos, classes in ((8, 28), (3, 28), (5, 2)):
        plans = plan_videos(SynthConfig(videos=videos, classes=classes))
        counts = {s: sum(p["split"] == s for p in plans) for s in ("train", "val", "test")}
        assert min(counts.values()) >= 1 and sum(counts.values()) == videos, (videos, counts)
    with pytest.raises(ValueError, match=r"--videos 2: must be at least 3 \(one video per split"):
        plan_videos(SynthConfig(videos=2))


def _with_split(src: Path, dst: Path, name: str, rows: list[int]) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        del f[f"splits/{name}"]
        f.create_dataset(f"splits/{name}", data=np.array(rows, dtype=np.int64))
    return dst


def test_train_refuses_empty_splits_before_writing_anything(features_h5, tmp_path):
    no_val = _with_split(features_h5, tmp_path / "no_val.h5", "val", [])
    line = _one_error_line(invoke("train", no_val, "--out", tmp_path / "run", *TINY))
    assert line == (f"error: {no_val}: the val split has no rows; training needs rows in train, val and test")
    assert not (tmp_path / "run").exists()


def test_event_balancers_need_event_segments(features_h5, tmp_path):
    background = tmp_path / "background.h5"
    shutil.copy(features_h5, background)
    with h5py.File(background, "a") as f:
        f["segment_labels"][...] = 4  # every segment background (4 classes + background)
    for balance in ("pmr", "ogm-ge"):
        line = _one_error_line(
            invoke("train", background, "--balance", balance, "--out", tmp_path / "r", *TINY)
        )
        assert (
            f"{background}: the train split has no event segment" in line and f"--balance {balance}" in line
        )
    assert not (tmp_path / "r").exists()


# -------------------------------------------------------------------------- 6. options checked up front


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--epochs", "0", "--epochs: 0 is not allowed: must be >= 1"),
        ("--batch-size", "0", "--batch-size: 0 is not allowed: must be >= 1"),
        ("--width", "0", "--width: 0 is not allowed: must be >= 1"),
        ("--lr", "-0.1", "--lr: -0.1 is not allowed: must be > 0"),
        (
            "--fusion",
            "film",
            'fusion (--fusion) for --model avel: "film" is not allowed: must be one of concat, dmrn',
        ),
        (
            "--pmr-subset",
            "2",
            "--pmr-subset: \"2\" is not allowed: must be 'val', 'test' (protocol = 'released') or a fraction"
            " of train in (0, 1]",
        ),
    ],
)
def test_bad_option_values_are_named_before_anything_is_written(
    features_h5, tmp_path, option, value, message
):
    line = _one_error_line(
        invoke("train", features_h5, option, value, "--out", tmp_path / "run", "--no-progress")
    )
    assert line == f"error: {message}"
    assert not (tmp_path / "run").exists()


def test_toml_type_and_syntax_errors_name_file_and_line(features_h5, tmp_path):
    typed = tmp_path / "typed.toml"
    typed.write_text('model = "avel"\nlr = "fast"\n')
    line = _one_error_line(invoke("train", features_h5, "-c", typed, "--out", tmp_path / "run"))
    assert line == f"error: {typed}:2: lr: expected a number"

    nested = tmp_path / "nested.toml"
    nested.write_text('epochs = 2\n\n[pmr]\nalpha = "big"\n')
    line = _one_error_line(invoke("train", features_h5, "-c", nested, "--out", tmp_path / "run"))
    assert line == f"error: {nested}:4: pmr_alpha: expected a number"

    broken = tmp_path / "broken.toml"
    broken.write_text("epochs = 2\nlr = \n")
    line = _one_error_line(invoke("train", features_h5, "-c", broken, "--out", tmp_path / "run"))
    assert line.startswith(f"error: {broken}:2: invalid TOML: ")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------ 7. one line, no traceback


def _ave_folder(src: Path, dst: Path, annotations: str | None = None, split: str | None = None) -> Path:
    shutil.copytree(src, dst)
    if annotations is not None:
        (dst / "Annotations.txt").write_text(annotations)
    if split is not None:
        (dst / "valSet.txt").write_text(split)
    return dst


def test_preprocess_input_errors_are_one_line(small_ave, tmp_path):
    text = (small_ave / "Annotations.txt").read_text().splitlines()
    header, first = text[0], text[1]
    cat, vid, quality, _, _ = first.split("&")
    cases = {
        "end": (
            f"{header}\n{cat}&{vid}&{quality}&0&11\n",
            None,
            "Annotations.txt:2: need 0 <= start <= end <= 10",
        ),
        "order": (f"{header}\n{cat}&{vid}&{quality}&5&3\n", None, "start=5, end=3"),
        "split": (
            None,
            f"{cat}&nosuchvideo&{quality}&0&10\n",
            "valSet.txt:1: no matching line in the annotations",
        ),
    }
    for name, (ann_text, split, message) in cases.items():
        folder = _ave_folder(small_ave, tmp_path / name, ann_text, split)
        line = _one_error_line(invoke("preprocess", folder, tmp_path / f"{name}.h5", "--no-progress"))
        assert line.startswith(f"error: {folder}/") and message in line, line
        assert not list(tmp_path.glob(f"{name}.h5*"))

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "AVE").mkdir()  # videos, but no Annotations.txt
    line = _one_error_line(invoke("preprocess", bare, tmp_path / "bare.h5"))
    assert line == f"error: {bare}/Annotations.txt: no such file (the AVE annotation file)"

    parent_file = tmp_path / "afile"
    parent_file.write_text("x")
    line = _one_error_line(invoke("preprocess", small_ave, parent_file / "out.h5"))
    assert line == f"error: {parent_file}/out.h5: cannot write here, {parent_file} is a file, not a folder"


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    bare = tmp_path / "bare"
    bare.mkdir()
    result = CliRunner().invoke(app, ["--debug", "preprocess", str(bare), str(tmp_path / "o.h5")])
    assert isinstance(result.exception, ValueError)  # raised, with its traceback
    monkeypatch.setenv("AVEL_DEBUG", "1")
    result = CliRunner().invoke(app, ["preprocess", str(bare), str(tmp_path / "o.h5")])
    assert isinstance(result.exception, ValueError)
    monkeypatch.delenv("AVEL_DEBUG")
    result = CliRunner().invoke(app, ["preprocess", str(bare), str(tmp_path / "o.h5")])
    assert result.exit_code == 2 and not isinstance(result.exception, ValueError)


def test_decord_error_lines_stay_off_the_terminal(small_ave, tmp_path):
    folder = _ave_folder(small_ave, tmp_path / "ds")
    video = next((folder / "AVE").glob("*.mp4"))
    video.write_bytes(video.read_bytes()[:3000])  # truncated: no moov atom
    out = tmp_path / "o.h5"
    proc = subprocess.run(
        [*AVEL, "preprocess", folder, out, "--no-progress"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 1 and "5 rows from 5/6 videos" in proc.stdout, proc.stdout + proc.stderr
    assert "moov atom" not in proc.stderr and "ERROR opening" not in proc.stderr, proc.stderr
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["failed"][0]["reason"] == "undecodable video (truncated or not a video)"


# ------------------------------------------------------------------------- 8. worker processes, numbers


def test_one_or_two_workers_give_identical_arrays(small_ave, tmp_path):
    import torch

    from avel.preprocessing.pipeline import preprocess

    threads = torch.get_num_threads()
    torch.set_num_threads(4)  # the main process on 4 threads, the workers on 1
    try:
        outs = {w: tmp_path / f"w{w}.h5" for w in (1, 2)}
        for workers, out in outs.items():
            preprocess(small_ave, out, workers=workers, frame_size=32, progress=False)
    finally:
        torch.set_num_threads(threads)
    with h5py.File(outs[1], "r") as a, h5py.File(outs[2], "r") as b:
        for name in ("frames", "spectrogram", "duration", "fps", "source_sample_rate"):
            assert a[name][()].tobytes() == b[name][()].tobytes(), name  # bit-identical


def _children(pid: int) -> list[int]:
    """Pool workers started by ``pid`` (multiprocessing's spawn_main processes)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmd and b"resource_tracker" not in cmd:
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_exit_when_the_parent_is_killed(small_ave, tmp_path):
    video = next((small_ave / "AVE").glob("*.mp4"))
    folder = tmp_path / "many"
    (folder / "AVE").mkdir(parents=True)
    line = (small_ave / "Annotations.txt").read_text().splitlines()[1].split("&")
    lines = []
    for i in range(60):  # 60 copies of one video: enough queued jobs to outlive a killed parent
        vid = f"copy{i:03d}"
        os.link(video, folder / "AVE" / f"{vid}.mp4")
        lines.append("&".join([line[0], vid, *line[2:]]))
    (folder / "Annotations.txt").write_text("\n".join(lines) + "\n")
    for name, part in (
        ("trainSet.txt", lines[:40]),
        ("valSet.txt", lines[40:50]),
        ("testSet.txt", lines[50:]),
    ):
        (folder / name).write_text("\n".join(part) + "\n")
    out = tmp_path / "o.h5"
    parts = Path(f"{out}.parts")
    proc = subprocess.Popen(
        [*AVEL, "preprocess", str(folder), str(out), "--workers", "2", "--frame-size", "32", "--no-progress"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while len(list(parts.glob("*.shard"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    workers = _children(proc.pid)
    assert len(workers) == 2 and proc.poll() is None
    proc.kill()
    proc.wait()
    at_kill = len(list(parts.glob("*.shard")))  # counted after the kill: a busy CPU may pause this test
    deadline = time.time() + 2.0  # queued jobs keep orphaned workers busy for far longer
    while any(map(_alive, workers)) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(map(_alive, workers)), "workers outlived their parent"
    time.sleep(1.0)
    assert len(list(parts.glob("*.shard"))) <= at_kill + 2  # at most the two being written


# ------------------------------------------------------------------------------- 9. smaller things


def test_epoch_lines_arrive_while_training_into_a_pipe(features_h5, tmp_path):
    import select

    out = tmp_path / "run"
    args = ["train", features_h5, "--epochs", "400", "--out", out, *TINY]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as a user's shell has it
    proc = subprocess.Popen(
        [*AVEL, *map(str, args)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 180)
        assert ready, "no line within 180 s"
        first = proc.stdout.readline().decode()
        epochs_done = len((out / "metrics.jsonl").read_text().splitlines())
        assert first.startswith("epoch   0 |"), first + proc.stderr.read1().decode()
        assert proc.poll() is None, proc.stderr.read().decode()  # still training
        assert epochs_done <= 3  # printed as it happened, not when a buffer filled
    finally:
        proc.kill()
        proc.wait()


def test_shipped_configs_by_name_from_anywhere(tmp_path, monkeypatch):
    from avel.engine.config import load_config, resolve_config

    monkeypatch.chdir(tmp_path)  # not the repository: no configs/ folder here
    for name in ("table4_avel", "table4_avel.toml", "configs/table4_avel.toml"):
        path = resolve_config(name)
        assert path.parent.name == "configs" and path.parent.parent.name == "avel" and path.is_file()
    assert load_config("table6_optimizers").optimizer == "sgd"
    shipped = r"not found: nosuch \(shipped configs, usable by name: .*table4_avel"
    with pytest.raises(FileNotFoundError, match=shipped):
        load_config("nosuch")
    with pytest.raises(FileNotFoundError):
        resolve_config("elsewhere/table4_avel.toml")  # a path to another folder is never replaced
