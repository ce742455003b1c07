"""Evaluation (avel.engine.evaluate) against hand computations: the fused accuracy, each modality's prototype
accuracy on event segments only, the report's background figures, and the data-parameter check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from toy_models import ConcatModel

from avel.data.splits import SplitData
from avel.engine.evaluate import check_data_params, evaluate, report, train_prototypes


def constant_model(winner: int, c: int = 3, background: int | None = None) -> ConcatModel:
    """Identity encoders (z = input, D = 2) and a head whose logits always pick ``winner``."""
    model = ConcatModel(2, c, background, da=2, dv=2)
    with torch.no_grad():
        for branch in (model.audio_branch, model.visual_branch):
            branch.weight.copy_(torch.eye(2))
            branch.bias.zero_()
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        model.fc.bias[winner] = 1.0
    return model


def test_fused_accuracy_and_prototype_accuracies_by_hand():
    # audio separates classes 0 / 1 / 2 along x; vision only tells class 2 from the rest
    audio = torch.tensor([[0.0, 0], [0.1, 0], [1, 0], [1.1, 0], [2, 0], [2.1, 0]])
    visual = torch.tensor([[0.0, 0], [0, 0], [0, 0], [0, 0], [0, 3], [0, 3]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    split = SplitData(audio, visual, labels)
    model = constant_model(winner=1)
    protos = train_prototypes(model, split)
    assert torch.allclose(protos[0], torch.tensor([[0.05, 0], [1.05, 0], [2.05, 0]]))
    assert torch.allclose(protos[1], torch.tensor([[0.0, 0], [0, 0], [0, 3]]))
    out = evaluate(model, split, prototypes=protos)
    assert out["accuracy"] == pytest.approx(2 / 6)  # always class 1
    assert out["audio_accuracy"] == pytest.approx(1.0)
    # visual: classes 0 and 1 share a prototype, the tie goes to the first (class 0): 4 of 6 right
    assert out["visual_accuracy"] == pytest.approx(4 / 6)
    assert "audio_accuracy" not in evaluate(model, split)  # no prototypes: the fused figures only


def test_per_segment_modalities_are_scored_on_event_segments_only():
    # two videos of three segments; class 2 is the background; audio = (label, 0), so the audio prototype
    # classifier is right on every event segment; background segments carry (5, 5) and are not scored
    labels = torch.tensor([[0, 2, 1], [2, 1, 0]])
    audio = torch.stack([labels.float(), torch.zeros(2, 3)], -1)
    audio[labels == 2] = 5.0
    split = SplitData(audio, audio.clone(), labels)
    model = constant_model(winner=2, background=2)
    assert model.prototype_classes == 2
    out = evaluate(model, split, prototypes=train_prototypes(model, split))
    assert out["accuracy"] == pytest.approx(2 / 6)  # always background: right on the 2 background segments
    assert out["audio_accuracy"] == 1.0 and out["visual_accuracy"] == 1.0
    rep = report(model, split, ["a", "b", "background"], train=split)
    assert rep["always_background"] == pytest.approx(2 / 6)
    assert rep["rows"] == 2 and rep["confusion"][0] == [0, 0, 2]  # both class-0 segments called background
    assert rep["audio_accuracy"] == 1.0


def test_data_params_and_classes_must_match_the_checkpoint():
    ckpt = {"data_params": {"frame_size": 224, "n_fft": 512}, "data_meta": {"classes": ["a", "b"]}}
    check_data_params(ckpt, {"frame_size": 224, "n_fft": 512, "classes": ["a", "b"]}, "x.h5")
    check_data_params(ckpt, {"classes": ["a", "b"]}, "x.h5")  # a features file has no frame size
    with pytest.raises(
        ValueError, match=r"^x\.h5: frame_size = 112, but the model was trained on frame_size = 224$"
    ):
        check_data_params(ckpt, {"frame_size": 112, "classes": ["a", "b"]}, "x.h5")
    with pytest.raises(ValueError, match="class list differs"):
        check_data_params(ckpt, {"classes": ["b", "a"]}, "x.h5")


def test_evaluate_imports_neither_the_training_loop_nor_a_balancer():
    code = (
        "import sys, avel.engine.evaluate\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('avel.engine.train', 'avel.balance')))\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
