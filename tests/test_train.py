"""Training for real on CPU: AVEL on a features file and end to end, selection on val, resume, determinism."""

from __future__ import annotations

import json

import pytest
import torch

from avel.balance import build_balancer
from avel.engine.checkpoint import model_from_kwargs
from avel.engine.config import bf16_supported, load_config
from avel.engine.train import build_optimizer, model_kwargs, run_training, train_one_epoch
from avel.families import load_splits

TIMING = {"time_s", "train_time_s", "prototype_time_s", "samples_per_s"}


def _metrics(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _cfg(data, out, **kw):
    base = {
        "data": str(data),
        "model": "avel",
        "fusion": "concat",
        "epochs": 3,
        "batch_size": 8,
        "lr": 3e-3,
        "device": "cpu",
        "progress": False,
        "measures": False,  # avel.engine.measures on: tests/test_measures.py
        "out": str(out),
    }
    return load_config(None, {**base, **kw})


def test_avel_features_run_beats_always_background(features_h5, tmp_path):
    res = run_training(_cfg(features_h5, tmp_path / "run", epochs=6), log=lambda s: None)
    assert res["val_accuracy"] > 0.5
    assert res["test_accuracy"] > res["test_always_background"] + 0.2
    run = tmp_path / "run"
    for name in ("best.pt", "last.pt", "metrics.jsonl", "results.json", "config.toml"):
        assert (run / name).is_file(), name
    lines = _metrics(run)
    assert [r["epoch"] for r in lines] == list(range(6))
    assert {"loss", "val_accuracy", "val_audio_accuracy", "val_visual_accuracy"} <= set(lines[-1])
    assert all("val_audio_accuracy" not in r for r in lines[:-1])  # modality_eval_every = 0: last only
    assert 0 <= res["test_audio_accuracy"] <= 1 and 0 <= res["test_visual_accuracy"] <= 1


def test_modality_accuracies_every_n_epochs(features_h5, tmp_path):
    run_training(_cfg(features_h5, tmp_path / "run", epochs=4, modality_eval_every=2), log=lambda s: None)
    lines = _metrics(tmp_path / "run")
    assert ["val_audio_accuracy" in r for r in lines] == [True, False, True, True]  # 0, 2, last
    assert all("val_accuracy" in r for r in lines)


@pytest.mark.parametrize("fusion,balance", [("concat", "none"), ("dmrn", "pmr")])
def test_same_seed_same_metrics(features_h5, tmp_path, fusion, balance):
    a = run_training(
        _cfg(features_h5, tmp_path / "a", fusion=fusion, balance=balance, epochs=2), log=lambda s: None
    )
    b = run_training(
        _cfg(features_h5, tmp_path / "b", fusion=fusion, balance=balance, epochs=2), log=lambda s: None
    )
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    assert a["test_accuracy"] == b["test_accuracy"]


def test_resume_gives_the_same_final_metrics(features_h5, tmp_path):
    quiet = lambda s: None  # noqa: E731
    kw = {"balance": "pmr", "modality_eval_every": 1}  # every line has the same keys, cut or not
    run_training(_cfg(features_h5, tmp_path / "full", epochs=4, **kw), log=quiet)
    # an interrupted run: 2 epochs done, then the same command with the full epoch count resumes it
    run_training(_cfg(features_h5, tmp_path / "cut", epochs=2, **kw), log=quiet)
    msgs: list[str] = []
    run_training(_cfg(features_h5, tmp_path / "cut", epochs=4, **kw), log=msgs.append)
    assert any("resuming" in m and "epoch 2" in m for m in msgs)
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "cut")


def test_resume_refuses_a_different_config(features_h5, tmp_path):
    run_training(_cfg(features_h5, tmp_path / "r", epochs=1), log=lambda s: None)
    with pytest.raises(ValueError, match=r"different configuration \(lr: 0.003 -> 0.1\)"):
        run_training(_cfg(features_h5, tmp_path / "r", epochs=2, lr=0.1), log=lambda s: None)


def test_resume_a_run_from_before_a_config_key_existed(features_h5, tmp_path):
    from avel.engine.checkpoint import load_checkpoint, save_checkpoint

    run_training(_cfg(features_h5, tmp_path / "old", epochs=1), log=lambda s: None)
    ckpt = load_checkpoint(tmp_path / "old" / "last.pt")
    del ckpt["config"]["augment_audio"]  # as written before the key was added; its default applies
    save_checkpoint(tmp_path / "old" / "last.pt", ckpt)
    msgs: list[str] = []
    run_training(_cfg(features_h5, tmp_path / "old", epochs=2), log=msgs.append)
    assert any("resuming" in m and "epoch 1" in m for m in msgs)
    with pytest.raises(ValueError, match=r"different configuration \(augment_audio: False -> True\)"):
        run_training(_cfg(features_h5, tmp_path / "old", epochs=3, augment_audio=True), log=lambda s: None)


def test_pmr_logs_rho_and_coefficients(features_h5, tmp_path):
    run_training(_cfg(features_h5, tmp_path / "p", balance="pmr", epochs=2), log=lambda s: None)
    last = _metrics(tmp_path / "p")[-1]
    assert {"rho", "beta", "gamma"} <= set(last)
    assert last["rho"] > 0 and 0 <= last["beta"] <= 1 and 0 <= last["gamma"] <= 1


def test_end_to_end_avel_on_real_mp4s(tiny_h5, tmp_path):
    res = run_training(_cfg(tiny_h5, tmp_path / "e2e", epochs=2, width=8, batch_size=4), log=lambda s: None)
    assert 0.0 <= res["test_accuracy"] <= 1.0
    assert (tmp_path / "e2e" / "best.pt").is_file()


def test_resnet18_classifier_one_epoch(tiny_h5, tmp_path):
    res = run_training(
        _cfg(
            tiny_h5,
            tmp_path / "r18",
            model="resnet18",
            fusion="concat",
            balance="pmr",
            epochs=1,
            width=8,
            batch_size=4,
            frames=2,
        ),
        log=lambda s: None,
    )
    assert 0.0 <= res["test_accuracy"] <= 1.0


def test_amp_on_a_bf16_cpu_trains_in_bf16_close_to_fp32(features_h5):
    if not bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no native bf16")
    data = load_splits(features_h5, splits=("train",))
    losses = {}
    for amp in (False, True):
        cfg = _cfg(features_h5, "unused", amp=amp)
        torch.manual_seed(0)
        model = model_from_kwargs(model_kwargs(cfg, data))
        opt = build_optimizer(cfg, model.parameters())
        gen = torch.Generator().manual_seed(0)
        losses[amp] = train_one_epoch(model, build_balancer("none"), data.train, opt, cfg, gen)["loss"]
    assert losses[True] != losses[False]  # bf16 matmuls round differently: autocast was on
    assert losses[True] == pytest.approx(losses[False], rel=2e-2)
