"""Faults in long work (issue #24): a training run killed inside its checkpoint write resumes from the
previous checkpoint, and a grid killed with SIGKILL at three random points, resumed each time, ends with
the table and the runs of an uninterrupted grid (timings aside). Real processes, real kills."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from avel.engine.checkpoint import PAUSE_ENV, load_checkpoint

# The full suite only: processes, grids, kills and CLI round trips (the fast tier: -m 'not slow').
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # one thread: the same sums each run
TIMING = {"time_s", "train_time_s", "prototype_time_s", "samples_per_s"}


def _avel(*args, cwd: Path, env: dict | None = None, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "avel", *map(str, args)]
    return subprocess.Popen(
        cmd, cwd=cwd, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw
    )


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err.decode()[-3000:]
    return out.decode()


def _metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines]


def _results(run: Path) -> dict:
    res = json.loads((run / "results.json").read_text())
    return {k: v for k, v in res.items() if k not in ("provenance", "measures")}  # measures: timings


def test_a_run_killed_inside_its_checkpoint_write_resumes_from_the_previous_one(features_h5, tmp_path):
    train = ("train", features_h5, "--model", "avel", "--batch-size", "8", "--epochs", "3", "--out", "run",
             "--device", "cpu", "--no-progress", "--set", "measures=false")  # fmt: skip
    (tmp_path / "ref").mkdir()
    (tmp_path / "killed").mkdir()
    _finish(_avel(*train, cwd=tmp_path / "ref"))

    run = tmp_path / "killed" / "run"
    proc = _avel(*train, cwd=run.parent, env={**ENV, PAUSE_ENV: "last.pt:1"})
    line = proc.stderr.readline().decode()  # blocks until the write of epoch 1's last.pt is half done
    assert line.strip() == "paused writing run/last.pt.tmp", line + proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with pytest.raises(Exception):  # noqa: B017 - the half-written file is not a checkpoint
        torch.load(run / "last.pt.tmp", weights_only=False)
    assert load_checkpoint(run / "last.pt")["epoch"] == 0  # the previous checkpoint, whole

    out = _finish(_avel(*train, cwd=run.parent))
    assert out.splitlines()[0] == "resuming run at epoch 1"
    ref = tmp_path / "ref" / "run"
    assert _metrics(run) == _metrics(ref)
    assert _results(run) == _results(ref)


def _epoch_lines(grid: Path) -> int:
    return sum(
        len([ln for ln in p.read_text().splitlines() if ln.endswith("}")])
        for p in grid.glob("*/seed*/metrics.jsonl")
    )


@pytest.mark.slow
def test_a_grid_killed_three_times_ends_with_the_uninterrupted_table(features_h5, tmp_path):
    grid = ("ablate", "optimizers", "grid", "--data", features_h5, "--model", "avel", "--seeds", "2",
            "--row", "SGD", "--set", "epochs=2", "--set", "batch_size=8", "--set", "device=cpu",
            "--set", "progress=false", "--set", "measures=false")  # fmt: skip
    total = 2 * 2 * 2  # cells x seeds x epochs: epoch lines of the whole grid
    (tmp_path / "ref").mkdir()
    (tmp_path / "killed").mkdir()
    _finish(_avel(*grid, cwd=tmp_path / "ref"))
    ref, out = tmp_path / "ref" / "grid", tmp_path / "killed" / "grid"
    assert _epoch_lines(ref) == total

    rng = random.Random(24)
    points = sorted(rng.sample(range(total), 3))  # kill once this many epochs are done, + a random delay
    for done in points:
        proc = _avel(*grid, cwd=out.parent)
        while _epoch_lines(out) < done and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.5))
        assert proc.poll() is None, f"the grid finished before the kill at {done} epochs"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    _finish(_avel(*grid, cwd=out.parent))

    assert (out / "table.md").read_text() == (ref / "table.md").read_text()
    assert (out / "table.csv").read_text() == (ref / "table.csv").read_text()
    runs = sorted(p.relative_to(ref) for p in ref.glob("*/seed*"))
    assert len(runs) == 4 and runs == sorted(p.relative_to(out) for p in out.glob("*/seed*"))
    for run in runs:
        assert _metrics(out / run) == _metrics(ref / run), run
        assert _results(out / run) == _results(ref / run), run
