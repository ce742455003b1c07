"""The released protocol on the clip classifiers (ResNet18, CREMA-D form), as PMR's released CREMA-D script
runs it (main_Prototype_grad.py --dataset CREMAD): prototypes from a fresh tenth of the shuffled **train**
loader every epoch (L539/L557, L429), test accuracy every epoch with no validation split, the best test epoch
reported and labelled. Real training steps of a narrow ResNet18 on the tiny embedded AVE-form clips."""

from __future__ import annotations

import json

import pytest
import torch

from avel.balance import pmr as pmr_mod
from avel.balance.pmr import PMR, released_rows, released_source
from avel.data.splits import SplitData
from avel.engine import train as train_mod
from avel.engine.config import load_config, validate
from avel.experiments.ablate import run_grid
from avel.families import build_model, load_splits

RELEASED = {"protocol": "released", "pmr_subset": "0.1", "pmr_redraw": True}


def clip_cfg(path, out, **changes):
    base = {
        "data": str(path),
        "model": "resnet18",
        "fusion": "concat",
        "width": 8,
        "frames": 2,
        "epochs": 2,
        "batch_size": 8,
        "lr": 1e-2,
        "device": "cpu",
        "progress": False,
        "measures": False,
        "out": str(out),
    }
    return load_config(None, {**base, **changes})


def test_the_released_source_per_family():
    assert released_source("cgmnist") == "test" and released_source("resnet18") == "train"


def test_released_on_resnet18_takes_a_fresh_tenth_of_train(tiny_h5, tmp_path):
    with pytest.raises(ValueError, match="as the released CREMA-D script: a fresh tenth of train"):
        validate(clip_cfg(tiny_h5, tmp_path, balance="pmr", protocol="released", pmr_subset="test"))
    with pytest.raises(ValueError, match=r"--set pmr_subset=0.1 --set pmr_redraw=true\)$"):
        validate(clip_cfg(tiny_h5, tmp_path, balance="pmr", protocol="released"))  # fixed subset
    validate(clip_cfg(tiny_h5, tmp_path, balance="pmr", **RELEASED))
    validate(clip_cfg(tiny_h5, tmp_path, balance="pmr", pmr_redraw=True))  # train rows: clean too
    with pytest.raises(ValueError, match="only with protocol = 'released'"):
        validate(clip_cfg(tiny_h5, tmp_path, balance="pmr", pmr_subset="test"))


def test_redrawn_prototypes_are_class_means_of_a_fresh_tenth_of_train(tiny_h5):
    torch.manual_seed(0)
    data = load_splits(tiny_h5, family="resnet18", frames=2)
    model = build_model("resnet18", "concat", input_mode="e2e", num_classes=data.meta["num_classes"], width=8)
    pmr = PMR(subset="0.1", redraw=True, seed=3)
    pmr.on_epoch_start(model, data, epoch=2)
    rows = released_rows(len(data.train), 3, 2)
    assert len(rows) == max(1, round(0.1 * len(data.train))) and torch.equal(pmr.indices, rows)
    assert not torch.equal(rows, released_rows(len(data.train), 3, 3))  # redrawn every epoch
    model.eval()
    with torch.no_grad():  # Eq. 6 by hand over those train rows (evaluation frames, as the release's eval)
        batches = list(data.train.batches(64, indices=rows, train=False))
        outs = [model(b.audio, b.visual) for b in batches]
    labels = torch.cat([b.labels for b in batches])
    z_a, z_v = torch.cat([o.z_audio for o in outs]), torch.cat([o.z_visual for o in outs])
    for k in labels.unique().tolist():
        mine = labels == k
        assert torch.allclose(pmr.prototypes[0][k], z_a[mine].mean(0), atol=1e-5)
        assert torch.allclose(pmr.prototypes[1][k], z_v[mine].mean(0), atol=1e-5)
    fixed = PMR(subset="0.1", seed=3)  # the default: one fixed subset, the same every epoch
    fixed.on_epoch_start(model, data, epoch=2)
    again = fixed.indices.clone()
    fixed.on_epoch_start(model, data, epoch=3)
    assert torch.equal(fixed.indices, again)


def spy(monkeypatch) -> dict:
    """Every split read (id, final evaluation begun?) and every split prototypes were computed from."""
    seen: dict = {"reads": [], "protos": [], "final": False, "data": None}
    batch, finish, load = SplitData.batch, train_mod._finish, train_mod.load_splits
    pmr_protos, train_protos = pmr_mod.compute_prototypes, train_mod.compute_prototypes

    def batch_spy(self, *a, **k):
        seen["reads"].append((id(self), seen["final"]))
        return batch(self, *a, **k)

    def finish_spy(*a, **k):
        seen["final"] = True
        return finish(*a, **k)

    def load_spy(*a, **k):
        seen["data"] = load(*a, **k)
        return seen["data"]

    def protos_spy(original):
        def inner(model, split, *a, **k):
            if not seen["final"]:
                seen["protos"].append(id(split))
            return original(model, split, *a, **k)

        return inner

    monkeypatch.setattr(SplitData, "batch", batch_spy)
    monkeypatch.setattr(train_mod, "_finish", finish_spy)
    monkeypatch.setattr(train_mod, "load_splits", load_spy)
    monkeypatch.setattr(pmr_mod, "compute_prototypes", protos_spy(pmr_protos))
    monkeypatch.setattr(train_mod, "compute_prototypes", protos_spy(train_protos))
    return seen


@pytest.mark.slow  # two short runs of ResNet18: the fast tier skips them
@pytest.mark.parametrize("protocol", ["clean", "released"])
def test_a_clip_run_reads_test_as_its_protocol_says(tiny_h5, tmp_path, monkeypatch, protocol):
    seen = spy(monkeypatch)
    logged: list[str] = []
    sets = RELEASED if protocol == "released" else {"pmr_redraw": True}
    cfg = clip_cfg(tiny_h5, tmp_path / protocol, balance="pmr", **sets)
    res = train_mod.run_training(cfg, log=logged.append)
    data = seen["data"]
    test_id, train_id = id(data.test), id(data.train)
    assert seen["protos"] and set(seen["protos"]) == {train_id}  # prototypes from train, never test
    lines = [json.loads(x) for x in (tmp_path / protocol / "metrics.jsonl").read_text().splitlines()]
    if protocol == "clean":
        assert all(final for split, final in seen["reads"] if split == test_id)  # test only at the end
        assert res["protocol"] == "clean" and res["selected_on"] == "val"
        assert not any(k.startswith("test_") for ln in lines for k in ln)
        return
    assert any(split == test_id and not final for split, final in seen["reads"])  # every epoch
    assert logged[0].startswith("RELEASED PROTOCOL: reads the test split while training")
    assert "fresh tenth of train every epoch, as the released CREMA-D script" in logged[0]
    assert all("test_accuracy" in ln and "test_visual_accuracy" in ln for ln in lines)
    best = max(lines, key=lambda ln: ln["test_accuracy"])
    assert res["reads_test_while_training"] is True and res["label"] == logged[0]
    assert res["test_accuracy"] == best["test_accuracy"] and res["best_test_epoch"] == best["epoch"]
    saved = json.loads((tmp_path / protocol / "results.json").read_text())
    assert saved["label"] == logged[0] and saved["protocol"] == "released"


def test_a_released_clip_grid_table_names_train_prototypes(tiny_h5, tmp_path):
    kw = {"seeds": 1, "model": "resnet18", "dry_run": True, "log": lambda s: None}
    sets = {"data": str(tiny_h5), **RELEASED}
    table = run_grid("fusions", tmp_path / "rel", overrides=sets, **kw).markdown()
    assert "RELEASED PROTOCOL: reads the test split while training" in table
    assert "PMR's prototypes from a fresh tenth of train every epoch" in table and "of test" not in table
