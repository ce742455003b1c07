"""A rebalancing method and a model family added from this file alone (``register``): the method trains,
evaluates from its checkpoint, takes its options from a TOML table, flat keys and the command line, and runs
as a row of an ``avel ablate balancers`` grid; the family (its own reader of real CG-MNIST HDF5 rows, its
own model) trains with it, evaluates from its checkpoint and runs in an ``avel ablate balancers`` grid (the
command line itself), with no other file changed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from torch import Tensor, nn
from typer.testing import CliRunner

from avel import families
from avel.balance import BALANCERS, register
from avel.balance.base import BalancerHooks, StepResult, option, output_loss
from avel.cli import app
from avel.data.splits import ReadOptions, SplitData, rows_of
from avel.engine.config import load_config, validate
from avel.engine.train import run_training
from avel.experiments.ablate import build_grid, run_grid, write_tables
from avel.models.base import AVModel, ModelOutput
from avel.preprocessing.h5 import CGMNIST_KIND
from avel.synth.cgmnist import CGMNISTConfig, make_cgmnist
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


# ----------------------------------------------------------------------------- a model family made up here


def read_pixels(f: h5py.File, rows: np.ndarray, device, meta: dict, options: ReadOptions) -> SplitData:
    """CG-MNIST rows as flat pixels in [0, 1]: gray (N, 784) first, colored (N, 2352) second."""
    gray = torch.from_numpy(rows_of(f["gray"], rows)).to(device)  # (N, 28, 28) uint8
    colored = torch.from_numpy(rows_of(f["colored"], rows)).to(device)  # (N, 28, 28, 3) uint8
    labels = torch.from_numpy(rows_of(f["label"], rows, np.int64)).to(device)

    def flat(g: Tensor, c: Tensor, idx: Tensor, train: bool, gen) -> tuple[Tensor, Tensor]:
        return g.flatten(1).float() / 255.0, c.flatten(1).float() / 255.0

    return SplitData(gray, colored, labels, flat, rows=torch.from_numpy(rows))


class PixelMLP(AVModel):
    """One linear encoder per modality, concat of the two, logits split by halves (made up for this test)."""

    def __init__(self, num_classes: int, width: int, modality: str) -> None:
        super().__init__()
        self.num_classes, self.modality, self.z_dim = num_classes, modality, width
        self.fusion_name, self.splits_logits = "concat", True
        self.audio_branch = nn.Sequential(nn.Linear(784, width), nn.ReLU())
        self.visual_branch = nn.Sequential(nn.Linear(3 * 784, width), nn.ReLU())
        self.head = nn.Linear(2 * width, num_classes)

    def encode(self, audio: Tensor, visual: Tensor) -> tuple[Tensor, Tensor]:
        return self.audio_branch(audio), self.visual_branch(visual)  # (B, D) each

    def fuse(self, z_audio: Tensor, z_visual: Tensor) -> ModelOutput:
        w = self.head.weight
        la, lv = z_audio @ w[:, : self.z_dim].T, z_visual @ w[:, self.z_dim :].T + self.head.bias
        return ModelOutput(la + lv, z_audio, z_visual, la, lv)


class PixelFamily(families.Family):
    name = "pixel-mlp"
    label = "a pixel MLP"
    models = "pixel MLPs"
    fusions = ("concat",)
    grid_fusions = ("concat",)
    modality_names = ("shape", "hue")
    readers = {CGMNIST_KIND: read_pixels}
    trains_on = "`avel cgmnist` files"

    def build(self, fusion: str, args: families.ModelArgs) -> AVModel:
        return PixelMLP(args.num_classes, args.width, args.modality)


@pytest.fixture
def pixel_family():
    family = families.register(PixelFamily())
    yield family
    del families.FAMILIES["pixel-mlp"]


@pytest.fixture(scope="module")
def cgmnist_h5(tmp_path_factory):
    path = tmp_path_factory.mktemp("cg") / "cg.h5"
    make_cgmnist(path, CGMNISTConfig(train=100, test=40, seed=3, test_color_match=1.0))  # rendered digits
    return path


PIXEL = {"model": "pixel-mlp", "width": 16, "epochs": 2, "batch_size": 16, "optimizer": "adam", "lr": 0.01}
PIXEL |= {"device": "cpu", "progress": False}


def test_a_family_registered_here_trains_evaluates_and_runs_in_a_grid(
    pixel_family, scaled_ce, cgmnist_h5, tmp_path
):
    data = families.load_splits(cgmnist_h5, family="pixel-mlp")
    assert data.meta["family"] == "pixel-mlp" and data.meta["num_classes"] == 10
    assert data.train.batch(torch.arange(3)).visual.shape == (3, 3 * 784)  # its reader's inputs
    with pytest.raises(ValueError, match=r"trains CG-MNIST classifiers \(--model cgmnist\) or pixel MLPs"):
        families.load_splits(cgmnist_h5, family="avel")  # the kind's readers, this family among them
    validate(load_config(None, {**PIXEL, "data": "x.h5", "modality": "hue"}))  # its own modality names
    with pytest.raises(
        ValueError, match=r'"gray" is not allowed: must be one of both, audio, visual, shape, hue'
    ):  # the family's own names among the choices
        validate(load_config(None, {**PIXEL, "data": "x.h5", "modality": "gray"}))

    results = run_training(load_config(None, {**PIXEL, "data": str(cgmnist_h5), "out": str(tmp_path / "run"),
                                              "balance": "scaled-ce"}), log=lambda s: None)  # fmt: skip
    assert results["config"]["model"] == "pixel-mlp" and results["config"]["balance"] == "scaled-ce"
    assert results["test_accuracy"] > 0.3  # ten classes: chance is 0.1; each digit has its class's colour
    losses = [json.loads(ln)["loss"] for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and losses[1] < losses[0]  # real steps that learn
    text = evaluate_checkpoint(
        tmp_path / "run" / "best.pt", cgmnist_h5, out_dir=tmp_path / "ev", device="cpu"
    )
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["accuracy"] == pytest.approx(results["test_accuracy"])  # the checkpoint rebuilt alone
    assert f"{100 * report['accuracy']:7.2f}%" in text

    cells = {(c.row, c.column): c for c in build_grid("fusions", model="pixel-mlp")}
    assert ("shape only", "baseline") in cells and ("hue only", "baseline") in cells  # its modality names
    sets = [f"--set={k}={v}" for k, v in {**PIXEL, "epochs": 1}.items() if k not in ("model", "progress")]
    grid = CliRunner().invoke(app, [
        "ablate", "balancers", str(tmp_path / "grid"), "--data", str(cgmnist_h5), "--model", "pixel-mlp",
        "--seeds", "1", "--row", "naive", "--row", "ScaledCE", "--no-progress", *sets,
    ])  # fmt: skip
    assert grid.exit_code == 0, grid.output
    assert "| ScaledCE |" in grid.output and "| concat |" in grid.output  # `avel ablate balancers`'s table
    assert "| probe alone shape / hue | Shapley shape / hue |" in grid.output  # the measures: its names
    assert "linear-probe accuracy of shape − of hue" in grid.output
    table = write_tables(tmp_path / "grid")
    assert table.columns == ["concat"]  # its grid fusions
    for row in ("naive", "ScaledCE"):
        cell = table.cell(row, "concat")
        assert len(cell.accuracies) == 1 and 0.0 <= cell.accuracies[0] <= 1.0
    run = json.loads(
        (tmp_path / "grid" / table.cell("ScaledCE", "concat").run_dirs[0] / "results.json").read_text()
    )
    assert run["config"]["model"] == "pixel-mlp" and run["config"]["balance"] == "scaled-ce"
