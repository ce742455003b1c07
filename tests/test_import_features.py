"""import_features on small files shaped like the AVE-ECCV18 release, streamed in small chunks."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import avel.preprocessing.h5 as h5mod
from avel.preprocessing.features import import_features
from avel.preprocessing.h5 import check_params, describe, read_rows_meta, write_features_file

LINES = [
    "Church bell&c---zaDCTaE&good&0&10",
    "Male speech, man speaking&m_1&good&3&6",
    "Church bell&c---zaDCTaE&good&7&9",
    "Bark&b-2&bad&0&0",
    "Bark&b3&good&1&10",
]
N = len(LINES)


def make_release(root, with_annotations: bool = True):
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((N, 10, 128)).astype(np.float32)
    visual = rng.standard_normal((N, 10, 7, 7, 512)).astype(np.float32)
    seg = np.full((N, 10), 3)  # classes: Church bell 0, Male speech 1, Bark 2; background 3
    seg[0, :] = 0
    seg[1, 3:6] = 1
    seg[2, 7:9] = 0
    seg[4, 1:] = 2
    onehot = np.eye(4)[seg]
    for name, data in (("audio_feature.h5", audio), ("visual_feature.h5", visual), ("labels.h5", onehot)):
        with h5py.File(root / name, "w") as f:
            f["avadataset"] = data
    for name, order in (("train", [0, 2, 4]), ("val", [1]), ("test", [3])):
        with h5py.File(root / f"{name}_order.h5", "w") as f:
            f["order"] = np.array(order)
    if with_annotations:
        (root / "Annotations.txt").write_text(
            "Category&VideoID&Quality&StartTime&EndTime\n" + "\n".join(LINES)
        )
    return audio, visual, seg


def test_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(h5mod, "CHUNK_ROWS", 2)  # stream in several chunks
    audio, visual, seg = make_release(tmp_path)
    out = import_features(tmp_path, tmp_path / "feat.h5")
    with h5py.File(out, "r") as f:
        assert f.attrs["kind"] == "avel-features" and f.attrs["audio_dim"] == 128
        assert json.loads(f.attrs["visual_shape"]) == [7, 7, 512]
        assert json.loads(f.attrs["classes"]) == [
            "Church bell",
            "Male speech, man speaking",
            "Bark",
            "background",
        ]
        np.testing.assert_array_equal(f["audio"][()], audio)
        np.testing.assert_array_equal(f["visual"][()], visual)
        assert f["visual"].chunks == (1, 10, 7, 7, 512)
        np.testing.assert_array_equal(f["segment_labels"][()], seg)
        assert f["onehot"][()].argmax(-1).tolist() == seg.tolist()
        assert f["video_id"].asstr()[()].tolist() == ["c---zaDCTaE", "m_1", "c---zaDCTaE", "b-2", "b3"]
        assert f["label"][()].tolist() == [0, 1, 0, 2, 2]
        assert f["splits/train"][()].tolist() == [0, 2, 4] and f["splits/test"][()].tolist() == [3]
    check_params(out, "avel-features", audio_dim=128, visual_shape=[7, 7, 512])
    assert "rows: 5" in describe(out)


def test_count_mismatch_and_missing_file(tmp_path):
    make_release(tmp_path)
    ann = tmp_path / "short.txt"
    ann.write_text("\n".join(LINES[:4]))
    with pytest.raises(ValueError, match=r"short\.txt: 4 annotation rows, but labels\.h5 has 5"):
        import_features(tmp_path, tmp_path / "feat.h5", annotations=ann)
    assert not (tmp_path / "feat.h5").exists()
    (tmp_path / "val_order.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"val_order\.h5: no such file"):
        import_features(tmp_path, tmp_path / "feat.h5")


def test_without_annotations_and_float16(tmp_path):
    audio, visual, seg = make_release(tmp_path, with_annotations=False)
    out = import_features(tmp_path, tmp_path / "feat.h5")
    meta = read_rows_meta(out)
    assert meta.label.tolist() == [0, 1, 0, 3, 2]  # no event segment -> background
    assert meta.start.tolist() == [0, 3, 7, 0, 1] and meta.end.tolist() == [10, 6, 9, 0, 10]
    half = tmp_path / "half.h5"
    write_features_file(half, meta, audio, visual, {"source": "test"}, dtype="float16")
    with h5py.File(half, "r") as f:
        assert f["audio"].dtype == np.float16 and f.attrs["feature_dtype"] == "float16"
        np.testing.assert_allclose(f["visual"][()], visual, atol=2e-3, rtol=1e-3)
