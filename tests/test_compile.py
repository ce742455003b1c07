"""``compile = true`` (``--compile``): the encoders under torch.compile for the training steps
(``avel.engine.compiling``). The cheap checks (refusals, what stays eager, state_dict keys) run here; the
compiled training runs, which build C++ kernels with inductor, run ``avel train`` in subprocesses in the
slow tier (a crash in a compiled kernel fails one test, not the suite): the same losses and weights as
eager up to float rounding on real training steps, the checkpoint's keys the eager model's, resume, and
one warning line then eager training where the compiler cannot run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avel.cli import train_overrides
from avel.engine.compiling import compile_encoders, compile_targets
from avel.engine.config import TrainConfig, validate
from avel.engine.train import probe_model
from avel.families import build_model

TOLERANCE = 1e-4  # relative, on the epoch's mean loss (measured: 5e-6)
# each weight and BN statistic: |compiled - eager| <= this share of how far eager moved it from its initial
# value (fused kernels sum in another order; after two SGD steps measured <= 0.06 of the update)
UPDATE_TOLERANCE = 0.1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"encoder_threads": 2}, "compile = true runs the encoders on one thread: set encoder_threads = 1"),
        ({"fusion": "mmtm"}, "--fusion mmtm fuses inside them"),
        ({"balance": "lfm"}, "compile = true: lfm takes torch.autograd.grad of its losses"),
        ({"balance": "mmpareto"}, "compile = true: mmpareto takes torch.autograd.grad of its losses"),
    ],
)
def test_compile_is_refused_where_it_cannot_work(changes, message):
    cfg = TrainConfig(data="x.h5", model="resnet18", compile=True, **changes)
    with pytest.raises(ValueError, match=message):
        validate(cfg)
    validate(TrainConfig(data="x.h5", model="resnet18", **changes))  # without compile: accepted


def test_a_model_without_encoders_to_compile_is_refused():
    model = probe_model(TrainConfig(model="avel"))  # AVEL on features: no encoder trains
    with pytest.raises(ValueError, match="compile = true compiles the model's encoders, and this model"):
        compile_targets(model)


def test_compile_flag_is_the_config_key():
    options = {k: None for k in ("config", "set_", "nproc")} | {"pmr": False, "balance": None}
    assert train_overrides({**options, "compile_": True})["compile"] is True
    assert "compile" not in train_overrides({**options, "compile_": None})


@pytest.mark.slow  # imports dynamo and inductor (7.6 s on the shared machine): the fast tier's budget
def test_compiled_encoders_keep_the_state_dict_and_run_eagerly_outside_training_steps():
    """In place: the same state_dict keys and tensors; an evaluation pass (eval mode, no gradients)
    runs the eager forward, so it compiles nothing and gives the eager outputs bit for bit."""
    torch.manual_seed(0)
    model = build_model("resnet18", "concat", input_mode="e2e", num_classes=4, width=8).eval()
    audio, visual = torch.randn(2, 1, 64, 40), torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        before = model(audio, visual).logits
    keys = list(model.state_dict())
    targets = compile_encoders(model)
    assert targets == [model.audio_branch, model.visual_branch]
    assert list(model.state_dict()) == keys
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    with torch.no_grad():
        assert torch.equal(model(audio, visual).logits, before)
    model.train()
    with torch.no_grad():  # training mode without gradients (a balancer's extra pass): eager too
        model(audio, visual)
    assert counters["stats"]["unique_graphs"] == graphs


# ------------------------------------------------------------------------- compiled runs (subprocesses)


def _train(h5: Path, out: Path, *extra: str, env: dict[str, str] | None = None, epochs: int = 1):
    """``avel train`` of a width-8 ResNet18 concat (3 frames, batch 8: full batches and a last partial
    one) in a subprocess on one thread; returns (the process, the metrics lines)."""
    args = [sys.executable, "-m", "avel", "train", str(h5), "--model", "resnet18", "--width", "8"]
    args += ["--frames", "3", "--batch-size", "8", "--epochs", str(epochs), "--optimizer", "sgd"]
    args += ["--lr", "0.01", "--device", "cpu", "--no-progress", "--set", "measures=false"]
    args += ["--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_COMPILE_THREADS": "1", **(env or {})}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return proc, lines


def _state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=False)["model"]


@pytest.mark.slow
def test_compiled_training_is_eager_training_up_to_rounding(clips_h5, tmp_path):
    """One epoch with ``--compile`` against eager from the same seed: the epoch's loss within
    ``TOLERANCE``, every weight and BN statistic within ``UPDATE_TOLERANCE`` of its update, the
    checkpoint's keys the eager model's; an eager run resumes with compile on (a resumable change) and
    its compiled epoch's loss is the straight eager run's."""
    _, eager = _train(clips_h5, tmp_path / "eager")
    proc, compiled = _train(clips_h5, tmp_path / "compiled", "--compile")
    assert "warning" not in proc.stdout + proc.stderr
    assert compiled[0]["loss"] == pytest.approx(eager[0]["loss"], rel=TOLERANCE)
    a, b = _state(tmp_path / "eager"), _state(tmp_path / "compiled")
    assert list(a) == list(b)
    assert not any(k.startswith("_orig_mod") or "._orig_mod." in k for k in b)
    torch.manual_seed(0)  # the run's initial weights (seed 0)
    initial = build_model("resnet18", "concat", input_mode="e2e", num_classes=6, width=8).state_dict()
    for k in a:
        if not a[k].is_floating_point():  # num_batches_tracked
            assert torch.equal(a[k], b[k]), k
            continue
        moved = float((a[k] - initial[k]).abs().max())
        assert moved > 0, k  # trained (BN statistics included)
        assert float((a[k] - b[k]).abs().max()) <= UPDATE_TOLERANCE * moved + 1e-7, k
    proc, resumed = _train(clips_h5, tmp_path / "eager", "--compile", epochs=2)  # epoch 1 compiled
    assert "resuming" in proc.stdout
    assert [ln["epoch"] for ln in resumed] == [0, 1]
    assert resumed[0] == eager[0]
    _, straight = _train(clips_h5, tmp_path / "eager-2", epochs=2)  # two eager epochs without a stop
    assert resumed[1]["loss"] == pytest.approx(straight[1]["loss"], rel=1e-3)


@pytest.mark.slow
def test_a_compiler_that_cannot_run_falls_back_to_eager_with_one_warning(clips_h5, tmp_path):
    """No working C++ compiler for inductor (``CXX`` names none; a fresh inductor cache, so nothing is
    loaded from an earlier build): one warning line, exit 0, and the eager run's numbers bit for bit (the
    failure comes before the first step computes anything)."""
    _, eager = _train(clips_h5, tmp_path / "eager")
    env = {"CXX": str(tmp_path / "no-such-g++"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    proc, fallback = _train(clips_h5, tmp_path / "fallback", "--compile", env=env)
    warnings = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "compile = true" in ln]
    assert len(warnings) == 1, proc.stdout + proc.stderr
    assert warnings[0].startswith("warning: compile = true: torch.compile failed here (")
    assert warnings[0].endswith("); training eagerly")
    assert fallback[0]["loss"] == eager[0]["loss"]
    a, b = _state(tmp_path / "eager"), _state(tmp_path / "fallback")
    assert all(torch.equal(a[k], b[k]) for k in a)
