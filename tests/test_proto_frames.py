"""PMR's prototype pass on clip files with fewer frames (``pmr_frames``): the released code encodes the 3
frames of its training loader per clip, avel's default the evaluation's (all 10 stored). ``frames = k``
takes k evenly spaced stored frames, exactly what ``eval_frames = k`` gives; 0 leaves the pass as it was.
Real media: an embedded CREMA-D-form set decoded and written by ``avel preprocess``."""

from __future__ import annotations

import pytest
import torch

from avel.balance.pmr import PMR
from avel.engine.distributed import shard_split
from avel.families import build_model, load_splits
from avel.models.prototypes import compute_prototypes


def _model(num_classes: int):
    torch.manual_seed(0)
    return build_model("resnet18", "concat", input_mode="e2e", num_classes=num_classes, width=8).eval()


def test_frames_k_is_eval_frames_k(clips_h5):
    every = load_splits(clips_h5, family="resnet18", frames=3)
    three = load_splits(clips_h5, family="resnet18", frames=3, eval_frames=3)
    idx = torch.arange(5)
    assert every.train.stored_frames == 10
    assert torch.equal(every.train.batch(idx, frames=3).visual, three.train.batch(idx).visual)
    assert every.train.batch(idx, frames=3).visual.shape[1] == 3
    assert torch.equal(every.train.batch(idx, frames=0).visual, every.train.batch(idx).visual)
    assert every.train.batch(idx).visual.shape[1] == 10
    rows = torch.tensor([1, 4, 6, 9])
    shard = shard_split(every.train, rows)
    assert torch.equal(
        shard.batch(torch.arange(2), frames=3).visual, every.train.batch(rows[:2], frames=3).visual
    )


def test_pmr_frames_prototypes_are_those_of_k_evenly_spaced_frames(clips_h5):
    data = load_splits(clips_h5, family="resnet18", frames=3)
    three = load_splits(clips_h5, family="resnet18", frames=3, eval_frames=3)
    k = data.meta["num_classes"]
    model = _model(k)
    fast, plain = PMR(frames=3, subset="0.5"), PMR(subset="0.5")
    fast.on_epoch_start(model, data, 0)
    plain.on_epoch_start(model, data, 0)
    rows = fast.subset_indices(len(data.train), data.train.device)
    want3 = compute_prototypes(model, three.train, k, None, rows)
    want10 = compute_prototypes(model, data.train, k, None, rows)
    for got, want in ((fast.prototypes, want3[:2]), (plain.prototypes, want10[:2])):
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    assert not torch.equal(fast.prototypes[1], plain.prototypes[1])  # the visual side did change
    assert torch.equal(fast.prototypes[0], plain.prototypes[0])  # audio is the same clip either way


def test_frames_outside_the_stored_ones_are_refused(clips_h5, tiny_h5):
    data = load_splits(clips_h5, family="resnet18", frames=3)
    with pytest.raises(ValueError, match=r"frames = 11 per clip: 1\.\.10"):
        data.train.batch(torch.arange(2), frames=11)
    ave = load_splits(tiny_h5, family="resnet18", frames=2)
    with pytest.raises(ValueError, match=r"frames = 3 per clip: clip files \(avel-clips\) only"):
        PMR(frames=3).on_epoch_start(_model(ave.meta["num_classes"]), ave, 0)
