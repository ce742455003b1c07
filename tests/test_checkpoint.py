"""Checkpoints rebuild their model from their own record: those written before the model blocks moved to
encoders / temporal / fusion, before the balancer registry and before the model-family registry load,
compute the same logits and evaluate; an IPRM checkpoint (its heads in ``model_kwargs``) evaluates,
predicts and extracts; predict cuts a short clip with the trained width.

``tests/data/pre_move_*.pt`` were written by ``tests/data/make_pre_move.py`` with the code of commit 5a4d50f
(before the move): tiny models (ResNet18 width 1, LSTM hidden 4, float16 weights) of every block that moved
(the end-to-end AVEL encoders and attention, the clip classifier's encoders, DMRN, IPRM's heads), and the
logits that code computed on fixed random inputs. ``pre_registry_resnet18_gblend.pt`` (make_pre_registry.py:
flat balancer keys) and ``pre_families_cgmnist_mmtm.pt`` (make_pre_families.py, run on main 2ed5741: before
the model-family registry) are the same kind of record.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from avel.balance.gblend import GBlendModel
from avel.balance.iprm import IPRMModel
from avel.data.splits import segment_window
from avel.engine.checkpoint import config_of, load_checkpoint, model_from_checkpoint
from avel.engine.config import load_config
from avel.engine.train import run_training
from avel.preprocessing.pipeline import decode_clip
from avel.synth.ave import AAC_PRIMING, write_video
from avel.synth.cgmnist import CGMNISTConfig, make_cgmnist
from avel.tools.evaluate import evaluate_checkpoint
from avel.tools.extract import extract_features
from avel.tools.predict import clip_inputs, predict_video

# The full suite only: processes, grids, kills and CLI round trips (the fast tier: -m 'not slow').
pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"
NAMES = ["avel_e2e_concat", "resnet18_concat", "avel_features_dmrn_iprm"]


@pytest.mark.parametrize("name", NAMES)
def test_pre_move_checkpoint_gives_the_same_logits(name):
    model, ckpt = model_from_checkpoint(DATA / f"pre_move_{name}.pt")
    logits = _assert_probe_logits(model, ckpt["probe"])
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


def _assert_probe_logits(model, probe: dict) -> torch.Tensor:
    """The stored probe's inputs (drawn again from its seed) give the stored logits; returns them."""
    g = torch.Generator().manual_seed(probe["seed"])
    first, second = torch.randn(probe["audio"], generator=g), torch.randn(probe["visual"], generator=g)
    with torch.no_grad():
        logits = model(first, second).logits
    torch.testing.assert_close(logits, probe["logits"], rtol=1e-4, atol=1e-5)
    return logits


def test_pre_registry_checkpoint_gives_the_same_logits_and_options():
    # written before the balancer registry (tests/data/make_pre_registry.py): flat config keys, G-Blend with
    # predict = mean (its logits: the mean of the fused and uni-modal heads), options of other tables too
    model, ckpt = model_from_checkpoint(DATA / "pre_registry_resnet18_gblend.pt")
    _assert_probe_logits(model, ckpt["probe"])
    assert isinstance(model, GBlendModel) and model.predict == "mean"
    cfg = config_of(ckpt, "pre_registry")
    assert (cfg.balance, cfg.balancers["gblend"].holdout, cfg.balancers["gblend"].super_epoch) == (
        "gblend",
        0.2,
        2,
    )
    assert (cfg.balancers["pmr"].alpha, cfg.balancers["ogm"].warmup) == (1.5, 3)


def test_pre_families_cgmnist_checkpoint_gives_the_same_logits_and_evaluates(tmp_path):
    # written before the model-family registry (tests/data/make_pre_families.py, main 2ed5741): a CG-MNIST
    # model with MMTM between its staged 4-conv encoders (released gate and head), rebuilt now through the
    # cgmnist family; the same logits (a "paper" gate would differ by ~1), its config and its evaluation
    model, ckpt = model_from_checkpoint(DATA / "pre_families_cgmnist_mmtm.pt")
    logits = _assert_probe_logits(model, ckpt["probe"])
    assert model.family == "cgmnist" and model.fusion_name == "mmtm" and logits.shape == (2, 10)
    assert ckpt["balancer"]["prototypes"][0].shape == (10, 512)  # PMR's state came along
    cfg = config_of(ckpt, "pre_families")
    assert (cfg.model, cfg.fusion, cfg.mmtm_gate, cfg.mmtm_head, cfg.balance) == (
        "cgmnist", "mmtm", "code", "mean", "pmr"
    )  # fmt: skip
    assert (cfg.balancers["pmr"].alpha, cfg.balancers["pmr"].subset) == (2.0, "0.1")
    data = tmp_path / "cg.h5"
    make_cgmnist(data, CGMNISTConfig(train=100, test=40, seed=3))  # the generator's set
    evaluate_checkpoint(DATA / "pre_families_cgmnist_mmtm.pt", data, out_dir=tmp_path / "eval", device="cpu")
    rep = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert rep["rows"] == 40 and 0.0 <= rep["accuracy"] <= 1.0


@pytest.fixture(scope="module")
def iprm_run(tiny_h5, tmp_path_factory) -> Path:
    """End-to-end AVEL trained with IPRM through ``run_training`` (one epoch, ResNet18 width 8)."""
    out = tmp_path_factory.mktemp("iprm") / "run"
    cfg = load_config(None, {"data": str(tiny_h5), "model": "avel", "fusion": "concat", "balance": "iprm",
                             "epochs": 1, "batch_size": 8, "width": 8, "optimizer": "adam", "device": "cpu",
                             "progress": False, "out": str(out)})  # fmt: skip
    run_training(cfg, log=lambda s: None)
    return out


def test_iprm_checkpoint_evaluates_predicts_and_extracts(iprm_run, tiny_h5, tiny_ave, tmp_path):
    best = iprm_run / "best.pt"
    assert load_checkpoint(best)["model_kwargs"]["balancer"] == "iprm"  # the heads are part of the record
    model, _ = model_from_checkpoint(best)
    assert isinstance(model, IPRMModel) and model.steps.item() > 0 and model.lam.item() != 0.5
    evaluate_checkpoint(best, tiny_h5, out_dir=tmp_path / "eval", device="cpu")
    rep = json.loads((tmp_path / "eval" / "eval.json").read_text())
    results = json.loads((iprm_run / "results.json").read_text())
    assert rep["accuracy"] == pytest.approx(results["test_accuracy"])
    video = sorted((tiny_ave / "AVE").glob("*.mp4"))[0]
    pred = predict_video(best, video)
    assert len(pred["segments"]) == 10 and all(0 < s["confidence"] <= 1 for s in pred["segments"])
    feats = extract_features(best, tiny_h5, tmp_path / "feats.h5", device="cpu")
    with h5py.File(feats, "r") as f, h5py.File(tiny_h5, "r") as src:
        assert f["audio"].shape == (len(src["video_id"]), 10, 64)  # 8·width per second
        assert f["visual"].shape[:2] == (len(src["video_id"]), 10) and f["visual"].shape[-1] == 64


def test_predict_a_one_second_clip_with_the_trained_segment_width(iprm_run, tiny_h5, tmp_path):
    """A 1 s clip alone gives a narrower second (98 columns) than the 10 s training clips: predict uses the
    width stored in the checkpoint, repeating the clip's last spectrogram column."""
    ckpt = load_checkpoint(iprm_run / "best.pt")
    with h5py.File(tiny_h5, "r") as f:
        trained = segment_window(f["segment_columns"][()])
    assert ckpt["data_meta"]["segment_width"] == trained
    rng = np.random.default_rng(0)
    video = tmp_path / "one_second.mp4"
    frames = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    wave = 0.3 * np.sin(2 * np.pi * 440 * np.arange(16000 + AAC_PRIMING) / 16000)[None]
    write_video(video, frames, fps=4.0, audio=wave.astype(np.float32))
    params = ckpt["data_params"]
    frames, spec, columns, _ = decode_clip(video, params["frame_size"], params["frames_per_segment"])
    assert len(columns) == 2 and segment_window(columns) == 98 < trained
    audio, visual = clip_inputs(frames, spec, columns, trained, "cpu")
    assert audio.shape == (1, 1, 1, spec.shape[0], trained) and visual.shape[:2] == (1, 1)
    assert torch.equal(audio[0, 0, 0, :, -1], torch.from_numpy(spec[:, -1]))
    pred = predict_video(iprm_run / "best.pt", video)
    assert [s["second"] for s in pred["segments"]] == [0]
