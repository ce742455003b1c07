"""Checkpoints written before the model blocks moved to encoders / temporal / fusion load into today's
models, compute the same logits, and evaluate.

``tests/data/pre_move_*.pt`` were written by ``tests/data/make_pre_move.py`` with the code of commit 5a4d50f
(before the move): tiny models (ResNet18 width 1, LSTM hidden 4, float16 weights) of every block that moved
(the end-to-end AVEL encoders and attention, the clip classifier's encoders, DMRN, IPRM's heads), and the
logits that code computed on fixed random inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avel.checkpoint import model_from_checkpoint
from avel.evaluate import evaluate_checkpoint

DATA = Path(__file__).parent / "data"
NAMES = ["avel_e2e_concat", "resnet18_concat", "avel_features_dmrn_iprm"]


@pytest.mark.parametrize("name", NAMES)
def test_pre_move_checkpoint_gives_the_same_logits(name):
    model, ckpt = model_from_checkpoint(DATA / f"pre_move_{name}.pt")
    probe = ckpt["probe"]
    g = torch.Generator().manual_seed(probe["seed"])
    audio, visual = torch.randn(probe["audio"], generator=g), torch.randn(probe["visual"], generator=g)
    with torch.no_grad():
        logits = model(audio, visual).logits
    torch.testing.assert_close(logits, probe["logits"], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(logits, torch.zeros_like(logits))


def test_pre_move_checkpoints_evaluate(tiny_h5, features_h5, tmp_path):
    for name, data in (
        ("avel_e2e_concat", tiny_h5),
        ("resnet18_concat", tiny_h5),
        ("avel_features_dmrn_iprm", features_h5),
    ):
        text = evaluate_checkpoint(DATA / f"pre_move_{name}.pt", data, out_dir=tmp_path / name, device="cpu")
        rep = json.loads((tmp_path / name / "eval.json").read_text())
        assert rep["rows"] > 0 and 0.0 <= rep["accuracy"] <= 1.0
        assert f"{100 * rep['accuracy']:7.2f}%" in text
