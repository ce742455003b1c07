"""BalanceBenchmark's objective-level methods trained for real: AVEL on features (every method, resumed
mid-run to the same metrics), the ResNet18 clip classifier end to end, and the one-line refusals."""

from __future__ import annotations

import json

import pytest
from test_train import _cfg, _metrics

from avel.engine.train import check_applicable, run_training

# The full suite only: processes, grids, kills and CLI round trips (the fast tier: -m 'not slow').
pytestmark = pytest.mark.slow

METHODS = ["mmcosine", "umt", "ume", "mbsd", "cml", "mmpareto", "lfm"]


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def teachers(features_h5, tmp_path_factory):
    """UMT's teachers: audio-only and visual-only AVEL runs on the features file."""
    root = tmp_path_factory.mktemp("teachers")
    for modality in ("audio", "visual"):
        run_training(_cfg(features_h5, root / modality, epochs=2, modality=modality), log=quiet)
    return {
        "umt_teacher_audio": str(root / "audio" / "best.pt"),
        "umt_teacher_visual": str(root / "visual" / "best.pt"),
    }


def _options(method: str, teachers: dict) -> dict:
    return teachers if method == "umt" else {}


@pytest.mark.parametrize("method", METHODS)
def test_avel_features_run_trains_and_resumes_exactly(method, features_h5, teachers, tmp_path):
    kw = {"balance": method, "modality_eval_every": 1, **_options(method, teachers)}
    res = run_training(_cfg(features_h5, tmp_path / "full", epochs=3, **kw), log=quiet)
    rows = _metrics(tmp_path / "full")
    assert rows[-1]["loss"] < rows[0]["loss"]  # it learns
    assert 0.0 <= res["test_accuracy"] <= 1.0 and (tmp_path / "full" / "results.json").is_file()
    run_training(_cfg(features_h5, tmp_path / "cut", epochs=2, **kw), log=quiet)
    msgs: list[str] = []
    run_training(_cfg(features_h5, tmp_path / "cut", epochs=3, **kw), log=msgs.append)
    assert any("resuming" in m and "epoch 2" in m for m in msgs)
    assert _metrics(tmp_path / "cut") == rows  # the same metrics as the uninterrupted run
    cut = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert cut["test_accuracy"] == res["test_accuracy"]


@pytest.mark.parametrize(
    ("method", "fusion", "reason"),
    [
        ("mmcosine", "film", "MMCosine normalises each modality's share of a linear fused head"),
        ("mbsd", "gated", "MBSD needs split logits (concat or sum fusion); gated fusion does not split them"),
        ("lfm", "film", "LFM needs split logits"),
        ("mmpareto", "mmtm", None),
        ("ume", "mmtm", "UME trains the two encoders independently; mmtm fuses inside them"),
        ("umt", "concat", "UMT distils uni-modal teachers: set umt_teacher_audio"),
        ("cml", "film", None),
    ],
)
def test_resnet18_applicability(method, fusion, reason):
    from avel.engine.config import load_config

    why = check_applicable(load_config(None, {"model": "resnet18", "fusion": fusion, "balance": method}))
    assert why == reason if reason is None else why.startswith(reason)


@pytest.mark.slow  # a real epoch of ResNet18: the fast tier skips it
@pytest.mark.parametrize("method", ["mmcosine", "mmpareto", "lfm"])  # head, gradient, Hessian edits
def test_resnet18_end_to_end_epoch(method, tiny_h5, tmp_path):
    cfg = _cfg(tiny_h5, tmp_path / "r18", model="resnet18", balance=method, epochs=1, width=8, batch_size=4)
    res = run_training(cfg, log=quiet)
    rows = _metrics(tmp_path / "r18")
    assert len(rows) == 1 and rows[0]["loss"] == rows[0]["loss"]  # finite, not NaN
    assert 0.0 <= res["test_accuracy"] <= 1.0


def test_umt_refuses_a_teacher_of_the_other_modality(features_h5, teachers, tmp_path):
    swapped = {
        "umt_teacher_audio": teachers["umt_teacher_visual"],
        "umt_teacher_visual": teachers["umt_teacher_audio"],
    }
    with pytest.raises(
        ValueError, match=r"best.pt: umt_teacher_audio was trained with --modality visual, not audio$"
    ):
        run_training(_cfg(features_h5, tmp_path / "swapped", balance="umt", epochs=1, **swapped), log=quiet)


@pytest.mark.slow  # a real epoch of end-to-end AVEL: the fast tier skips it
@pytest.mark.parametrize("method", ["mmpareto", "lfm"])  # gradient edits / Hessian through CNN + LSTM
def test_avel_end_to_end_epoch(method, tiny_h5, tmp_path):
    res = run_training(
        _cfg(tiny_h5, tmp_path / "e2e", balance=method, epochs=1, width=8, batch_size=4), log=quiet
    )
    rows = _metrics(tmp_path / "e2e")
    assert len(rows) == 1 and rows[0]["loss"] == rows[0]["loss"] and 0.0 <= res["test_accuracy"] <= 1.0
