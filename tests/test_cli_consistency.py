"""What a user notices across commands (issue #24): usage errors are the one-line ``error:`` form with exit 2,
every long-running command takes ``--progress/--no-progress``, and logs written to a pipe or a file carry
no blank lines between epoch lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from avel.cli import app

# The full suite only: processes, grids, kills and CLI round trips (the fast tier: -m 'not slow').
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
# the commands that run for minutes: decoding, training, grids of runs, the demos, labelling videos
LONG_RUNNING = ("preprocess", "train", "predict", "demo", "demo-cgmnist", "ablate optimizers",
                "ablate fusions", "ablate subset", "ablate balancers", "ablate intermediate")  # fmt: skip


def _avel(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "avel", *map(str, args)], cwd=ROOT, env=ENV, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip


@pytest.mark.parametrize(
    "args,line",
    [
        (("train", "--foo"), "error: avel train: no such option: --foo"),
        (
            ("evaluate", "run/best.pt"),
            "error: avel evaluate: missing argument 'data'; `avel evaluate --help`",
        ),
        (("ablate", "fusions"), "error: avel ablate fusions: missing argument 'out_dir'"),
        (("train", "--epochs", "x"), "error: avel train: invalid value for '--epochs': "),
        (("nope",), "error: avel: no such command 'nope'; `avel --help` lists the commands"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(args, line):
    proc = _avel(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(line), proc.stderr


def test_help_and_no_arguments_still_show_the_help():
    assert "Usage: avel [OPTIONS] COMMAND" in _avel().stdout
    done = _avel("info", "--help")
    assert done.returncode == 0 and "--verify" in done.stdout


def test_every_long_running_command_takes_progress_and_no_progress():
    root = typer.main.get_command(app)
    for name in LONG_RUNNING:
        command = root
        for part in name.split():
            command = command.commands[part]
        options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        assert {"--progress", "--no-progress"} <= options, name


def test_epoch_lines_into_a_pipe_have_no_blank_lines_between_them(features_h5, tmp_path):
    proc = _avel("train", features_h5, "--model", "avel", "--epochs", "3", "--device", "cpu", "--progress",
                 "--set", "measures=false",
                 "--out", tmp_path / "run")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "" not in lines, proc.stdout
    assert [ln.split("|")[0].strip() for ln in lines[:3]] == ["epoch   0", "epoch   1", "epoch   2"]


def test_ablate_takes_progress_without_making_it_part_of_the_grid(features_h5, tmp_path):
    args = ("ablate", "subset", tmp_path / "grid", "--data", features_h5, "--model", "avel", "--seeds", "1",
            "--row", "baseline", "--set", "epochs=1", "--set", "batch_size=8",
            "--set", "device=cpu", "--set", "measures=false")  # fmt: skip
    runner = CliRunner()
    first = runner.invoke(app, [str(a) for a in (*args, "--no-progress")])
    assert first.exit_code == 0, first.output
    log = first.output.splitlines()  # the run's log, then the table: no blank line inside the log
    assert [ln.split(" ")[0] for ln in log[:3]] == ["[1/1]", "epoch", "test"], first.output
    again = runner.invoke(app, [str(a) for a in (*args, "--progress")])
    assert again.exit_code == 0, again.output  # the same grid: nothing to train, no "different grid"
    assert "[1/1]" not in again.output
