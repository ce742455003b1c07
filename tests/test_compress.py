"""The released PMR backbone's compress / recover block (``compress = true``, off by default): its layers'
shapes and parameter count against the release's ``models/backbone.py`` (read, computed here by hand),
the grids it recovers, the refusals, and a real training run on a CREMA-D-form set whose checkpoint
rebuilds with the block."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from avel.cli import app
from avel.engine.checkpoint import model_from_checkpoint
from avel.engine.config import load_config, validate
from avel.engine.train import _model_kwargs, run_training
from avel.families import build_model
from avel.models import count_parameters
from avel.models.encoders import ResNet18

runner = CliRunner()


def _released_block_parameters() -> int:
    """The release's compress_layer + recover_layer at width 64 (C = 128, D = 512), by hand: weights and
    biases of each Conv2d / ConvTranspose2d (in · out · kernel area + out)."""
    conv = 3 * (128 * 128 * 9 + 128) + (128 * 512 * 9 + 512)  # compress_layer, either modality
    visual = (512 * 128 * 9 + 128) + (128 * 128 * 9 + 128) + 2 * (128 * 128 * 4 + 128)  # k 3, 3, 2, 2
    audio = (512 * 128 * 16 + 128) + (128 * 128 * 4 + 128) + (128 * 128 * 8 + 128) + (128 * 128 * 12 + 128)
    return 2 * conv + visual + audio


def test_compress_adds_the_released_parameters_and_is_off_by_default():
    plain = build_model("resnet18", "concat", input_mode="e2e", num_classes=6)
    packed = build_model("resnet18", "concat", input_mode="e2e", num_classes=6, compress=True)
    added = count_parameters(packed) - count_parameters(plain)
    assert added == _released_block_parameters() == 4_377_344  # the "+4.4M"
    assert not any("compress" in k or "recover" in k for k in plain.state_dict())
    block = {k.split(".")[2] for k in packed.state_dict() if "_layer." in k}
    assert block == {"compress_layer", "recover_layer"}
    cfg = load_config(None, {"model": "resnet18"})
    assert "compress" not in _model_kwargs(cfg, "e2e", 6, (), ())  # old checkpoints' kwargs unchanged
    cfg = load_config(None, {"model": "resnet18", "compress": True})
    assert _model_kwargs(cfg, "e2e", 6, (), ())["compress"] is True


@torch.no_grad()
def test_recover_grids_are_the_releases():
    """visual 224 px: layer2 28×28 → (512, 1, 1) → 28×28; audio 257 × 299: layer2 33×38 → 33×38 (the
    release's comments); layer3 then reads those grids."""
    cases = (("visual", (1, 3, 224, 224), (28, 28)), ("audio", (1, 1, 257, 299), (33, 38)))
    for modality, shape, grid in cases:
        net = ResNet18(shape[1], 8, modality).eval()
        stem, layer2, layer3, layer4 = net.stages()
        x = layer2[0](stem(torch.randn(shape)))
        assert tuple(x.shape[-2:]) == grid
        assert net.compress_layer(x).shape == (1, 64, 1, 1)
        assert tuple(layer2(stem(torch.randn(shape))).shape[-2:]) == grid
        assert net(torch.randn(shape)).shape[1] == 64


def test_refusals_name_the_option():
    net = ResNet18(3, 8, "visual")
    with pytest.raises(ValueError, match="compress = true needs a layer2 map of at least 25x25"):
        net(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="resnet18 family"):
        build_model("cgmnist", "concat", input_mode="e2e", num_classes=10, compress=True)
    with pytest.raises(ValueError, match="compress = true is the ResNet18 backbone's block"):
        validate(load_config(None, {"model": "avel", "compress": True}))


@pytest.mark.slow  # a CLI round trip (synth, preprocess) and a training run
def test_training_with_compress_rebuilds_from_its_checkpoint(tmp_path: Path):
    """A CREMA-D-form set at 224 px (the block needs >= 193 px), width 8, one epoch with PMR; the checkpoint
    alone rebuilds the model with the block, and the loss reaches every one of its layers."""
    for args in (
        ["synth", tmp_path / "cd", "--layout", "crema-d", "--videos", 24, "--fps", 10, "--frame-size", 224],
        ["preprocess", tmp_path / "cd", tmp_path / "cd.h5", "--frame-size", 224, "--no-progress"],
    ):
        res = runner.invoke(app, [str(a) for a in args])
        assert res.exit_code == 0, res.output
    cfg = load_config(
        None,
        {"data": str(tmp_path / "cd.h5"), "model": "resnet18", "width": 8, "frames": 1, "eval_frames": 1,
         "batch_size": 4, "epochs": 1, "device": "cpu", "progress": False, "measures": False,
         "balance": "pmr", "compress": True, "optimizer": "sgd", "lr": 0.1, "out": str(tmp_path / "run")},
    )  # fmt: skip
    res = run_training(cfg, log=lambda s: None)
    assert 0.0 <= res["test_accuracy"] <= 1.0
    model, ckpt = model_from_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["model_kwargs"]["compress"] is True
    model.train()
    out = model(torch.randn(2, 1, 257, 299), torch.randn(2, 1, 3, 224, 224))
    out.logits.sum().backward()
    block = [(n, p) for n, p in model.named_parameters() if "compress_layer" in n or "recover_layer" in n]
    assert len(block) == 32  # 2 modalities x 8 layers x (weight, bias)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in block)
