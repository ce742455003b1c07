"""``--tensorboard``: event files beside metrics.jsonl, read back with TensorBoard's own reader."""

from __future__ import annotations

import json
import sys

import pytest

from avel.engine.config import TrainConfig
from avel.engine.tensorboard import TensorBoardLog, scalar_tag
from avel.engine.train import run_training


def test_event_file_holds_the_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from conftest import write_toy_features
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = write_toy_features(tmp_path / "toy.h5", videos=30)
    out = tmp_path / "run"
    cfg = TrainConfig(data=str(data), balance="pmr", epochs=2, batch_size=8, progress=False, out=str(out))
    run_training(cfg, log=lambda s: None)
    run_training(TrainConfig(**{**cfg.__dict__, "epochs": 3, "tensorboard": True}), log=lambda s: None)
    events = EventAccumulator(str(out))
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag in ("train/loss", "train/rho", "train/beta", "train/proto_acc_audio", "val/accuracy", "lr"):
        assert tag in tags
    assert "speed/samples_per_s" in tags
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    val = events.Scalars("val/accuracy")
    assert [e.step for e in val] == [2]  # resumed at epoch 2: the new epochs only
    assert val[0].value == pytest.approx(lines[2]["val_accuracy"], rel=1e-6)
    assert events.Scalars("train/rho")[0].value == pytest.approx(lines[2]["rho"], rel=1e-6)


def test_tags():
    assert [scalar_tag(k) for k in ("lr", "val_audio_accuracy", "samples_per_s", "loss_ce")] == [
        "lr",
        "val/audio_accuracy",
        "speed/samples_per_s",
        "train/loss_ce",
    ]


def test_missing_tensorboard_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as when not installed
    with pytest.raises(ValueError, match=r"^--tensorboard needs the tensorboard package: pip install"):
        TensorBoardLog(tmp_path)
