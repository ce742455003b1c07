"""Reproducibility: saved configs are valid TOML that re-run their run, the same seed gives the same numbers
in fresh processes, every results.json names its commit and machine, a grid's data may follow the seed."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avel.balance import build_balancer
from avel.cli import app
from avel.engine import config as config_mod
from avel.engine.config import UNSET, TrainConfig, balancer_options, load_config
from avel.engine.provenance import describe
from avel.experiments.ablate import run_grid, tabulate

# The full suite only: processes, grids, kills and CLI round trips (the fast tier: -m 'not slow').
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TIMING = {"time_s", "train_time_s", "prototype_time_s", "samples_per_s"}
SHORT = ["--model", "avel", "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--no-progress"]


def _metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_no_config_default_is_none():
    # TOML has no null: a field that may be "unset" uses a typed sentinel (UNSET = -1 for integers)
    none = [f.name for f in dataclasses.fields(TrainConfig) if getattr(TrainConfig(), f.name) is None]
    assert none == []


def test_saved_config_is_valid_toml_with_every_key_and_round_trips(tmp_path):
    cfg = load_config(None, {"data": 'a "quoted" path.h5', "balance": "ogm", "ogm_warmup": "3",
                             "betas": "0.9,0.99", "lr": 1e-7, "pmr_subset": "val", "amp": True})  # fmt: skip
    config_mod.save_config(cfg, tmp_path / "config.toml")
    table = tomllib.loads((tmp_path / "config.toml").read_text())
    flat = {
        f"{k}_{o}" if isinstance(v, dict) else k
        for k, v in table.items()
        for o in (v if isinstance(v, dict) else [0])
    }
    assert sorted(flat) == sorted(config_mod.field_names())  # every value written, none left to a default
    assert load_config(tmp_path / "config.toml") == cfg
    assert json.loads((tmp_path / "config.json").read_text()) == config_mod.to_dict(cfg)  # flat keys
    assert "\n[pmr]\n" in (tmp_path / "config.toml").read_text()  # each balancer's options: its own table


def test_unset_warmup_is_written_and_means_the_methods_own():
    cfg = load_config(None, {"balance": "ogm"})
    assert cfg.balancers["ogm"].warmup == UNSET and "\n[ogm]\n" in config_mod.to_toml(cfg)
    assert "warmup = -1\n" in config_mod.to_toml(cfg).split("[ogm]")[1]
    assert build_balancer("ogm", **balancer_options(cfg)).warmup == 6  # the method's own
    assert build_balancer("ogm-ge", **balancer_options(cfg)).warmup == 0
    assert (
        build_balancer(
            "ogm", **balancer_options(load_config(None, {"balance": "ogm", "ogm_warmup": 0}))
        ).warmup
        == 0
    )


def test_a_run_reruns_from_its_own_config(features_h5, tmp_path):
    runner = CliRunner()
    first = tmp_path / "first"
    args = ["train", str(features_h5), "--balance", "pmr", "--out", str(first), *SHORT]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert tomllib.loads((first / "config.toml").read_text())["out"] == str(first)
    again = tmp_path / "again"
    result = runner.invoke(app, ["train", "-c", str(first / "config.toml"), "--out", str(again)])
    assert result.exit_code == 0, result.output
    assert _metrics(again) == _metrics(first)
    a, b = (json.loads((d / "results.json").read_text()) for d in (first, again))
    assert a["test_accuracy"] == b["test_accuracy"]
    assert {**a["config"], "out": ""} == {**b["config"], "out": ""}


def test_same_seed_same_numbers_in_fresh_processes_with_one_thread(features_h5, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for name in ("a", "b"):
        cmd = [sys.executable, "-c", "from avel.cli import app; app()", "train", str(features_h5),
               "--fusion", "dmrn", "--out", str(tmp_path / name), *SHORT]  # fmt: skip
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    prov = json.loads((tmp_path / "a" / "results.json").read_text())["provenance"]
    assert prov["machine"]["torch_threads"] == 1


def test_a_frozen_archive_names_the_commit_of_its_commit_file(tmp_path):
    from avel.engine.provenance import code_version

    assert code_version(tmp_path) == {"commit": "unknown", "dirty": None}  # no git, no COMMIT file
    (tmp_path / "COMMIT").write_text(
        "d426301a60e7c6aec9b3412608365036f0afb56e\n"
    )  # as the grid scripts write
    assert code_version(tmp_path) == {"commit": "d426301a60e7c6aec9b3412608365036f0afb56e", "dirty": None}


def test_results_name_their_commit_and_machine(features_h5, tmp_path):
    from avel.engine.train import run_training

    cfg = load_config(None, {"data": str(features_h5), "epochs": 1, "device": "cpu", "progress": False,
                             "out": str(tmp_path / "r"), "model": "avel"})  # fmt: skip
    prov = run_training(cfg, log=lambda s: None)["provenance"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    assert prov["code"]["commit"] == head.stdout.strip()
    assert isinstance(prov["code"]["dirty"], bool)
    mach = prov["machine"]
    assert mach["device"] == "cpu" and mach["cores"] == os.cpu_count() and mach["torch"]
    assert mach["cpu"] and mach["torch_threads"] >= 1
    line = describe(prov)
    assert line.startswith(f"commit {head.stdout.strip()[:7]}") and f"{mach['cores']} cores" in line


def test_a_grid_whose_data_follows_the_seed(features_h5, tmp_path):
    # one features file per seed (as `pmr_effect.py --features` makes them): "{seed}" in the data path
    for seed in (0, 1):
        (tmp_path / f"f-s{seed}.h5").write_bytes(features_h5.read_bytes())
    overrides = {"data": str(tmp_path / "f-s{seed}.h5"), "epochs": 1, "batch_size": 8, "device": "cpu"}
    out = tmp_path / "grid"
    run_grid("subset", out, seeds=2, model="avel", overrides=overrides, rows=["baseline"], log=lambda s: None)
    runs = [
        json.loads((out / "baseline__accuracy" / f"seed{s}" / "results.json").read_text()) for s in (0, 1)
    ]
    assert [r["config"]["data"] for r in runs] == [str(tmp_path / f"f-s{s}.h5") for s in (0, 1)]
    assert f"Produced on {describe(runs[0]['provenance'])}." in tabulate(out).markdown()


@pytest.mark.parametrize("prov", [{}, {"code": {"commit": "abcdef0123", "dirty": True}}])
def test_describe_unrecorded_and_dirty(prov):
    text = describe(prov)
    assert ("unrecorded" in text) if not prov else text.startswith("commit abcdef0 (+ uncommitted changes)")


def test_verify_cell_reruns_a_recorded_seed_and_compares(features_h5, tmp_path):
    from avel.experiments.reproduce import compare_cell, parse_recorded, verify_cell

    out = tmp_path / "grid"
    overrides = {"data": str(features_h5), "epochs": 1, "batch_size": 8, "device": "cpu"}
    run_grid("subset", out, seeds=2, model="avel", overrides=overrides, rows=["baseline"], log=lambda s: None)
    verdict = verify_cell(out, "baseline", "accuracy", 1, tmp_path / "again", log=lambda s: None)
    recorded = [
        json.loads((out / "baseline__accuracy" / f"seed{s}" / "results.json").read_text()) for s in (0, 1)
    ]
    assert verdict.new == [recorded[1]["test_accuracy"]]  # same machine, same threads: identical
    assert verdict.holds and "HOLDS" in verdict.text()
    assert "is identical to the recorded seed 1" in verdict.text()
    assert parse_recorded("66.8 ± 3.3") == pytest.approx((0.668, 0.033))
    far = compare_cell(out, "baseline", "accuracy", (recorded[0]["test_accuracy"] + 0.5, 0.01))
    assert not far.holds and far.text().endswith("STALE: outside recorded mean ± 2 std")
    with pytest.raises(ValueError, match="MEAN ± STD"):
        parse_recorded("66.8")
