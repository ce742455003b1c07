"""Non-finite values are refused or reported, never trained on silently (issue #24): what preprocess,
import-features and cgmnist write, what ``info --verify`` reads, what ``train`` loads and computes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from test_import_features import make_release
from typer.testing import CliRunner

from avel.cli import app
from avel.engine.train import FiniteWatch, NonFiniteError
from avel.preprocessing.h5 import read_rows_meta, verify, write_features_file
from avel.synth.cgmnist import colorize

runner = CliRunner()


def invoke(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def _set_row(path: Path, dataset: str, row: int, value: float, at: tuple[int, ...] = (0, 0)) -> None:
    """One value of one row, written through h5py (the row's fletcher32 checksum stays valid)."""
    with h5py.File(path, "a") as f:
        x = f[dataset][row]
        x[at] = value
        f[dataset][row] = x


def test_preprocess_leaves_out_a_clip_whose_audio_holds_nan_and_names_it(tmp_path):
    import scipy.io.wavfile as wavfile

    data = tmp_path / "cd"
    code, text = invoke(
        "synth", data, "--layout", "crema-d", "--videos", "12", "--seed", "1", "--frame-size", "32"
    )
    assert code == 0, text
    wav = sorted((data / "AudioWAV").glob("*.wav"))[3]
    rate, x = wavfile.read(wav)
    y = (x / 32768).astype(np.float32)  # a float WAV, as recorders write them, with 10 NaN samples
    y[8000:8010] = np.nan
    wavfile.write(wav, rate, y)

    out = tmp_path / "cd.h5"
    code, text = invoke("preprocess", data, out, "--frame-size", "32", "--no-progress")
    assert code == 1, text  # some videos failed
    assert "11 rows from 11/12 videos" in text
    report = (tmp_path / "cd.h5.report.json").read_text()
    assert wav.stem in report and "the audio holds 10 NaN / Inf sample(s), the first at 0.500 s" in report
    with h5py.File(out, "r") as f:
        assert len(f["clip_id"]) == 11 and wav.stem not in f["clip_id"].asstr()[()].tolist()
    _, damaged, nonfinite = verify(out)
    assert damaged == {} and nonfinite == {}


def test_import_features_refuses_nan_and_inf_rows_and_writes_nothing(tmp_path):
    release = tmp_path / "release"
    release.mkdir()
    make_release(release)
    _set_row(release / "audio_feature.h5", "avadataset", 2, np.nan)
    _set_row(release / "visual_feature.h5", "avadataset", 4, np.inf, (3, 1, 1, 7))
    out = tmp_path / "features.h5"
    code, text = invoke("import-features", release, out)
    assert code == 2
    assert text.strip() == (
        f"error: {out}: NaN or Inf values in audio row 2 (c---zaDCTaE); visual row 4 (b3); nothing written"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release"]  # no file, no .tmp, no lock


def test_a_finite_value_that_overflows_float16_is_refused(features_h5, tmp_path):
    meta = read_rows_meta(features_h5)
    with h5py.File(features_h5, "r") as f:
        audio, visual = f["audio"][()], f["visual"][()]
    audio[5, 0, 0] = 1e6  # finite in float32, inf in float16
    with pytest.raises(ValueError, match=r"NaN or Inf values in audio row 5 \(vid0005\); nothing written"):
        write_features_file(tmp_path / "half.h5", meta, audio, visual, {}, dtype="float16")
    assert not (tmp_path / "half.h5").exists()


def test_verify_and_train_name_the_nonfinite_rows_of_an_existing_file(features_h5, tmp_path):
    bad = tmp_path / "bad.h5"
    shutil.copy(features_h5, bad)
    _set_row(bad, "audio", 7, np.nan)
    _set_row(bad, "visual", 9, -np.inf, (0, 0, 0, 0))

    code, text = invoke("info", "--verify", bad)
    assert code == 2
    assert text.strip() == (
        f"error: {bad}: NaN or Inf values in audio row 7; visual row 9; training refuses them: "
        "write the file again"
    )
    code, text = invoke(
        "train",
        bad,
        "--model",
        "avel",
        "--epochs",
        "1",
        "--out",
        tmp_path / "run",
        "--no-progress",
        "--set",
        "measures=false",
    )
    assert code == 2
    assert text.strip().startswith(f"error: {bad}: NaN or Inf values in audio row 7")
    assert not (tmp_path / "run").exists()  # refused before anything is written

    code, text = invoke("info", "--verify", features_h5)
    assert code == 0 and "every value finite" in text


def test_train_stops_at_a_nonfinite_loss_and_keeps_the_last_good_checkpoint(features_h5, tmp_path):
    data, run = tmp_path / "data.h5", tmp_path / "run"
    shutil.copy(features_h5, data)
    args = ("train", data, "--model", "avel", "--batch-size", "8", "--out", run, "--no-progress",
            "--set", "measures=false")  # fmt: skip
    code, text = invoke(*args, "--epochs", "2")
    assert code == 0, text
    last, best = (run / "last.pt").read_bytes(), (run / "best.pt").read_bytes()
    lines = (run / "metrics.jsonl").read_text()

    row = int(read_rows_meta(data).splits["train"][0])
    _set_row(data, "audio", row, 3e38, (0,))  # finite, so the file loads, but the loss overflows
    code, text = invoke(*args, "--epochs", "4")
    assert code == 4  # Exit.NON_FINITE
    out = text.strip().splitlines()
    assert out[0] == f"resuming {run} at epoch 2"
    assert len(out) == 2 and out[1].startswith(f"error: {data}: training stopped at epoch 2, batch ")
    assert f"{row}" in out[1].split("file rows ")[1].split(")")[0].split(", ")
    assert f"the loss is nan; {run / 'last.pt'} keeps epoch 1" in out[1]
    assert (run / "last.pt").read_bytes() == last and (run / "best.pt").read_bytes() == best
    assert (run / "metrics.jsonl").read_text() == lines  # no epoch line of the stopped epoch
    stop = json.loads((run / "stopped.json").read_text())
    assert stop["epoch"] == 2 and stop["message"] == out[1].removeprefix("error: ")

    _set_row(data, "audio", row, 0.5, (0,))  # the data mended: the run resumes, finishes, the record goes
    code, text = invoke(*args, "--epochs", "4")
    assert code == 0, text
    assert (run / "results.json").is_file() and not (run / "stopped.json").exists()


def test_a_nonfinite_first_epoch_writes_no_checkpoint(features_h5, tmp_path):
    data, run = tmp_path / "data.h5", tmp_path / "run"
    shutil.copy(features_h5, data)
    _set_row(data, "audio", int(read_rows_meta(data).splits["train"][2]), 3e38, (0,))
    code, text = invoke("train", data, "--model", "avel", "--epochs", "2", "--out", run, "--no-progress",
                        "--set", "measures=false")  # fmt: skip
    assert code == 4 and "training stopped at epoch 0, batch 0" in text
    assert "no checkpoint was written" in text
    assert not (run / "last.pt").exists() and not (run / "best.pt").exists()


def test_the_device_watch_reports_the_first_bad_step_without_a_sync_per_step():
    """The accelerator path (no read per step) on CPU: the flag accumulates, ``check`` names step 1."""

    class Split:
        device = torch.device("cpu")
        rows = torch.arange(100, 200)

    watch = FiniteWatch(Split())
    watch.eager = False
    one = torch.tensor(1.0)
    watch.step(one, one, torch.tensor([0, 1]), 0)
    watch.step(one, torch.tensor(float("inf")), torch.tensor([5, 6]), 1)  # finite loss, a gradient is not
    watch.step(torch.tensor(float("nan")), one, torch.tensor([9]), 2)
    with pytest.raises(NonFiniteError, match=r"^batch 1 \(file rows 105, 106\): a gradient is not finite$"):
        watch.check()


def test_cgmnist_refuses_a_colour_variance_that_gives_nan(tmp_path):
    out = tmp_path / "cg.h5"
    code, text = invoke("cgmnist", out, "--train", "20", "--test", "10", "--color-var", "nan")
    assert code == 2
    assert text.strip().splitlines()[-1] == "error: colour variance must be a finite number >= 0, got nan"
    assert not out.exists()
    gray = np.full((3, 28, 28), 200, np.uint8)
    with pytest.raises(ValueError, match=r"colouring gave NaN or Inf in rows 0-2 \(colour variance nan\)"):
        colorize(gray, np.array([0, 1, 2]), np.nan, np.random.default_rng(0))


def test_a_grid_reports_a_run_stopped_at_a_nonfinite_loss_and_goes_on(features_h5, tmp_path):
    import csv
    import io

    from avel.experiments.ablate import list_grid, run_grid

    data, out = tmp_path / "data.h5", tmp_path / "grid"
    shutil.copy(features_h5, data)
    _set_row(data, "audio", int(read_rows_meta(data).splits["train"][2]), 3e38, (0,))
    logs: list[str] = []
    overrides = {"data": str(data), "epochs": 1, "batch_size": 8, "width": 8, "progress": False}
    table = run_grid("optimizers", out, seeds=1, model="avel", overrides=overrides, rows=["SGD", "Adam"],
                     columns=["baseline"], log=logs.append)  # fmt: skip
    assert sum(m.startswith("stopped: ") for m in logs) == 2  # the first stop did not end the grid
    stop = json.loads((out / "adam__baseline" / "seed0" / "stopped.json").read_text())
    assert stop["epoch"] == 0 and f"training stopped at epoch 0, batch {stop['step']} " in stop["message"]
    assert "stopped (non-finite loss, training stopped: seed0 at epoch 0)" in table.markdown()
    row = next(r for r in csv.DictReader(io.StringIO(table.csv())) if r["row"] == "Adam")
    assert row["stopped"] == "seed0 at epoch 0" and row["mean"] == "" and row["done"] == "0"
    assert "stopped (non-finite loss at epoch 0)" in list_grid(out)

    logs.clear()  # a re-run reports the stopped runs instead of training them again
    run_grid("optimizers", out, seeds=1, model="avel", overrides=overrides, rows=["SGD", "Adam"],
             columns=["baseline"], log=logs.append)  # fmt: skip
    assert not any(m.startswith("[") for m in logs)
    assert sum(m.startswith("stopped earlier (delete its stopped.json") for m in logs) == 2
