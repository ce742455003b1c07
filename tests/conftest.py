"""Shared fixtures: a tiny embedded AVE set (real mp4 files) preprocessed to HDF5, and a features file.

Session-scoped so the whole suite decodes and writes them once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avel.preprocessing.h5 import RowsMeta, write_features_file

SHARED_AVE = Path(__file__).resolve().parents[2] / "shared" / "ave"
TINY_CLASSES = 4


@pytest.fixture(scope="session", autouse=True)
def digit_cache(tmp_path_factory) -> Path:
    """Rendered CG-MNIST digits are cached in a folder of the session, never in the user's cache."""
    import os

    folder = tmp_path_factory.mktemp("avel_cache")
    os.environ["AVEL_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def shared_ave() -> Path:
    if not (SHARED_AVE / "Annotations.txt").is_file():
        pytest.skip("../shared/ave is not present")
    return SHARED_AVE


@pytest.fixture(scope="session")
def tiny_ave(tmp_path_factory) -> Path:
    """40 real mp4 videos of 4 AVE classes, 32 px frames, 4 fps."""
    from avel.synth.ave import SynthConfig, synth_dataset

    out = tmp_path_factory.mktemp("tiny_ave")
    synth_dataset(out, SynthConfig(videos=40, classes=TINY_CLASSES, frame_size=32, fps=4.0, seed=0))
    return out


@pytest.fixture(scope="session")
def tiny_h5(tiny_ave, tmp_path_factory) -> Path:
    from avel.preprocessing.pipeline import preprocess

    h5 = tmp_path_factory.mktemp("tiny_h5") / "tiny.h5"
    report = preprocess(tiny_ave, h5, workers=1, frame_size=32, progress=False)
    assert not report.failed
    return h5


@pytest.fixture(scope="session")
def clips_h5(tmp_path_factory) -> Path:
    """24 CREMA-D-form clips (``avel synth --layout crema-d``, 10 fps, 32 px) preprocessed to one file."""
    from typer.testing import CliRunner

    from avel.cli import app

    d = tmp_path_factory.mktemp("clips")
    runner = CliRunner()
    for args in (
        ["synth", d / "cd", "--layout", "crema-d", "--videos", 24, "--fps", 10, "--frame-size", 32],
        ["preprocess", d / "cd", d / "cd.h5", "--frame-size", 32, "--no-progress"],
    ):
        res = runner.invoke(app, [str(a) for a in args])
        assert res.exit_code == 0, res.output
    return d / "cd.h5"


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
    names = [f"class {k}" for k in range(classes)]
    rows_meta = RowsMeta(
        video_id=np.array([f"vid{i:04d}" for i in range(videos)], dtype=object),
        category=np.array([names[k] for k in label], dtype=object),
        label=label.astype(np.int64),
        quality=np.array(["good"] * videos, dtype=object),
        start=start.astype(np.int64),
        end=end.astype(np.int64),
        segment_labels=seg,
        annotation_row=np.arange(videos, dtype=np.int64),
        splits={
            "train": np.sort(order[:n_tr]),
            "val": np.sort(order[n_tr : n_tr + n_va]),
            "test": np.sort(order[n_tr + n_va :]),
        },
        classes=names,
    )
    attrs = {"source": "tests/conftest.py toy features"}
    write_features_file(path, rows_meta, audio.astype(np.float32), visual.astype(np.float32), attrs)
    return path


@pytest.fixture(scope="session")
def features_h5(tmp_path_factory) -> Path:
    return write_toy_features(tmp_path_factory.mktemp("features") / "toy-features.h5")
