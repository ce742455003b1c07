"""``avel import-features``: the official AVE-ECCV18 feature release -> an avel features file.

Release layout: ``audio_feature.h5`` (N,10,128) VGGish, ``visual_feature.h5`` (N,10,7,7,512)
VGG19 pool5, ``labels.h5`` (N,10,29) one-hot, all under key ``avadataset``; ``train_order.h5`` /
``val_order.h5`` / ``test_order.h5`` key ``order`` (row indices into Annotations.txt order). The visual
file is 7.7 GB, so arrays are copied in chunks, never loaded whole. Segment labels come from
``labels.h5``; with an Annotations.txt the ids, categories, qualities and spans are filled in too.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from avel.preprocessing.annotations import AVEAnnotations, class_order, read_annotations
from avel.preprocessing.h5 import RowsMeta, write_features_file

KEY = "avadataset"
FILES = {"audio": "audio_feature.h5", "visual": "visual_feature.h5", "labels": "labels.h5"}
ORDERS = {"train": "train_order.h5", "val": "val_order.h5", "test": "test_order.h5"}


def _need(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (part of the AVE-ECCV18 feature release)")
    return path


def _rows_meta(labels_onehot: np.ndarray, splits: dict, annotations: Path | None) -> RowsMeta:
    """Row metadata from the one-hot labels, plus the annotation text when available."""
    n, _, c = labels_onehot.shape
    seg = labels_onehot.argmax(-1).astype(np.int64)  # (N, T); background = c - 1
    background = c - 1
    if annotations is None:
        classes = [f"class {i}" for i in range(background)]
        event = np.where(seg != background, seg, background)
        label = event.min(axis=1)  # an event class where there is one, else background
        empty = np.full(n, "", dtype=object)
        t = np.arange(seg.shape[1])
        start = np.where(seg != background, t, seg.shape[1]).min(1)
        end = np.where(seg != background, t + 1, 0).max(1)
        start = np.minimum(start, end)
        return RowsMeta(empty, empty, label, empty, start, end, seg, np.arange(n), splits, classes)
    rows = read_annotations(annotations)
    if len(rows) != n:
        raise ValueError(f"{annotations}: {len(rows)} annotation rows, but labels.h5 has {n}")
    classes = class_order(rows)
    if len(classes) != background:
        raise ValueError(
            f"{annotations}: {len(classes)} classes, but labels.h5 has {background} + background"
        )
    meta = RowsMeta.from_annotations(AVEAnnotations(rows, classes, splits, annotations))
    meta.segment_labels = seg  # the release's labels are the reference
    return meta


def import_features(
    release_dir: str | Path, out_h5: str | Path, annotations: str | Path | None = None
) -> Path:
    """Convert the AVE-ECCV18 release in ``release_dir`` into the avel features schema at ``out_h5``."""
    release_dir, out_h5 = Path(release_dir), Path(out_h5)
    if annotations is None and (release_dir / "Annotations.txt").is_file():
        annotations = release_dir / "Annotations.txt"
    with (
        h5py.File(_need(release_dir / FILES["audio"]), "r") as fa,
        h5py.File(_need(release_dir / FILES["visual"]), "r") as fv,
        h5py.File(_need(release_dir / FILES["labels"]), "r") as fl,
    ):
        audio, visual, onehot = fa[KEY], fv[KEY], fl[KEY][()]
        n = len(onehot)
        if audio.shape[0] != n or visual.shape[0] != n:
            raise ValueError(
                f"{release_dir}: row counts differ: audio {audio.shape[0]}, visual {visual.shape[0]}, "
                f"labels {n}"
            )
        splits = {}
        for name, fname in ORDERS.items():
            with h5py.File(_need(release_dir / fname), "r") as fo:
                order = fo["order"][()].astype(np.int64).reshape(-1)
            if len(order) and (order.min() < 0 or order.max() >= n):
                raise ValueError(f"{release_dir / fname}: row index out of range 0..{n - 1}")
            splits[name] = order
        meta = _rows_meta(onehot, splits, Path(annotations) if annotations else None)
        attrs = {
            "source": "AVE-ECCV18 release (VGGish audio, VGG19 pool5 visual)",
            "source_dir": str(release_dir.resolve()),
            "annotations": str(annotations) if annotations else "",
        }
        write_features_file(out_h5, meta, audio, visual, attrs)
    return out_h5
