"""Reading splits: run-wise row reads give exactly the rows fancy indexing gives, in the requested dtype."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from avel.data.splits import SplitData, row_runs, rows_of
from avel.families import load_splits


def test_row_runs_groups_consecutive_rows():
    assert row_runs(np.array([0, 1, 2, 5, 7, 8])) == [(0, 0, 3), (3, 5, 1), (4, 7, 2)]
    assert row_runs(np.array([], dtype=np.int64)) == []


@pytest.mark.parametrize("stored", [np.float32, np.float16])
def test_rows_of_a_chunked_dataset_match_fancy_indexing(tmp_path, stored):
    data = np.random.default_rng(0).normal(size=(50, 3, 4)).astype(stored)
    rows = np.array([0, 1, 2, 9, 20, 21, 49])
    with h5py.File(tmp_path / "x.h5", "w") as f:
        ds = f.create_dataset("x", data=data, chunks=(1, 3, 4))
        got = rows_of(ds, rows, np.float32)
        assert got.dtype == np.float32 and got.shape == (7, 3, 4)
        np.testing.assert_array_equal(got, ds[rows].astype(np.float32))
        assert rows_of(ds, rows[:0]).shape == (0, 3, 4)


def test_features_splits_hold_the_split_rows_of_the_file(features_h5):
    data = load_splits(features_h5, splits=("train", "val"))
    with h5py.File(features_h5, "r") as f:
        rows = np.sort(f["splits/val"][()])
        np.testing.assert_array_equal(data.val.visual.numpy(), f["visual"][()][rows])
        np.testing.assert_array_equal(data.val.labels.numpy(), f["segment_labels"][()][rows])
    assert data.val.visual.dtype == torch.float32 and data.test is None
    assert torch.equal(data.val.rows, torch.from_numpy(rows))


def test_reused_batches_hold_the_same_rows_in_one_buffer():
    split = SplitData(torch.arange(30.0).view(10, 3), torch.arange(40.0).view(10, 4), torch.arange(10))
    plain = [(b.audio.clone(), b.visual.clone()) for b in split.batches(4)]
    seen, pointers = [], set()
    for b in split.batches(4, reuse=True):
        seen.append((b.audio.clone(), b.visual.clone()))  # valid until the next batch is asked for
        pointers.add(b.visual.data_ptr())
    assert all(torch.equal(a, c) and torch.equal(v, w) for (a, v), (c, w) in zip(plain, seen, strict=True))
    assert len(pointers) == 2  # two full batches share a buffer; the short last one gets its own
