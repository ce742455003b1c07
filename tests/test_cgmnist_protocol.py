"""The released protocol (PMR's released CG-MNIST script: prototypes from test, test every epoch, the best
test epoch reported) beside the clean one (prototypes from train, test read once per reported model, after
training): real training steps on an embedded CG-MNIST file, the data access instrumented."""

from __future__ import annotations

import json

import pytest
import torch

from avel.balance.pmr import PMR, released_test_rows
from avel.data.splits import SplitData
from avel.engine import train as train_mod
from avel.engine.config import load_config, validate
from avel.families import build_model, load_splits
from avel.synth.cgmnist import CGMNISTConfig, make_cgmnist


@pytest.fixture(scope="module")
def cg_small(tmp_path_factory):
    out = tmp_path_factory.mktemp("cgp") / "cg.h5"
    make_cgmnist(out, CGMNISTConfig(train=200, test=100, test_color_match=0.0, seed=0))
    return out


def paper_cfg(path, out, **changes):
    overrides = {"data": str(path), "epochs": 2, "batch_size": 32, "device": "cpu", "progress": False}
    return load_config("cgmnist_paper", {**overrides, "out": str(out), **changes})


def test_released_prototypes_are_class_means_of_a_tenth_of_test(cg_small):
    torch.manual_seed(0)
    data = load_splits(cg_small, family="cgmnist")
    model = build_model("cgmnist", "concat", input_mode="e2e", num_classes=10)
    pmr = PMR(subset="test", seed=3)
    pmr.on_epoch_start(model, data, epoch=2)
    rows = released_test_rows(len(data.test), 3, 2)
    assert len(rows) == 10 and torch.equal(pmr.indices, rows)
    assert not torch.equal(rows, released_test_rows(len(data.test), 3, 3))  # redrawn every epoch
    model.eval()
    with torch.no_grad():
        batch = data.test.batch(rows)
        out = model(batch.audio, batch.visual)
    for k in range(10):  # Eq. 6 over the test rows of class k
        mine = batch.labels == k
        if mine.any():
            assert torch.allclose(pmr.prototypes[0][k], out.z_audio[mine].mean(0), atol=1e-5)
            assert torch.allclose(pmr.prototypes[1][k], out.z_visual[mine].mean(0), atol=1e-5)
    train_pmr = PMR(subset=0.1, seed=3)
    train_pmr.on_epoch_start(model, data, epoch=2)
    assert not torch.allclose(train_pmr.prototypes[1], pmr.prototypes[1])


def test_test_prototypes_only_under_the_released_protocol(cg_small, tmp_path):
    with pytest.raises(ValueError, match="only with protocol = 'released'"):
        validate(paper_cfg(cg_small, tmp_path, balance="pmr", pmr_subset="test"))
    with pytest.raises(ValueError, match="add --set pmr_subset=test"):
        validate(paper_cfg(cg_small, tmp_path, balance="pmr", protocol="released"))
    with pytest.raises(
        ValueError, match='--protocol: "paper" is not allowed: must be one of clean, released'
    ):
        validate(paper_cfg(cg_small, tmp_path, protocol="paper"))


def record_reads(monkeypatch) -> tuple[list[tuple[int, bool]], dict]:
    """Every read of a split's rows as (id of the split, whether the final evaluation had begun)."""
    reads: list[tuple[int, bool]] = []
    state = {"final": False, "data": None}
    batch, finish, load = SplitData.batch, train_mod._finish, train_mod.load_splits

    def batch_spy(self, *a, **k):
        reads.append((id(self), state["final"]))
        return batch(self, *a, **k)

    def finish_spy(*a, **k):
        state["final"] = True
        return finish(*a, **k)

    def load_spy(*a, **k):
        state["data"] = load(*a, **k)
        return state["data"]

    monkeypatch.setattr(SplitData, "batch", batch_spy)
    monkeypatch.setattr(train_mod, "_finish", finish_spy)
    monkeypatch.setattr(train_mod, "load_splits", load_spy)
    return reads, state


@pytest.mark.parametrize("balance", ["none", "pmr"])
def test_a_clean_run_reads_test_only_in_its_final_evaluation(cg_small, tmp_path, monkeypatch, balance):
    reads, state = record_reads(monkeypatch)
    res = train_mod.run_training(paper_cfg(cg_small, tmp_path / "run", balance=balance), log=lambda s: None)
    test_id = id(state["data"].test)
    assert any(split == test_id for split, _ in reads)  # test was read: the spy sees it
    assert all(final for split, final in reads if split == test_id)  # ... only after training
    assert any(not final for _, final in reads)  # training read train / val before
    assert res["protocol"] == "clean" and res["selected_on"] == "val"
    assert res["last_epoch"] == 1 and 0 <= res["last_test_accuracy"] <= 1
    assert "reads_test_while_training" not in res
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.startswith("test_") for ln in lines for k in ln)


def test_the_clean_protocol_seals_test_while_training(cg_small):
    data = load_splits(cg_small, family="cgmnist")
    data.test.seal(train_mod.CLEAN_SEAL)
    with pytest.raises(RuntimeError, match="sealed: the clean protocol reads test once"):
        next(data.test.batches(8))
    data.test.seal(None)
    assert len(next(data.test.batches(8)).labels) == 8


def test_a_released_run_reads_test_every_epoch_and_says_so(cg_small, tmp_path, monkeypatch):
    reads, state = record_reads(monkeypatch)
    logged: list[str] = []
    cfg = paper_cfg(
        cg_small, tmp_path / "rel", balance="pmr", protocol="released", pmr_subset="test", epochs=3
    )
    res = train_mod.run_training(cfg, log=logged.append)
    test_id = id(state["data"].test)
    assert any(split == test_id and not final for split, final in reads)  # read while training
    assert logged[0].startswith("RELEASED PROTOCOL: reads the test split while training")
    assert all("TEST" in ln and "released protocol" in ln for ln in logged if ln.startswith("epoch"))
    lines = [json.loads(x) for x in (tmp_path / "rel" / "metrics.jsonl").read_text().splitlines()]
    assert all("test_accuracy" in ln and "test_visual_accuracy" in ln for ln in lines)
    best = max(lines, key=lambda ln: ln["test_accuracy"])
    assert res["reads_test_while_training"] is True and res["protocol"] == "released"
    assert res["label"].startswith("RELEASED PROTOCOL")
    assert res["test_accuracy"] == best["test_accuracy"] and res["best_test_epoch"] == best["epoch"]
    by_val = max(lines, key=lambda ln: ln["val_accuracy"])  # the first epoch reaching the best val
    assert res["val_selected_epoch"] == res["best_epoch"] == by_val["epoch"]
    assert res["val_selected_test_accuracy"] == pytest.approx(by_val["test_accuracy"])
    saved = json.loads((tmp_path / "rel" / "results.json").read_text())
    assert saved["reads_test_while_training"] is True
    assert "-released-" in str(train_mod.default_run_dir(cfg))


def test_a_released_grid_table_carries_the_label(cg_small, tmp_path):
    from avel.experiments.ablate import run_grid

    sets = {"data": str(cg_small), "protocol": "released", "pmr_subset": "test"}
    kw = {"config": "cgmnist_paper", "seeds": 1, "model": "cgmnist", "dry_run": True, "log": lambda s: None}
    released = run_grid("fusions", tmp_path / "rel", overrides=sets, **kw).markdown()
    assert "RELEASED PROTOCOL: reads the test split while training" in released
    clean = run_grid("fusions", tmp_path / "clean", overrides={"data": str(cg_small)}, **kw).markdown()
    assert "RELEASED" not in clean and "(selected on val)" in clean


def write_run(run, results: dict | None = None, stopped_at: int | None = None) -> None:
    """a run directory: a finished run's results.json, a stopped run's stopped.json (or both)."""
    from avel.engine.train import STOPPED

    run.mkdir(parents=True)
    if results is not None:
        (run / "results.json").write_text(json.dumps(results))
    if stopped_at is not None:
        (run / STOPPED).write_text(json.dumps({"epoch": stopped_at, "batch": 7, "message": "non-finite"}))


def protocol_table(monkeypatch, capsys, *args: str) -> list[str]:
    """the lines scripts/cgmnist_protocol_table.py prints for ``args``."""
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "cgmnist_protocol_table.py"
    monkeypatch.setattr("sys.argv", [str(script), *args])
    runpy.run_path(str(script), run_name="__main__")
    return capsys.readouterr().out.splitlines()


def test_protocol_table_lists_each_seed_and_never_averages_a_stopped_run(tmp_path, capsys, monkeypatch):
    cell = tmp_path / "clean" / "concat__pmr"
    for seed, acc in ((0, 0.461), (1, 0.353)):
        res = {
            "test_accuracy": acc,
            "last_test_accuracy": acc + 0.02,
            "val_accuracy": 0.9997,
            "last_rho": 1.0,
        }
        # seed 1 stopped once, then finished: its results.json is read, its stopped.json not
        write_run(cell / f"seed{seed}", res, stopped_at=5 if seed == 1 else None)
    write_run(cell / "seed2", stopped_at=32)
    out = protocol_table(monkeypatch, capsys, str(tmp_path / "x"), "--eq11", str(tmp_path / "clean"))
    row = next(ln for ln in out if ln.startswith("| PMR, Eq. 11"))
    assert "40.7 ± 7.6 (n=2: 46.1, 35.3)" in row  # val-selected: mean ± sample std of seeds 0, 1 only
    assert "42.7 ± 7.6 (n=2: 48.1, 37.3)" in row  # last epoch
    assert "clean seed2: non-finite loss, stopped at epoch 32" in row and "seed1" not in row


def test_protocol_table_reads_a_replacement_run_in_place_of_a_stopped_seed_and_marks_it(
    tmp_path, capsys, monkeypatch
):
    cell = tmp_path / "clean" / "concat__pmr"
    write_run(cell / "seed0", {"test_accuracy": 0.40, "val_accuracy": 0.99})
    write_run(cell / "seed1", stopped_at=32)
    probe = tmp_path / "fp32-s1"
    write_run(probe, {"test_accuracy": 0.50, "val_accuracy": 0.99})
    args = [str(tmp_path / "x"), "--eq11", str(tmp_path / "clean"), "--replace", f"eq11:seed1={probe}"]
    out = protocol_table(monkeypatch, capsys, *args)
    row = next(ln for ln in out if ln.startswith("| PMR, Eq. 11"))
    assert "45.0 ± 7.1 (n=2: 40.0, 50.0*)" in row and "stopped" not in row
    assert out[-1] == f"\\* PMR, Eq. 11 coefficients, seed1: the run {probe} in place of the grid's"
