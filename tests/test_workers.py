"""Decoding workers: results in order or as they finish, and a dead worker is an error, never a hang."""

from __future__ import annotations

import os

import pytest

from avel.preprocessing.workers import run_jobs

# The full suite only: processes, grids, kills and CLI round trips (the fast tier: -m 'not slow').
pytestmark = pytest.mark.slow


def _square(job: int) -> dict:
    return {"job": job, "value": job * job, "pid": os.getpid()}


def _die_on_two(job: int) -> dict:
    if job == 2:
        os._exit(1)  # a worker killed mid-run (out of memory, kill -9)
    return {"job": job}


def test_jobs_run_in_workers_in_order_or_as_they_finish():
    ordered = list(run_jobs(_square, list(range(7)), 2, ordered=True))
    assert [r["value"] for r in ordered] == [j * j for j in range(7)]
    assert os.getpid() not in {r["pid"] for r in ordered}  # spawned workers did the work
    unordered = list(run_jobs(_square, list(range(7)), 2))
    assert sorted(r["job"] for r in unordered) == list(range(7))
    assert {r["pid"] for r in run_jobs(_square, [3], 2)} == {os.getpid()}  # one job: no pool


def test_a_dead_worker_is_an_error_not_a_hang():
    with pytest.raises(ChildProcessError, match="a decoding worker died"):
        list(run_jobs(_die_on_two, list(range(6)), 2, ordered=True))
