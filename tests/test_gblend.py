"""Gradient-Blending: weights against a hand computation, the held-out split, the blended loss, real training
steps through ``run_training``, resume and checkpoint rebuild."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from toy_models import ConcatModel

from avel.balance import build_balancer
from avel.balance.gblend import GBlendModel, GradientBlending, blend_weights, head_losses, holdout_split
from avel.data.splits import Batch, DataSplits, SplitData
from avel.engine.checkpoint import model_from_checkpoint
from avel.engine.config import load_config
from avel.engine.train import run_training


def test_weights_by_hand():
    # heads (audio, visual, fused); losses at the start (N) and end (N+n) of a super-epoch
    t0, v0 = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([1.2, 1.5, 1.3])
    t1, v1 = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([1.0, 1.4, 0.9])
    w, gain, over = blend_weights(t0, v0, t1, v1)
    # G = V_N − V_{N+n} = (0.2, 0.1, 0.4); O = (V−T)_{N+n} − (V−T)_N = (0.5−0.2, 1.0−0.5, 0.6−0.3)
    assert gain.tolist() == pytest.approx([0.2, 0.1, 0.4])
    assert over.tolist() == pytest.approx([0.3, 0.5, 0.3])
    raw = [0.2 / 0.09, 0.1 / 0.25, 0.4 / 0.09]  # G / O²
    assert w.tolist() == pytest.approx([r / sum(raw) for r in raw], rel=1e-5)
    assert float(w.sum()) == pytest.approx(1.0)


def test_weights_zero_without_generalization_gain():
    t0, v0 = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([1.0, 1.0, 1.0])
    t1, v1 = torch.tensor([0.5, 0.5, 0.5]), torch.tensor([1.1, 0.8, 1.0])  # only the visual head gained
    w, _, _ = blend_weights(t0, v0, t1, v1)
    assert w.tolist() == pytest.approx([0.0, 1.0, 0.0])
    w, _, _ = blend_weights(t0, v0, t1, torch.tensor([1.1, 1.2, 1.0]))  # none gained: zeros (kept)
    assert w.tolist() == [0.0, 0.0, 0.0]


def test_holdout_is_a_seeded_disjoint_part_of_train():
    rows_t, rows_v = holdout_split(50, 0.1, seed=3)
    assert len(rows_v) == 5 and len(rows_t) == 45
    assert sorted(rows_t.tolist() + rows_v.tolist()) == list(range(50))
    assert torch.equal(holdout_split(50, 0.1, seed=3)[1], rows_v)
    assert not torch.equal(holdout_split(50, 0.1, seed=4)[1], rows_v)


def test_options_are_checked():
    with pytest.raises(
        ValueError, match=r"Gradient-Blending holdout: 0.0 is not allowed: must be in \(0, 1\)"
    ):
        build_balancer("gblend", holdout=0.0)
    with pytest.raises(
        ValueError, match='Gradient-Blending predict: "sum" is not allowed: must be one of fused, mean'
    ):
        build_balancer("gblend", predict="sum")


def _split(n: int = 20) -> SplitData:
    g = torch.Generator().manual_seed(0)
    return SplitData(torch.randn(n, 5, generator=g), torch.randn(n, 6, generator=g), torch.arange(n) % 3)


def test_blended_loss_by_hand():
    torch.manual_seed(0)
    gb = GradientBlending()
    model = gb.prepare_model(ConcatModel())
    assert isinstance(model, GBlendModel) and gb.prepare_model(model) is model
    gb.weights = torch.tensor([0.2, 0.5, 0.3])
    split = _split()
    batch = split.batch(torch.arange(8))
    result = gb.training_loss(model, batch)
    z_a, z_v = model.base.encode(batch.audio, batch.visual)
    heads = (model.head_audio(z_a), model.head_visual(z_v), model.base.fuse(z_a, z_v).logits)
    ce = [float(F.cross_entropy(x, batch.labels).detach()) for x in heads]
    assert float(result.loss.detach()) == pytest.approx(0.2 * ce[0] + 0.5 * ce[1] + 0.3 * ce[2], rel=1e-5)
    assert torch.allclose(result.output.logits, model.base.fuse(z_a, z_v).logits)  # predict = fused
    gb.weights = torch.tensor([0.0, 0.0, 1.0])  # new weights reach the next step (device copy refreshed)
    assert float(gb.training_loss(model, batch).loss.detach()) == pytest.approx(ce[2], rel=1e-5)
    mm = GBlendModel(model.base, predict="mean")
    mean = mm.fuse(z_a, z_v).logits
    ref = (model.base.fuse(z_a, z_v).logits + mm.head_audio(z_a) + mm.head_visual(z_v)) / 3
    assert torch.allclose(mean, ref, atol=1e-6)


def test_head_losses_and_reestimation_every_super_epoch():
    torch.manual_seed(0)
    gb = GradientBlending(super_epoch=2, holdout=0.25)
    model = gb.prepare_model(ConcatModel())
    split = _split()
    data = DataSplits(split, split, split)
    rows_t, rows_v = gb.split(split)
    assert set(gb.train_indices(split).tolist()) == set(rows_t.tolist())
    losses = head_losses(model, split, rows_v)
    batch: Batch = split.batch(rows_v)
    z_a, z_v = model.encode(batch.audio, batch.visual)
    ce_audio = F.cross_entropy(model.head_audio(z_a), batch.labels).detach()
    assert float(losses[0]) == pytest.approx(float(ce_audio))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    first = None
    for epoch in (0, 1):
        gb.on_epoch_start(model, data, epoch)
        first = first or gb.last
        assert gb.last is not None and gb.weights.tolist() == pytest.approx([1 / 3] * 3)
        for b in split.batches(4, indices=gb.train_indices(split)):
            opt.zero_grad()
            gb.training_loss(model, b).loss.backward()
            opt.step()
    assert gb.last is first  # epoch 1 is inside the super-epoch: nothing measured
    gb.on_epoch_start(model, data, 2)
    assert gb.last is not first and {"G_audio", "O_fused"} <= set(gb.epoch_logs())
    expected, _, _ = blend_weights(*first, *gb.last)
    kept = torch.full((3,), 1 / 3)  # no head gained: the weights stay
    assert torch.allclose(gb.weights, expected if float(expected.sum()) > 0 else kept)


def test_state_dict_round_trip():
    gb = GradientBlending(super_epoch=3)
    gb.weights = torch.tensor([0.1, 0.6, 0.3])
    gb.last = (torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.5, 2.5, 3.5]))
    gb.estimate, gb.epoch = {"G_audio": 0.1}, 7
    other = GradientBlending(super_epoch=3)
    other.load_state_dict(gb.state_dict())
    assert torch.equal(other.weights, gb.weights) and torch.equal(other.last[1], gb.last[1])
    assert other.epoch == 7 and other.estimate == {"G_audio": 0.1}


def _cfg(data, out, **kw):
    base = {
        "data": str(data),
        "model": "avel",
        "fusion": "concat",
        "balance": "gblend",
        "gblend_super_epoch": 1,
        "gblend_holdout": 0.2,
        "modality_eval_every": 1,  # the same metric lines whether or not an epoch was a run's last
        "epochs": 3,
        "batch_size": 8,
        "lr": 3e-3,
        "device": "cpu",
        "progress": False,
        "out": str(out),
    }
    return load_config(None, {**base, **kw})


def _lines(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith(("time_s", "samples_per_s"))} for r in rows]


def test_real_training_resume_and_rebuild(features_h5, tmp_path):
    full = run_training(_cfg(features_h5, tmp_path / "full"), log=lambda s: None)
    lines = _lines(tmp_path / "full")
    assert [round(sum(r[f"w_{h}"] for h in ("audio", "visual", "fused")), 6) for r in lines] == [1.0] * 3
    assert lines[0]["w_audio"] == pytest.approx(1 / 3)  # the first super-epoch: equal weights
    assert "G_fused" in lines[1] and lines[1]["w_fused"] != pytest.approx(1 / 3)  # re-estimated
    assert 0.0 <= full["test_accuracy"] <= 1.0
    # interrupted after 2 epochs, resumed to 3: the same metrics (weights and estimates survive the resume)
    run_training(_cfg(features_h5, tmp_path / "part", epochs=2), log=lambda s: None)
    part = run_training(_cfg(features_h5, tmp_path / "part"), log=lambda s: None)
    assert _lines(tmp_path / "part") == lines
    assert part["test_accuracy"] == full["test_accuracy"]
    model, _ = model_from_checkpoint(tmp_path / "full" / "best.pt")
    assert isinstance(model, GBlendModel) and model.predict == "fused"


class _Recording(GradientBlending):
    """G-Blend that records the rows of every training batch."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen: list[int] = []

    def training_loss(self, model, batch):
        self.seen += batch.index.tolist()
        return super().training_loss(model, batch)


def test_the_loop_never_trains_on_the_held_out_rows():
    from avel.engine.train import train_one_epoch

    torch.manual_seed(0)
    gb = _Recording(holdout=0.25, seed=5)
    model = gb.prepare_model(ConcatModel())
    split = _split(40)
    rows_t, rows_v = gb.split(split)
    cfg = load_config(None, {"batch_size": 8, "device": "cpu"})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train_one_epoch(model, gb, split, opt, cfg, torch.Generator().manual_seed(0))
    assert sorted(gb.seen) == rows_t.tolist() and not set(gb.seen) & set(rows_v.tolist())
