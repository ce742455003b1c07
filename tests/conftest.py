"""Shared fixtures: a tiny embedded AVE set (real mp4 files) preprocessed to HDF5, and a features file.

Session-scoped so the whole suite decodes and writes them once.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

SHARED_AVE = Path(__file__).resolve().parents[2] / "shared" / "ave"
TINY_CLASSES = 4


@pytest.fixture(scope="session")
def shared_ave() -> Path:
    if not (SHARED_AVE / "Annotations.txt").is_file():
        pytest.skip("../shared/ave is not present")
    return SHARED_AVE


@pytest.fixture(scope="session")
def tiny_ave(tmp_path_factory) -> Path:
    """40 real mp4 videos of 4 AVE classes, 32 px frames, 4 fps."""
    from avel.synth import SynthConfig, synth_dataset

    out = tmp_path_factory.mktemp("tiny_ave")
    synth_dataset(out, SynthConfig(videos=40, classes=TINY_CLASSES, frame_size=32, fps=4.0, seed=0))
    return out


@pytest.fixture(scope="session")
def tiny_h5(tiny_ave, tmp_path_factory) -> Path:
    from preprocessing.pipeline import preprocess

    h5 = tmp_path_factory.mktemp("tiny_h5") / "tiny.h5"
    report = preprocess(tiny_ave, h5, workers=1, frame_size=32, progress=False)
    assert not report.failed
    return h5


def write_toy_features(path: Path, videos: int = 60, classes: int = TINY_CLASSES, seed: int = 0) -> Path:
    """An avel features file with a learnable structure: audio = class signal + noise (strong), visual
    grid = class signal in one region + noise (weaker); background segments carry noise only."""
    rng = np.random.default_rng(seed)
    t, da, (h, w, c) = 10, 16, (2, 2, 8)
    bg = classes
    label = rng.integers(0, classes, videos)
    full = rng.random(videos) < 0.66
    length = np.where(full, 10, rng.integers(2, 10, videos))
    start = np.where(full, 0, rng.integers(0, 10 - length + 1))
    end = start + length
    seg = np.full((videos, t), bg, np.int64)
    for i in range(videos):
        seg[i, start[i] : end[i]] = label[i]
    a_proto = rng.normal(size=(classes + 1, da)) * 1.5
    a_proto[bg] = 0
    v_proto = rng.normal(size=(classes + 1, c)) * 0.8
    v_proto[bg] = 0
    audio = a_proto[seg] + rng.normal(size=(videos, t, da))
    visual = rng.normal(size=(videos, t, h, w, c)) * 0.7
    visual[:, :, 0, 0, :] += v_proto[seg]
    order = rng.permutation(videos)
    n_tr, n_va = int(0.6 * videos), int(0.2 * videos)
    names = [f"class {k}" for k in range(classes)] + ["background"]
    with h5py.File(path, "w") as f:
        f.attrs["kind"] = "avel-features"
        f.attrs["schema_version"] = 1
        f.attrs["classes"] = json.dumps(names)
        f.attrs["segments"] = t
        f.attrs["source"] = "tests/conftest.py toy features"
        str_dt = h5py.string_dtype()
        ids = np.array([f"vid{i:04d}" for i in range(videos)], dtype=object)
        f.create_dataset("video_id", data=ids, dtype=str_dt)
        f.create_dataset("category", data=np.array([names[k] for k in label], dtype=object), dtype=str_dt)
        for key, value in (("label", label), ("start", start), ("end", end)):
            f[key] = value.astype(np.int64)
        f["segment_labels"] = seg
        f.create_dataset("audio", data=audio.astype(np.float32), chunks=(1, t, da))
        f.create_dataset("visual", data=visual.astype(np.float32), chunks=(1, t, h, w, c))
        f["splits/train"] = np.sort(order[:n_tr])
        f["splits/val"] = np.sort(order[n_tr : n_tr + n_va])
        f["splits/test"] = np.sort(order[n_tr + n_va :])
    return path


@pytest.fixture(scope="session")
def features_h5(tmp_path_factory) -> Path:
    return write_toy_features(tmp_path_factory.mktemp("features") / "toy-features.h5")
