"""Clip layouts (crema-d, manifest) run as AVE does (``avel.preprocessing.runs``): ``--shard I/N`` on several
machines then ``--merge`` gives the file one run writes; a killed run resumes from its shard files and ends
with the file an uninterrupted run writes; failed clips reported as in one run; the lock and the
completion marker. Real media from ``avel synth``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from avel.cli import app
from avel.preprocessing.h5 import check_file

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--frame-size", "32", "--frames", "2", "--no-progress"]
MISSING = "1091_TIE_NEU_XX"  # a list line naming a clip whose files do not exist
runner = CliRunner()


def invoke(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def arrays_and_attrs(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Every dataset and every root attribute but the time the file was written."""
    arrays: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: arrays.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
        attrs = {k: v for k, v in f.attrs.items() if k != "created"}
    return arrays, attrs


def assert_same_file(a: Path, b: Path) -> None:
    (xa, aa), (xb, ab) = arrays_and_attrs(a), arrays_and_attrs(b)
    assert xa.keys() == xb.keys() and aa.keys() == ab.keys()
    for name, value in xa.items():
        np.testing.assert_array_equal(xb[name], value, err_msg=name)
    for k, v in aa.items():
        assert np.array_equal(np.asarray(ab[k]), np.asarray(v)), k


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    """A CREMA-D-layout set (6 clips and a list line naming a missing one) and a manifest set (6 clips)."""
    d = tmp_path_factory.mktemp("clip_sets")
    tiny = ["--videos", 6, "--frame-size", 32, "--fps", 10]
    code, text = invoke("synth", d / "cd", "--layout", "crema-d", *tiny)
    assert code == 0, text
    with open(d / "cd" / "train.csv", "a") as fh:
        fh.write(f"{MISSING},NEU\n")
    code, text = invoke("synth", d / "m", "--layout", "manifest", *tiny)
    assert code == 0, text
    return {"crema-d": d / "cd", "manifest": d / "m" / "manifest.csv"}


@pytest.fixture(scope="module")
def single(sets, tmp_path_factory) -> dict[str, Path]:
    """The file one uninterrupted run writes, per layout."""
    d = tmp_path_factory.mktemp("single")
    out = {}
    for layout, source in sets.items():
        out[layout] = d / f"{layout}.h5"
        code, text = invoke("preprocess", source, out[layout], *COMMON)
        assert code == (1 if layout == "crema-d" else 0), text  # the missing clip: reported, exit 1
    return out


def test_clip_shards_then_merge_equal_one_run(sets, single, tmp_path):
    out = tmp_path / "merged.h5"
    code, text = invoke("preprocess", sets["crema-d"], out, "--shard", "0/2", *COMMON)
    assert code in (0, 1), text
    assert not out.exists() and len(list(Path(f"{out}.parts").glob("*.shard"))) >= 3
    code, text = invoke("preprocess", sets["crema-d"], out, "--merge", *COMMON)
    assert code == 2 and "of 7 videos have no shard" in text and not out.exists()  # shard 1/2 has not run
    code, text = invoke("preprocess", sets["crema-d"], out, "--shard", "1/2", *COMMON)
    assert code in (0, 1), text
    reports = [json.loads(Path(f"{out}.shard-{i}-of-2.report.json").read_text()) for i in (0, 1)]
    assert [f["id"] for r in reports for f in r["failed"]] == [MISSING]
    code, text = invoke("preprocess", sets["crema-d"], out, "--merge", *COMMON)
    assert code == 1 and "(0 decoded, 6 resumed" in text and "1 failed" in text, text
    assert_same_file(single["crema-d"], out)
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["failed"] == json.loads(Path(f"{single['crema-d']}.report.json").read_text())["failed"]
    assert report["failed"][0]["reason"] == "missing file"
    with h5py.File(out, "r") as f:
        assert check_file(f, out) == "avel-clips" and f.attrs["complete"]
        assert f["spectrogram"].shape == (6, 257, 299)
    assert not Path(f"{out}.parts").exists() and not Path(f"{out}.lock").exists()


HELD_RUN = (  # `avel preprocess` that decodes two clips, then hangs until it is killed
    "import itertools, sys, time\n"
    "import avel.preprocessing.clip_pipeline as p\n"
    "d, calls = p._decode_job, itertools.count()\n"
    "def held(job):\n"
    "    if next(calls) >= 2:\n"
    "        time.sleep(600)\n"
    "    return d(job)\n"
    "p._decode_job = held\n"
    "from avel.cli import app\n"
    "app(sys.argv[1:], prog_name='avel')\n"
)


def test_killed_clip_run_resumes_to_the_uninterrupted_file(sets, single, tmp_path):
    out = tmp_path / "killed.h5"
    parts = Path(f"{out}.parts")
    args = ["preprocess", str(sets["manifest"]), str(out), *COMMON]
    proc = subprocess.Popen([sys.executable, "-c", HELD_RUN, *args], cwd=ROOT, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while len(list(parts.glob("*.shard"))) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(0.2)  # into the hanging third clip
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(list(parts.glob("*.shard"))) == 2, proc.stderr.read().decode()
    assert not out.exists() and Path(f"{out}.tmp").exists()  # half-written, under its temporary name
    assert Path(f"{out}.lock").exists()  # its file stays; the kernel's lock went with the process
    with h5py.File(single["manifest"], "r") as f:
        todo = [i for i in f["clip_id"].asstr()[()] if not (parts / f"{i}.shard").is_file()]
    (parts / f"{todo[-1]}.shard.tmp").write_bytes(b"\x93NUMPY half a shard")  # a write cut short by a kill
    code, text = invoke(*args)  # no --wait: the lock is free
    assert code == 0, text
    assert "(4 decoded, 2 resumed" in text
    assert_same_file(single["manifest"], out)
    with h5py.File(out, "r") as f:
        assert check_file(f, out) == "avel-clips"
    assert not parts.exists()


def test_clip_one_thread_writes_the_default_threads_file(sets, single, tmp_path):
    """--threads 1 on both clip layouts: the file of the default run (2 threads); the missing clip reported
    the same way."""
    for layout, source in sets.items():
        out = tmp_path / f"{layout}.h5"
        code, text = invoke("preprocess", source, out, *COMMON, "--threads", "1")
        assert code == (1 if layout == "crema-d" else 0), text
        assert_same_file(single[layout], out)
        ours, theirs = (json.loads(Path(f"{f}.report.json").read_text()) for f in (out, single[layout]))
        assert ours["failed"] == theirs["failed"] and len(ours["failed"]) == (layout == "crema-d")


def test_clip_shards_refuse_other_parameters(sets, tmp_path):
    out = tmp_path / "p.h5"
    code, text = invoke("preprocess", sets["manifest"], out, "--shard", "0/3", *COMMON)
    assert code == 0, text
    code, text = invoke("preprocess", sets["manifest"], out, "--shard", "1/3", *COMMON, "--frames", "3")
    assert code == 2 and "unfinished shards from another run with different parameters" in text
    assert "'frames': (2, 3)" in text


def test_shard_file_names_keep_plain_ids_and_encode_the_rest():
    from avel.preprocessing.assemble import shard_path

    parts = Path("OUT.h5.parts")
    assert shard_path(parts, "1001_DFA_ANG_XX") == parts / "1001_DFA_ANG_XX.shard"  # CREMA-D, AVE ids
    assert shard_path(parts, "-0Ab_c9") == parts / "-0Ab_c9.shard"
    assert shard_path(parts, "train/a b#1") == parts / "train%2Fa%20b%231.shard"  # a manifest's own id
    assert shard_path(parts, "..") == parts / "...shard"  # inside the folder, whatever the id
