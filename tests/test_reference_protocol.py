"""The AVE-ECCV18 reference's protocol knobs: Xavier-uniform initialisation, weights from another run,
the learning rate stepped per iteration, a fixed batch order, evaluation at epochs 0, N, 2N, ..."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from avel.cli import app
from avel.engine.config import load_config
from avel.engine.train import run_training
from avel.families import build_model

QUIET = {"log": lambda s: None}


def _cfg(data, out, **kw):
    base = {"data": str(data), "model": "avel", "fusion": "concat", "epochs": 2, "batch_size": 8}
    return load_config(None, {**base, "lr": 3e-3, "device": "cpu", "progress": False, "out": str(out), **kw})


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _model(fusion: str):
    return build_model("avel", fusion, audio_dim=16, visual_dim=8, regions=4, num_classes=5)


def _xavier_bound(w: torch.Tensor) -> float:
    return math.sqrt(6.0 / (w.shape[0] + w.shape[1]))  # Xavier-uniform: U(-b, b), b = √(6 / (in + out))


def test_reference_init_is_xavier_uniform_on_the_reference_layers_only():
    torch.manual_seed(0)
    model = _model("concat")
    lstm_before = model.audio_branch["lstm"].weight_ih_l0.clone()
    bias_before = model.L1.bias.clone()
    model.reference_init()
    att = model.visual_branch["attention"]
    for layer in (att.W_v, att.W_a, att.U_v, att.U_g, att.w_h, model.L1, model.L2):
        w, b = layer.weight, _xavier_bound(layer.weight)
        assert w.abs().max() <= b
        if w.numel() >= 64:  # PyTorch's default (Kaiming-uniform, a = √5) is b/√2·… narrower: std differs
            assert w.std().item() == pytest.approx(b / math.sqrt(3), rel=0.25)
    assert torch.equal(model.audio_branch["lstm"].weight_ih_l0, lstm_before)  # LSTMs: PyTorch's default
    assert torch.equal(model.L1.bias, bias_before)  # biases untouched
    dmrn = _model("dmrn")
    att_before = dmrn.visual_branch["attention"].W_v.weight.clone()
    dmrn.reference_init()  # TBMRF_Net: L2 only
    assert torch.equal(dmrn.visual_branch["attention"].W_v.weight, att_before)
    assert dmrn.L2.weight.abs().max() <= _xavier_bound(dmrn.L2.weight)


def test_init_reference_errors_on_other_models(features_h5, tmp_path):
    with pytest.raises(ValueError, match="AVEL reference has no uni-modal model"):
        run_training(_cfg(features_h5, tmp_path / "u", modality="audio", init="reference"), **QUIET)
    with pytest.raises(
        ValueError, match='--init: "xavier" is not allowed: must be one of default, reference'
    ):
        run_training(_cfg(features_h5, tmp_path / "x", init="xavier"), **QUIET)


def test_init_from_loads_the_matching_weights_of_another_run(features_h5, tmp_path):
    """DMRN from a trained concat run, as the reference trains DMRN: the log says what was loaded."""
    run_training(_cfg(features_h5, tmp_path / "concat", epochs=1), **QUIET)
    msgs = []
    src = tmp_path / "concat/best.pt"
    run_training(
        _cfg(features_h5, tmp_path / "dmrn", fusion="dmrn", epochs=1, init_from=str(src)), log=msgs.append
    )
    state = torch.load(src, weights_only=False)["model"]
    line = next(m for m in msgs if m.startswith("init-from"))
    n_shared = sum(1 for k in state if k.startswith(("audio_branch", "visual_branch")))
    # the branches and L2's bias (same shape); L2's weight has another shape and is kept
    assert f"{n_shared + 1} tensors loaded" in line and "L2.weight" in line and "L2.bias" not in line


def test_init_from_weights_equal_the_source_before_training(features_h5, tmp_path):
    from avel.engine.checkpoint import load_matching_weights

    run_training(_cfg(features_h5, tmp_path / "concat", epochs=1), **QUIET)
    torch.manual_seed(1)
    dmrn = build_model("avel", "dmrn", audio_dim=16, visual_dim=8, regions=4, num_classes=5)
    loaded, kept = load_matching_weights(dmrn, tmp_path / "concat/best.pt")
    src = torch.load(tmp_path / "concat/best.pt", weights_only=False)["model"]
    assert loaded and all(torch.equal(dmrn.state_dict()[k], src[k]) for k in loaded)
    assert "L2.weight" in kept and not any(k.startswith("dmrn") for k in loaded)
    other = build_model("avel", "concat", audio_dim=3, visual_dim=2, regions=1, num_classes=2)
    other.audio_branch = torch.nn.ModuleDict()
    other.visual_branch = torch.nn.ModuleDict()
    other.L1, other.L2 = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    with pytest.raises(ValueError, match="no weight of its model matches this model"):
        load_matching_weights(other, tmp_path / "concat/best.pt")


def test_lr_step_counted_in_iterations(features_h5, tmp_path):
    """StepLR every 5 optimizer steps: after epoch e the lr is lr·γ^⌊steps/5⌋ (36 train rows, batch 8)."""
    cfg = _cfg(
        features_h5,
        tmp_path / "it",
        epochs=3,
        schedule="step",
        step_size=5,
        lr_gamma=0.5,
        lr_step_unit="iteration",
    )
    run_training(cfg, **QUIET)
    steps_per_epoch = math.ceil(36 / 8)
    lrs = [r["lr"] for r in _metrics(tmp_path / "it")]
    expected = [3e-3 * 0.5 ** ((steps_per_epoch * (e + 1)) // 5) for e in range(3)]
    assert lrs == pytest.approx(expected) and len(set(lrs)) == 3
    with pytest.raises(ValueError, match="lr_step_unit = 'iteration' applies to the step and multistep"):
        run_training(_cfg(features_h5, tmp_path / "c", schedule="cosine", lr_step_unit="iteration"), **QUIET)


def test_fixed_batch_order_and_eval_at_epochs_0_n_2n(features_h5, tmp_path):
    run_training(_cfg(features_h5, tmp_path / "a", epochs=4, eval_every=2, shuffle=False), **QUIET)
    lines = _metrics(tmp_path / "a")
    assert ["val_accuracy" in r for r in lines] == [True, False, True, True]  # 0, 2 and the last
    # with a fixed order the two seeds' runs differ only by initialisation: same seed, same everything,
    # and a shuffled run of the same seed differs
    run_training(_cfg(features_h5, tmp_path / "b", epochs=1, shuffle=False), **QUIET)
    run_training(_cfg(features_h5, tmp_path / "c", epochs=1, shuffle=True), **QUIET)
    loss = {k: _metrics(tmp_path / k)[0]["loss"] for k in "abc"}
    assert loss["a"] == loss["b"] != loss["c"]


def test_cli_init_options(features_h5, tmp_path):
    r = CliRunner().invoke(
        app,
        [
            "train",
            str(features_h5),
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--no-progress",
            "--init",
            "reference",
        ]
        + ["--eval-every", "1", "--out", str(tmp_path / "r")],
    )
    assert r.exit_code == 0, r.output
    saved = (tmp_path / "r/config.toml").read_text()
    assert 'init = "reference"' in saved
    r = CliRunner().invoke(
        app,
        [
            "train",
            str(features_h5),
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--init-from",
            str(tmp_path / "no.pt"),
        ],
    )
    assert r.exit_code == 2 and "no.pt: no such checkpoint" in r.output
