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


# ---------------------------------------------------- one exit code per kind of outcome (avel.cli.Exit)

HELD_DEMO = (  # `avel demo` whose body writes $READY, then waits (for a SIGINT) or fails (an internal error)
    "import os, pathlib, sys, time\n"
    "import avel.tools.demo as demo\n"
    "def held(*args, **kwargs):\n"
    "    pathlib.Path(os.environ['READY']).touch()\n"
    "    if os.environ.get('FAIL'):\n"
    "        return 1 / 0\n"
    "    time.sleep(600)\n"
    "demo.run_demo = held\n"
    "from avel.cli import app\n"
    "app(sys.argv[1:], prog_name='avel')\n"
)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    """The error line: stdout holds no error text and stderr exactly one line."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_the_exit_codes_are_listed_in_the_help():
    from avel.cli import EXIT_CODES, Exit

    assert [int(c) for c in EXIT_CODES] == [0, 1, 2, 3, 4, 70, 130] == sorted(int(c) for c in Exit)
    shown = subprocess.run(
        [sys.executable, "-m", "avel", "--help"], cwd=ROOT, env={**ENV, "COLUMNS": "200"},
        capture_output=True, text=True, timeout=600,
    ).stdout  # fmt: skip
    assert "error: FILE[:LINE]: what is wrong" in shown
    for code, what in EXIT_CODES.items():
        assert f"{int(code):>3}  {what}" in shown


def test_some_failed_inputs_exit_1_after_writing_the_others(tmp_path):
    import json
    import re

    assert _avel("synth", tmp_path / "set", "--layout", "manifest", "--videos", "4", "--classes", "2",
                 "--frame-size", "32", "--audio-groups", "0").returncode == 0  # fmt: skip
    bad = tmp_path / "set" / "clips" / "clip00001.mp4"
    bad.write_bytes(bad.read_bytes()[:3000])  # truncated: no moov atom
    out = tmp_path / "o.h5"
    proc = _avel("preprocess", tmp_path / "set" / "manifest.csv", out, "--frame-size", "32", "--frames", "2",
                 "--audio-seconds", "1", "--no-progress")  # fmt: skip
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr
    summary = rf"^{re.escape(str(out))}: 3 rows from 3/4 videos \(3 decoded, 0 resumed, [\d.]+ videos/s\); "
    assert re.match(summary + rf"1 failed, see {re.escape(str(out))}\.report\.json$", proc.stdout.strip())
    failed = json.loads(Path(f"{out}.report.json").read_text())["failed"]
    assert [(f["id"], f["reason"]) for f in failed] == [
        ("clip00001", "undecodable video (truncated or not a video)")
    ] and out.is_file()


def test_bad_input_data_exits_2_with_one_line_naming_the_file(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5\n")
    proc = _avel("info", text)
    assert proc.returncode == 2 and proc.stdout == ""
    assert _one_line(proc).startswith(f"error: {text}: not an HDF5 file, or damaged")
    proc = _avel("info", tmp_path / "missing.h5")  # an OSError: FILE: what
    assert proc.returncode == 2 and _one_line(proc) == f"error: {tmp_path / 'missing.h5'}: no such file"


def test_a_bad_config_value_exits_2_naming_file_and_line(features_h5, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('epochs = 2\n\n[pmr]\ncoef = "code"\n')
    proc = _avel("train", features_h5, "-c", config, "--out", tmp_path / "run")
    assert proc.returncode == 2 and proc.stdout == ""
    assert (
        _one_line(proc) == f'error: {config}:4: pmr_coef: "code" is not allowed: must be one of paper, step'
    )
    proc = _avel("train", features_h5, "--optimizer", "lbfgs", "--out", tmp_path / "run")
    assert proc.returncode == 2
    assert _one_line(proc) == 'error: --optimizer: "lbfgs" is not allowed: must be one of sgd, adam, adagrad'
    proc = _avel("train", features_h5, "--set", "lr", "--out", tmp_path / "run")
    assert (
        proc.returncode == 2 and _one_line(proc) == "error: --set lr: expected KEY=VALUE, e.g. --set lr=1e-3"
    )
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_a_bad_value_under_nproc_is_refused_before_torchrun_starts(features_h5, tmp_path):
    proc = _avel("train", features_h5, "--nproc", "2", "--fusion", "film", "--out", tmp_path / "run")
    assert proc.returncode == 2 and proc.stdout == ""  # one line, not one per process and torchrun's report
    fusion = 'fusion (--fusion) for --model avel: "film" is not allowed: must be one of concat, dmrn'
    assert _one_line(proc) == f"error: {fusion}"


def test_a_locked_output_exits_3_naming_the_holder(features_h5, tmp_path):
    from avel.preprocessing.lock import output_lock

    run = tmp_path / "run"
    run.mkdir()
    with output_lock(run, "the test", lock_path=run / "train.lock"):  # a kernel flock, as a second run's
        proc = _avel("train", features_h5, "--model", "avel", "--epochs", "1", "--out", run, "--no-progress")
    assert proc.returncode == 3 and proc.stdout == ""
    assert _one_line(proc).startswith(f"error: {run}: the test (pid {os.getpid()} on host ")
    assert _one_line(proc).endswith("is writing it; wait for it to finish, or give another --out")
    assert not (run / "metrics.jsonl").exists()


def test_a_nonfinite_training_stop_exits_4(features_h5, tmp_path):
    import shutil

    import h5py

    from avel.preprocessing.h5 import read_rows_meta

    data = tmp_path / "data.h5"
    shutil.copy(features_h5, data)
    row = int(read_rows_meta(data).splits["train"][0])
    with h5py.File(data, "a") as f:  # finite, so the file loads, but the loss overflows
        x = f["audio"][row]
        x[0] = 3e38
        f["audio"][row] = x
    proc = _avel("train", data, "--model", "avel", "--epochs", "1", "--batch-size", "8", "--no-progress",
                 "--set", "measures=false", "--out", tmp_path / "run")  # fmt: skip
    assert proc.returncode == 4
    line = _one_line(proc)
    assert line.startswith(f"error: {data}: training stopped at epoch 0, batch ")
    assert str(row) in line.split("file rows ")[1].split(")")[0].split(", ")
    assert "no checkpoint was written" in line


def _held_demo(tmp_path: Path, *args: str, fail: bool = False) -> subprocess.Popen:
    import signal

    env = {**ENV, "READY": str(tmp_path / "ready"), "FAIL": "1" if fail else ""}
    return subprocess.Popen(
        [sys.executable, "-c", HELD_DEMO, *args, "demo", "--workdir", str(tmp_path / "demo")], cwd=ROOT,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal (a shell's
    )  # fmt: skip  # background job, this test's parent perhaps, ignores SIGINT; Python would too)


def test_an_internal_error_exits_70_with_one_line_and_the_traceback_only_with_debug(tmp_path):
    done = _held_demo(tmp_path, fail=True)
    stdout, stderr = done.communicate(timeout=600)
    assert done.returncode == 70 and stdout == ""
    assert stderr.strip() == (
        "error: unexpected ZeroDivisionError: division by zero (rerun with --debug for the traceback, "
        "and please report it)"
    )
    debug = _held_demo(tmp_path, "--debug", fail=True)
    stdout, stderr = debug.communicate(timeout=600)
    assert debug.returncode == 1  # Python's own exit for an uncaught exception: the traceback
    assert stderr.startswith("Traceback (most recent call last):") and "in held" in stderr
    assert stderr.strip().endswith("ZeroDivisionError: division by zero")


def test_an_interrupt_exits_130_with_one_line(tmp_path):
    import signal
    import time

    proc = _held_demo(tmp_path)
    deadline = time.time() + 300
    while not (tmp_path / "ready").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert (tmp_path / "ready").exists() and proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGINT)  # Ctrl-C, inside the command
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130 and stdout == ""
    assert stderr.strip() == "error: interrupted"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("ValueError('x.h5: empty split')", 2),
        ("FileNotFoundError(2, 'No such file or directory', 'x.h5')", 2),
        ("KeyError('audio')", 2),
        ("OutputLocked('x.h5: another run is writing it')", 3),
        ("NonFiniteError(0, torch.tensor([3]), 'the loss is nan')", 4),
        ("ZeroDivisionError('division by zero')", 70),
        ("RuntimeError('a bug')", 70),
        ("KeyboardInterrupt()", 130),
    ],
)
def test_every_error_kind_maps_to_its_code_in_one_place(error, code):
    import torch  # noqa: F401 - used by the NonFiniteError case

    from avel.cli import exit_code
    from avel.engine.train import NonFiniteError  # noqa: F401
    from avel.preprocessing.lock import OutputLocked  # noqa: F401

    got, line = exit_code(eval(error))
    assert int(got) == code and "\n" not in line
