"""A rebalancing method added from this file alone (its options, ``register``): it trains, evaluates from its
checkpoint, takes its options from a TOML table, flat keys and the command line, and runs as a row of an
``avel ablate balancers`` grid, with no other file of avel changed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from typer.testing import CliRunner

from avel.balance import BALANCERS, register
from avel.balance.base import BalancerHooks, StepResult, option, output_loss
from avel.cli import app
from avel.engine.config import load_config
from avel.engine.train import run_training
from avel.experiments.ablate import run_grid
from avel.tools.evaluate import evaluate_checkpoint


@dataclass(frozen=True)
class ScaledOptions:
    weight: float = option(0.5, "the task loss's weight", (lambda v: v > 0, "> 0"))


class ScaledCE(BalancerHooks):
    """The task loss times a weight (made up for this test)."""

    name = "scaled-ce"
    method = "ScaledCE"
    Options = ScaledOptions
    runs_forward = True

    def __init__(self, options: ScaledOptions | None = None, *, seed: int = 0, **values: Any) -> None:
        super().__init__(options, seed=seed, **values)
        self.weight = float(self.options.weight)

    def training_loss(self, model, batch) -> StepResult:
        out = model(batch.audio, batch.visual)
        loss = self.weight * output_loss(out, batch.labels)
        return StepResult(loss, out, {"loss_ce": loss.detach()})


@pytest.fixture
def scaled_ce():
    register(ScaledCE)
    yield ScaledCE
    del BALANCERS["scaled-ce"]


SHORT = {"model": "avel", "epochs": 2, "batch_size": 8, "device": "cpu", "progress": False}


def test_a_balancer_registered_here_trains_evaluates_and_runs_in_a_grid(scaled_ce, features_h5, tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('balance = "scaled-ce"\n[scaled_ce]\nweight = 0.25\n')
    cfg = load_config(toml, {"data": str(features_h5), "out": str(tmp_path / "run"), **SHORT})
    assert cfg.balancers["scaled_ce"].weight == 0.25  # its own table
    results = run_training(cfg, log=lambda s: None)
    assert results["config"]["scaled_ce_weight"] == 0.25  # saved under the flat key, as every option
    assert "\n[scaled_ce]\nweight = 0.25\n" in (tmp_path / "run" / "config.toml").read_text()
    assert 0.0 <= results["test_accuracy"] <= 1.0
    text = evaluate_checkpoint(
        tmp_path / "run" / "best.pt", features_h5, out_dir=tmp_path / "ev", device="cpu"
    )
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert f"{100 * report['accuracy']:7.2f}%" in text

    with pytest.raises(ValueError, match=r"--scaled-ce-weight: 0.0 is not allowed: must be > 0"):
        load_config(None, {"balance": "scaled-ce", "scaled-ce-weight": 0})
    listing = CliRunner().invoke(app, ["balancers"]).output
    assert "scaled-ce (ScaledCE): The task loss times a weight" in listing
    assert "  [scaled_ce] weight = 0.5  (scaled_ce_weight): the task loss's weight; > 0" in listing

    overrides = {"data": str(features_h5), **SHORT, "epochs": 1, "scaled_ce_weight": 2.0}
    table = run_grid(
        "balancers", tmp_path / "grid", seeds=1, model="avel", overrides=overrides, rows=["ScaledCE"],
        log=lambda s: None,
    )  # fmt: skip
    cells = [table.cell("ScaledCE", column) for column in ("concat", "DMRN")]
    assert all(len(c.accuracies) == 1 for c in cells)  # trained, one seed each
    run = json.loads((tmp_path / "grid" / cells[0].run_dirs[0] / "results.json").read_text())
    assert run["config"]["balance"] == "scaled-ce" and run["config"]["scaled_ce_weight"] == 2.0
