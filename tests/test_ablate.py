"""Experiment grids: cells and n/a reasons, tables from results.json files, a tiny grid trained for real
on CPU, resuming without re-training, dry runs that train nothing."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
from pathlib import Path

import pytest

from avel.engine.config import load_config
from avel.engine.train import run_training
from avel.experiments import ablate
from avel.experiments.ablate import Cell, build_grid, format_mean_std, list_grid, run_grid, tabulate
from avel.preprocessing.lock import OutputLocked, output_lock

# The full suite only: processes, grids, kills and CLI round trips (the fast tier: -m 'not slow').
pytestmark = pytest.mark.slow

QUIET = lambda s: None  # noqa: E731
TINY = {"epochs": 1, "batch_size": 8, "width": 8, "device": "cpu", "progress": False}


# ------------------------------------------------------------------------------- tables from hand-made runs


def _grid_dir(tmp_path: Path, cells: list[Cell], seeds: int, kind: str = "optimizers") -> Path:
    """A grid directory as run_grid writes it, without training (grid.json only)."""
    out = tmp_path / "grid"
    out.mkdir()
    record = ablate._grid_record(kind, out, None, seeds, "resnet18", {"epochs": 1}, cells)
    (out / "grid.json").write_text(json.dumps(record))
    return out


def _finish(out: Path, cell: str, seed: int, acc: float) -> None:
    run = out / cell / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"test_accuracy": acc, "val_accuracy": acc}))


def _hand_cells() -> list[Cell]:
    return [
        Cell("SGD", "baseline", {"optimizer": "sgd", "balance": "none"}),
        Cell("SGD", "PMR", {"optimizer": "sgd", "balance": "pmr"}),
        Cell("audio only", "baseline", {"modality": "audio", "balance": "none"}),
        Cell("audio only", "PMR", {"modality": "audio", "balance": "pmr"}, na_reason="needs both modalities"),
    ]


def test_mean_std_is_the_sample_std_in_percent():
    # mean 0.67; deviations -0.02, -0.01, 0.03 -> sum of squares 14e-4 / (3 - 1) = 7e-4 -> std 0.026458
    assert format_mean_std([0.65, 0.66, 0.70]) == "67.0 ± 2.6"
    assert format_mean_std([0.6543]) == "65.4 ± 0.0"


def test_tabulate_hand_made_results(tmp_path):
    out = _grid_dir(tmp_path, _hand_cells(), seeds=3)
    for seed, acc in enumerate([0.65, 0.66, 0.70]):
        _finish(out, "sgd__baseline", seed, acc)
    _finish(out, "sgd__pmr", 0, 0.7)  # 1 of 3 seeds done
    (out / "sgd__pmr" / "seed1").mkdir()  # started, no epoch finished: not counted
    table = tabulate(out)
    assert table.columns == ["baseline", "PMR"]
    assert [label for label, _ in table.rows] == ["SGD", "audio only"]
    assert table.cell("SGD", "baseline").text() == "67.0 ± 2.6"
    assert table.cell("SGD", "PMR").accuracies == [0.7]
    assert table.cell("audio only", "baseline").text() == "—"
    assert table.cell("audio only", "PMR").text() == "n/a"

    md = table.markdown()
    assert "| | baseline | PMR |" in md
    assert (
        "| SGD | 67.0 ± 2.6 ([seed0](sgd__baseline/seed0) [seed1](sgd__baseline/seed1) "
        "[seed2](sgd__baseline/seed2)) (paper 65.4) "
        "| 70.0 ± 0.0 (1/3: [seed0](sgd__pmr/seed0)) (paper 67.1) |"
    ) in md
    assert "| audio only | — | n/a[^1] |" in md
    assert "[^1]: needs both modalities" in md
    assert "avel ablate optimizers" in md and "--seeds 3" in md  # the header says how it was made

    rows = list(csv.DictReader(io.StringIO(table.csv())))
    assert [(r["row"], r["column"]) for r in rows] == [
        ("SGD", "baseline"),
        ("SGD", "PMR"),
        ("audio only", "baseline"),
        ("audio only", "PMR"),
    ]
    assert rows[0]["mean"] == "67.00" and rows[0]["std"] == "2.65" and rows[0]["done"] == "3"
    assert rows[0]["accuracies"] == "65.00;66.00;70.00" and rows[0]["published"] == "65.4"
    assert rows[3]["na_reason"] == "needs both modalities"


def test_measures_table_by_hand_with_balance_benchmarks_crema_d_numbers(tmp_path):
    cells = [
        Cell("MMPareto", "concat", {"balance": "mmpareto"}),
        Cell("MMPareto", "FiLM", {"balance": "mmpareto"}),
    ]
    out = _grid_dir(tmp_path, cells, seeds=2, kind="balancers")
    grid = json.loads((out / "grid.json").read_text())
    (out / "grid.json").write_text(json.dumps({**grid, "dataset": "crema-d"}))
    for seed, (acc, f1, deg) in enumerate([(0.6, 0.5, 0.2), (0.8, 0.7, 0.4)]):
        _finish(out, "mmpareto__concat", seed, acc)
        res = out / "mmpareto__concat" / f"seed{seed}" / "results.json"
        m = {"accuracy": acc, "macro_f1": f1, "imbalance_degree": deg, "epoch_time_s": 2.0 + seed}
        res.write_text(json.dumps({**json.loads(res.read_text()), "measures": {**m, "extra_parameters": 10}}))
    table = tabulate(out)
    assert table.cell("MMPareto", "concat").measure("macro_f1") == pytest.approx(0.6)  # mean over seeds
    md = table.markdown()
    assert "| MMPareto | concat | 70.0 | 60.0 | 30.0 | — | — | 2.50 | — | 10 | 80.0 / 80.6 |" in md
    assert "| MMPareto | FiLM |" not in md  # no finished seed: no measures
    row = next(r for r in csv.DictReader(io.StringIO(table.csv())) if r["column"] == "concat")
    assert float(row["imbalance_degree"]) == pytest.approx(0.3) and row["extra_parameters"] == "10"


def test_published_values_appear_beside_the_cells(tmp_path):
    out = _grid_dir(tmp_path, _hand_cells(), seeds=1)
    _finish(out, "sgd__pmr", 0, 0.5)
    table = tabulate(out)
    assert table.cell("SGD", "PMR").published == 67.1  # PMR Table 6, AVE
    assert "50.0 ± 0.0 ([seed0](sgd__pmr/seed0)) (paper 67.1)" in table.markdown()


def test_list_grid_states(tmp_path):
    out = _grid_dir(tmp_path, _hand_cells(), seeds=2)
    _finish(out, "sgd__baseline", 0, 0.625)
    partial = out / "sgd__baseline" / "seed1"
    partial.mkdir()
    (partial / "metrics.jsonl").write_text('{"epoch": 0}\n{"epoch": 1}\n')
    (partial / "config.json").write_text(json.dumps({"epochs": 5}))
    text = list_grid(out)
    assert "sgd__baseline/seed0  done (test 62.5%)" in text
    assert "sgd__baseline/seed1  partial (epoch 2 of 5)" in text
    assert "sgd__pmr/seed0  not started" in text
    assert "audio only / PMR" in text and "n/a: needs both modalities" in text
    assert text.splitlines()[-1] == "done: 1, partial: 1, not started: 4, n/a: 1"


def test_not_a_grid_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a grid directory"):
        tabulate(tmp_path)


# ----------------------------------------------------------------------- grids (need models, balancers)


@pytest.mark.parametrize("model", ["resnet18", "avel"])
def test_grid_shapes(model):
    fusions = {"resnet18": ["concat", "sum", "FiLM", "gated"], "avel": ["concat", "DMRN"]}[model]
    opt = build_grid("optimizers", model)
    assert [(c.row, c.column) for c in opt][:2] == [("SGD", "baseline"), ("SGD", "PMR")]
    assert len(opt) == 6 and not any(c.na_reason for c in opt)
    fus = build_grid("fusions", model)
    assert list(dict.fromkeys(c.row for c in fus)) == [*fusions, "audio only", "visual only"]
    assert [c.row for c in fus if c.na_reason] == ["audio only", "visual only"]
    sub = build_grid("subset", model)
    assert [c.row for c in sub] == ["baseline", "PMR, 1%", "PMR, 5%", "PMR, 10%", "PMR, 50%", "PMR, 100%"]
    assert [c.overrides.get("pmr_subset") for c in sub] == [None, "0.01", "0.05", "0.1", "0.5", "1.0"]
    bal = build_grid("balancers", model)
    rows = [
        "naive",
        "dropout",
        "Gradient-Blending",
        "OGM-GE",
        "OPM",
        "IPRM",
        "PMR w/o PER",
        "PMR",
        "MMCosine",
    ]
    rows += ["audio only", "visual only", "UMT", "UME", "MBSD", "CML", "MMPareto", "LFM"]
    rows += ["AGM", "AMCo", "MLA", "ReLearning", "valuation", "ReconBoost"]  # BalanceBenchmark, part 2
    assert list(dict.fromkeys(c.row for c in bal)) == rows
    umt = next(c for c in bal if c.row == "UMT")  # teachers: the grid's uni-modal runs of the same seed
    assert umt.overrides["umt_teacher_audio"] == "{grid}/audio-only__concat/seed{seed}/best.pt"
    second = "FiLM" if model == "resnet18" else "DMRN"
    assert list(dict.fromkeys(c.column for c in bal)) == ["concat", second]
    na = {(c.row, c.column) for c in bal if c.na_reason}
    assert ("OGM-GE", "concat") not in na and ("PMR", "concat") not in na
    assert ("OGM-GE", second) in na  # no split logits
    assert next(c for c in bal if c.row == "PMR w/o PER").overrides["pmr_mu"] == 0.0
    assert not {c.column for c in bal if c.row == "Gradient-Blending" and c.na_reason}  # both fusions
    inter = build_grid("intermediate", model)
    assert [(c.row, c.column) for c in inter] == [
        ("MMTM", "naive"), ("MMTM", "PMR"), ("MMTM", "Greedy"),
        ("CentralNet", "naive"), ("CentralNet", "PMR"), ("CentralNet", "Greedy"),
    ]  # fmt: skip
    assert all(c.na_reason for c in inter[:2]) == (model == "avel")
    if model != "avel":
        assert inter[5].na_reason.startswith("greedy re-balances through MMTM's cross-modal gates")
    assert [c.overrides["fusion"] for c in inter] == ["mmtm"] * 3 + ["centralnet"] * 3


def test_unknown_grid_lists_the_valid_ones():
    with pytest.raises(
        ValueError, match=r'grid: "optimiser" is not allowed: must be one of optimizers, fusions'
    ):
        build_grid("optimiser")


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.glob("*/seed*/results.json"))}


def test_tiny_avel_grid_runs_resumes_and_tabulates(features_h5, tmp_path):
    out = tmp_path / "t6"
    overrides = {"data": str(features_h5), **TINY}
    logs: list[str] = []
    table = run_grid("optimizers", out, seeds=2, model="avel", overrides=overrides, log=logs.append)
    assert sum(m.startswith("[") for m in logs) == 12  # 6 cells × 2 seeds trained
    assert len(_mtimes(out)) == 12
    assert [label for label, _ in table.rows] == ["SGD", "AdaGrad", "Adam"]
    assert table.columns == ["baseline", "PMR"]
    cell = table.cell("Adam", "PMR")
    runs = [json.loads((out / "adam__pmr" / f"seed{s}" / "results.json").read_text()) for s in (0, 1)]
    assert cell.accuracies == [r["test_accuracy"] for r in runs]
    assert [r["config"]["seed"] for r in runs] == [0, 1]
    assert runs[0]["config"]["optimizer"] == "adam" and runs[0]["config"]["balance"] == "pmr"
    assert (out / "table.md").read_text() == table.markdown() and (out / "table.csv").is_file()
    assert tabulate(out).markdown() == table.markdown()
    assert "done: 12" in list_grid(out)

    before = _mtimes(out)
    logs.clear()
    run_grid("optimizers", out, seeds=2, model="avel", overrides=overrides, log=logs.append)
    assert not any(m.startswith("[") for m in logs)  # nothing re-trained
    assert _mtimes(out) == before

    with pytest.raises(ValueError, match=r"holds a different grid \(overrides: "):
        run_grid("optimizers", out, seeds=2, model="avel", overrides={**overrides, "lr": 0.1}, log=QUIET)
    # an option a run may resume with (it does not change what is computed) is the same grid
    resumable = {**overrides, "eval_every": 2}
    run_grid("optimizers", out, seeds=2, model="avel", overrides=resumable, log=logs.append)
    assert not any(m.startswith("[") for m in logs) and _mtimes(out) == before


def test_a_partial_run_resumes(features_h5, tmp_path):
    out = tmp_path / "t5"
    overrides = {"data": str(features_h5), **TINY, "epochs": 2}
    grid = build_grid("subset", "avel")[:1]  # the baseline: train its seed0 for one of two epochs by hand
    from avel.engine.train import run_training

    seed0 = out / "baseline__accuracy" / "seed0"
    run_training(load_config(None, {**overrides, **grid[0].overrides, "model": "avel", "epochs": 1,
                                    "out": str(seed0)}), QUIET)  # fmt: skip
    (seed0 / "results.json").unlink()  # as if killed after epoch 0's checkpoint
    logs: list[str] = []
    run_grid("subset", out, seeds=1, model="avel", overrides=overrides, log=logs.append)
    assert any("resuming" in m and "epoch 1" in m for m in logs)
    lines = (out / "baseline__accuracy" / "seed0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [0, 1]


def test_dry_run_trains_nothing(tmp_path):
    out = tmp_path / "t2"
    logs: list[str] = []
    table = run_grid(
        "balancers", out, seeds=3, model="resnet18", overrides=TINY, dry_run=True, log=logs.append
    )
    assert not out.exists()
    text = "\n".join(logs)
    assert "ogm-ge" in text and "n/a:" in text and "seed0..2" in text
    applicable = sum(not c.na_reason for _, cells in table.rows for c in cells)
    # 46 cells; OGM-GE, MMCosine, MBSD, LFM, AMCo and the uni-modal runs n/a on FiLM
    assert 36 <= applicable <= 39
    assert f"dry run: {3 * applicable} run(s) would be trained" in text
    assert table.cell("OGM-GE", "FiLM").text() == "n/a"
    assert table.cell("PMR", "FiLM").text() == "—"


def test_a_grid_needs_data(tmp_path):
    with pytest.raises(ValueError, match="no data file given"):
        run_grid("subset", tmp_path / "x", seeds=1, model="avel", overrides=TINY, log=QUIET)


def test_tiny_resnet18_grid_trains_only_the_chosen_rows(tiny_h5, tmp_path):
    out = tmp_path / "t1"
    overrides = {"data": str(tiny_h5), **TINY}
    with pytest.raises(ValueError, match=r"unknown row\(s\) \['PMR 10%'\]; rows of this grid: \['baseline'"):
        run_grid("subset", out, seeds=1, model="resnet18", overrides=overrides, rows=["PMR 10%"], log=QUIET)
    rows = ["baseline", "PMR, 10%"]
    table = run_grid("subset", out, seeds=1, model="resnet18", overrides=overrides, rows=rows, log=QUIET)
    assert [label for label, _ in table.rows] == [
        "baseline", "PMR, 1%", "PMR, 5%", "PMR, 10%", "PMR, 50%", "PMR, 100%"
    ]  # fmt: skip
    done = {label: len(cells[0].accuracies) for label, cells in table.rows}
    assert done == {"baseline": 1, "PMR, 1%": 0, "PMR, 5%": 0, "PMR, 10%": 1, "PMR, 50%": 0, "PMR, 100%": 0}
    res = json.loads((out / "pmr-10__accuracy" / "seed0" / "results.json").read_text())
    assert res["config"]["model"] == "resnet18" and res["config"]["pmr_subset"] == "0.1"
    assert table.cell("PMR, 10%", "accuracy").published == 67.1


def test_umt_trains_on_the_grids_uni_modal_runs_and_the_table_has_the_measures(features_h5, tmp_path):
    out = tmp_path / "bal"
    overrides = {"data": str(features_h5), **TINY}
    rows = ["audio only", "visual only", "UMT"]
    logs: list[str] = []
    table = run_grid(
        "balancers",
        out,
        seeds=1,
        model="avel",
        overrides=overrides,
        rows=rows,
        columns=["concat"],
        log=logs.append,
    )
    res = json.loads((out / "umt__concat" / "seed0" / "results.json").read_text())
    assert res["config"]["umt_teacher_audio"] == str(out / "audio-only__concat" / "seed0" / "best.pt")
    assert "distill_audio" in (out / "umt__concat" / "seed0" / "metrics.jsonl").read_text()
    md = table.markdown()
    assert "BalanceBenchmark's measures" in md and "| UMT | concat |" in md
    assert table.cell("UMT", "concat").measure("imbalance_degree") == res["measures"]["imbalance_degree"]
    rows_csv = {(r["row"], r["column"]): r for r in csv.DictReader(io.StringIO(table.csv()))}
    assert float(rows_csv["UMT", "concat"]["epoch_time_s"]) == pytest.approx(
        res["measures"]["epoch_time_s"], rel=1e-5
    )
    assert rows_csv["UMT", "DMRN"]["macro_f1"] == ""  # not trained


def test_tiny_grid_trains_only_the_chosen_columns(tiny_h5, tmp_path):
    out = tmp_path / "t6"
    overrides = {"data": str(tiny_h5), **TINY}
    unknown = r"unknown column\(s\) \['pmr'\]; columns of this grid: \['baseline', 'PMR'\]"
    with pytest.raises(ValueError, match=unknown):
        run_grid("optimizers", out, seeds=1, overrides=overrides, columns=["pmr"], log=QUIET)
    only = {"rows": ["Adam"], "columns": ["PMR"]}
    table = run_grid("optimizers", out, seeds=1, model="resnet18", overrides=overrides, **only, log=QUIET)
    done = {(label, c.cell.column): len(c.accuracies) for label, cells in table.rows for c in cells}
    assert done == {
        ("SGD", "baseline"): 0, ("SGD", "PMR"): 0, ("AdaGrad", "baseline"): 0, ("AdaGrad", "PMR"): 0,
        ("Adam", "baseline"): 0, ("Adam", "PMR"): 1,
    }  # fmt: skip
    assert sorted(p.parent.name for p in out.glob("*/seed0")) == ["adam__pmr"]


def test_a_seed_another_process_trains_is_skipped_and_a_second_train_refused(tiny_h5, tmp_path):
    out = tmp_path / "t6"
    overrides = {"data": str(tiny_h5), **TINY}
    busy = out / "adam__pmr" / "seed0"
    busy.mkdir(parents=True)
    holder = f"avel ablate (the other process) (pid {os.getpid()} on host {socket.gethostname()}, since "
    refusal = "is writing it; wait for it to finish, or give another --out"
    lines: list[str] = []
    with output_lock(busy, "avel ablate (the other process)", lock_path=busy / "train.lock"):
        cfg = load_config(None, {**overrides, "model": "resnet18", "balance": "pmr", "out": str(busy)})
        with pytest.raises(OutputLocked) as refused:
            run_training(cfg, log=QUIET)
        only = {"model": "resnet18", "rows": ["Adam"], "columns": ["PMR"]}
        table = run_grid("optimizers", out, seeds=2, overrides=overrides, **only, log=lines.append)
    assert str(refused.value).startswith(f"{busy}: {holder}") and str(refused.value).endswith(refusal)
    assert not (busy / "metrics.jsonl").exists() and not (busy / "results.json").exists()
    skipped = [line for line in lines if line.startswith("skipped: ")]
    assert len(skipped) == 1 and skipped[0].startswith(f"skipped: {busy}: {holder}")
    assert (out / "adam__pmr" / "seed1" / "results.json").is_file()
    assert len(table.cell("Adam", "PMR").accuracies) == 1
    assert not (out / "adam__pmr" / "seed1" / "train.lock").exists()  # released when the run ends
