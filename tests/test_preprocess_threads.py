"""``avel preprocess --threads N``: N decoding threads in one process (2 by default) write the file a
one-thread run writes (every dataset with its layout, every attribute but the time it was written), with
decord and torchcodec; a run resumes from the shards an earlier run left; --shard runs decode on threads
too; the option is checked in one line; torch computes on one thread while a run decodes, and gets its own
count back after it.
Failing videos and clip layouts on threads: tests/test_preprocess.py and tests/test_clip_shards.py."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from test_preprocess_shards import h5_contents
from typer.testing import CliRunner

import avel.preprocessing.pipeline as pipeline
from avel.cli import app
from avel.preprocessing.decoders import Decoder, torchcodec_unavailable
from avel.preprocessing.pipeline import preprocess
from avel.preprocessing.runs import DEFAULT_THREADS, check_parallel
from avel.preprocessing.workers import run_jobs

WHY_NOT = torchcodec_unavailable()
runner = CliRunner()


def assert_same_file(a: Path, b: Path) -> None:
    """Same datasets (values, dtype, chunks, checksum, compression) and attributes; not the write time."""
    (xa, aa), (xb, ab) = h5_contents(a), h5_contents(b)
    assert xa.keys() == xb.keys() and aa.keys() == ab.keys()
    for name, (data, *layout) in xa.items():
        assert (xb[name][0] == data).all() and xb[name][0].shape == data.shape, name
        assert tuple(xb[name][1:]) == tuple(layout), name
    for name, attrs in aa.items():
        assert ab[name].keys() == attrs.keys(), name
        for k, v in attrs.items():
            assert str(ab[name][k]) == str(v), (name, k)


def test_thread_results_come_in_job_order_from_decoding_threads():
    main = threading.get_ident()

    def job(i: int) -> dict:
        return {"i": i, "thread": threading.current_thread().name, "here": threading.get_ident() == main}

    results = list(run_jobs(job, list(range(9)), 1, threads=3, ordered=True))
    assert [r["i"] for r in results] == list(range(9))
    assert all(r["thread"].startswith("avel-decode") and not r["here"] for r in results)
    assert sorted(r["i"] for r in run_jobs(job, list(range(9)), 1, threads=3)) == list(range(9))
    assert [r["here"] for r in run_jobs(job, [0], 1, threads=3)] == [True]  # one job: no pool


def test_default_threads_are_two_with_one_process_and_one_per_worker_process():
    assert DEFAULT_THREADS == 2
    assert (check_parallel(1, None), check_parallel(4, None), check_parallel(1, 3)) == (2, 1, 3)


@pytest.mark.parametrize("threads", [1, 3])
def test_threads_write_the_default_file_and_torch_runs_on_one_thread(tiny_ave, tiny_h5, tmp_path, threads):
    """decord on 1 and 3 threads (tiny_h5: the default, 2): the same file; each job sees one torch thread
    (on the main thread and on decoding threads); the caller's torch thread count is back after the run."""
    seen: set[int] = set()
    decode = pipeline._decode_job

    def counted(job):
        seen.add(torch.get_num_threads())
        return decode(job)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    pipeline._decode_job = counted
    try:
        out = tmp_path / f"t{threads}.h5"
        report = preprocess(tiny_ave, out, frame_size=32, threads=threads, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        pipeline._decode_job = decode
        torch.set_num_threads(before)
    assert (report.rows, report.decoded, report.resumed, report.failed) == (40, 40, 0, [])
    assert seen == {1}
    assert not Path(f"{out}.parts").exists() and not Path(f"{out}.tmp").exists()
    assert_same_file(tiny_h5, out)


@pytest.mark.skipif(bool(WHY_NOT), reason=f"torchcodec cannot load here: {WHY_NOT}")
def test_torchcodec_threads_write_the_one_thread_file(tiny_ave, tmp_path):
    tc = Decoder("torchcodec")
    one, three = tmp_path / "t1.h5", tmp_path / "t3.h5"
    assert not preprocess(tiny_ave, one, frame_size=32, progress=False, decoder=tc).failed
    assert not preprocess(tiny_ave, three, frame_size=32, threads=3, progress=False, decoder=tc).failed
    assert_same_file(one, three)


def test_threaded_shard_run_then_threaded_run_resumes(tiny_ave, tiny_h5, tmp_path):
    """--shard 0/2 on threads writes half the shards; a whole run on threads resumes them (decodes the
    other half) and writes the file of an uninterrupted run."""
    out = tmp_path / "resumed.h5"
    common = ["--frame-size", "32", "--no-progress", "--threads", "2"]
    r = runner.invoke(app, ["preprocess", str(tiny_ave), str(out), "--shard", "0/2", *common])
    assert r.exit_code == 0, r.output
    assert len(list(Path(f"{out}.parts").glob("*.shard"))) == 20 and not out.exists()
    r = runner.invoke(app, ["preprocess", str(tiny_ave), str(out), *common])
    assert r.exit_code == 0, r.output
    assert "(20 decoded, 20 resumed" in r.output
    assert_same_file(tiny_h5, out)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--threads", "0"], "error: --threads must be >= 1, got 0"),
        (
            ["--threads", "2", "--workers", "2"],
            "error: --workers 2 and --threads 2: choose one (decoding processes or threads)",
        ),
    ],
)
def test_bad_threads_options_are_one_line_exit_2(tiny_ave, tmp_path, args, message):
    out = tmp_path / "o.h5"
    r = runner.invoke(app, ["preprocess", str(tiny_ave), str(out), "--no-progress", *args])
    assert r.exit_code == 2 and r.output.strip() == message, r.output
    assert not out.exists() and not Path(f"{out}.parts").exists()
