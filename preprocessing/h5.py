"""The two avel HDF5 schemas (documented in data/README.md): writing, checking and describing them.

``kind="avel-preprocess"``: frames (N,10,K,S,S,3) uint8 and log-spectrograms (N,257,L) float32 per
annotation row, from ``avel preprocess``. ``kind="avel-features"``: audio (N,10,Da) and visual
(N,10,H,W,C) features, from ``avel import-features`` / ``avel extract``. Both carry the same row
metadata datasets, ``splits/<name>`` row indices, and root attributes with the class list (JSON) and
every parameter that produced them.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from preprocessing.annotations import AVEAnnotations, one_hot

SCHEMA_VERSION = 1
PREPROCESS_KIND = "avel-preprocess"
FEATURES_KIND = "avel-features"
CGMNIST_KIND = "avel-cgmnist"
CLIPS_KIND = "avel-clips"
KINDS = (PREPROCESS_KIND, FEATURES_KIND, CGMNIST_KIND, CLIPS_KIND)
SPLIT_NAMES = ("train", "val", "test")
STR = h5py.string_dtype("utf-8")
CHUNK_ROWS = 64  # rows copied per step when streaming large arrays


@dataclass
class RowsMeta:
    """Per-row metadata shared by both schemas (N rows) and the split row indices."""

    video_id: np.ndarray  # (N,) str
    category: np.ndarray  # (N,) str
    label: np.ndarray  # (N,) int64 class of the row's event
    quality: np.ndarray  # (N,) str
    start: np.ndarray  # (N,) int64
    end: np.ndarray  # (N,) int64
    segment_labels: np.ndarray  # (N, T) int64, background = len(classes)
    annotation_row: np.ndarray  # (N,) int64 row in Annotations.txt
    splits: dict[str, np.ndarray]  # name -> int64 row indices into these N rows
    classes: list[str]  # event classes (without background)

    def __len__(self) -> int:
        return len(self.label)

    @classmethod
    def from_annotations(cls, ann: AVEAnnotations, keep: np.ndarray | None = None) -> RowsMeta:
        """Rows ``keep`` (default all) of the annotations; split indices renumbered to the kept rows."""
        n = len(ann.rows)
        keep = np.arange(n) if keep is None else np.asarray(keep, dtype=np.int64)
        new_index = np.full(n, -1, dtype=np.int64)
        new_index[keep] = np.arange(len(keep))
        rows = [ann.rows[i] for i in keep]
        splits = {k: new_index[v][new_index[v] >= 0] for k, v in ann.splits.items()}
        return cls(
            video_id=np.array([r.video_id for r in rows], dtype=object),
            category=np.array([r.category for r in rows], dtype=object),
            label=ann.labels()[keep],
            quality=np.array([r.quality for r in rows], dtype=object),
            start=np.array([r.start for r in rows], dtype=np.int64),
            end=np.array([r.end for r in rows], dtype=np.int64),
            segment_labels=ann.segment_labels()[keep],
            annotation_row=keep,
            splits=splits,
            classes=list(ann.classes),
        )

    def write(self, f: h5py.File) -> None:
        for name in ("video_id", "category", "quality"):
            f.create_dataset(name, data=np.asarray(getattr(self, name), dtype=object), dtype=STR)
        for name in ("label", "start", "end", "segment_labels", "annotation_row"):
            f.create_dataset(name, data=np.asarray(getattr(self, name), dtype=np.int64))
        f.create_dataset("onehot", data=one_hot(self.segment_labels, len(self.classes) + 1))
        for name, rows in self.splits.items():
            f.create_dataset(f"splits/{name}", data=np.asarray(rows, dtype=np.int64))
        f.attrs["classes"] = json.dumps([*self.classes, "background"])


def read_rows_meta(path: str | Path) -> RowsMeta:
    """The row metadata of any avel file (e.g. to copy into a features file made from it)."""
    with h5py.File(path, "r") as f:
        s = {k: f[k].asstr()[()] for k in ("video_id", "category", "quality")}
        i = {k: f[k][()] for k in ("label", "start", "end", "segment_labels", "annotation_row")}
        splits = {k: f[f"splits/{k}"][()] for k in f.get("splits", {})}
        classes = json.loads(f.attrs["classes"])[:-1]
    return RowsMeta(**s, **i, splits=splits, classes=classes)


def software_version() -> str:
    """The installed avel version (read from package metadata; ``preprocessing`` never imports avel)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("avel")
    except PackageNotFoundError:
        return "unknown"


def set_attrs(f: h5py.File, kind: str, attrs: dict[str, Any]) -> None:
    f.attrs["kind"] = kind
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["avel_version"] = software_version()
    for k, v in attrs.items():
        f.attrs[k] = json.dumps(v) if isinstance(v, list | dict | tuple) else v


def atomic_h5(path: str | Path):
    """An open ``PATH.tmp`` for writing; call ``commit(path)`` after closing it."""
    tmp = Path(f"{path}.tmp")
    tmp.unlink(missing_ok=True)
    return h5py.File(tmp, "w")


def commit(path: str | Path) -> None:
    os.replace(f"{path}.tmp", path)  # never a half-written file at ``path``


def row_chunked(f: h5py.File, name: str, shape: tuple[int, ...], dtype) -> h5py.Dataset:
    """A dataset stored one row per chunk (fast random row access, no compression)."""
    chunks = (1, *shape[1:]) if shape[0] else None
    return f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks)


def copy_rows(dst: h5py.Dataset, src, rows: np.ndarray | None = None, dtype=None) -> None:
    """dst[i] = src[rows[i]] in chunks of CHUNK_ROWS (src: array or h5py dataset, never read whole)."""
    n = dst.shape[0]
    rows = np.arange(n) if rows is None else np.asarray(rows)
    for a in range(0, n, CHUNK_ROWS):
        r = rows[a : a + CHUNK_ROWS]
        contiguous = len(r) and (np.diff(r) == 1).all()
        block = src[int(r[0]) : int(r[-1]) + 1] if contiguous else np.stack([src[int(i)] for i in r])
        dst[a : a + len(r)] = block.astype(dtype or dst.dtype, copy=False)


def write_features_file(
    path: str | Path,
    rows_meta: RowsMeta,
    audio,
    visual,
    attrs: dict[str, Any],
    rows: np.ndarray | None = None,
    dtype: str = "float32",
) -> None:
    """Write a features file atomically: audio (N,T,Da), visual (N,T,H,W,C) (arrays or h5py datasets,
    streamed in chunks; ``rows`` picks source rows, default 0..N-1), row metadata and ``attrs``."""
    n = len(rows_meta)
    if audio.shape[0] != n and rows is None or visual.shape[0] != n and rows is None:
        raise ValueError(f"{path}: audio has {audio.shape[0]} rows, visual {visual.shape[0]}, metadata {n}")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"feature dtype {dtype!r}; valid: ['float32', 'float16']")
    with atomic_h5(path) as f:
        set_attrs(
            f,
            FEATURES_KIND,
            {
                **attrs,
                "audio_dim": int(audio.shape[-1]),
                "visual_shape": list(visual.shape[2:]),
                "segments": int(audio.shape[1]),
                "feature_dtype": dtype,
            },
        )
        rows_meta.write(f)
        copy_rows(row_chunked(f, "audio", (n, *audio.shape[1:]), dtype), audio, rows)
        copy_rows(row_chunked(f, "visual", (n, *visual.shape[1:]), dtype), visual, rows)
    commit(path)


def attr_value(v: Any) -> Any:
    """An HDF5 attribute as a plain Python value (bytes decoded, numpy scalars and arrays converted)."""
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, np.ndarray):
        v = v.tolist()
    return v


def read_attrs(path: str | Path) -> dict[str, Any]:
    with h5py.File(path, "r") as f:
        return {k: attr_value(v) for k, v in f.attrs.items()}


def check_params(path: str | Path, kind: str, **required: Any) -> None:
    """Raise ValueError naming the file, parameter, value found and value needed on any mismatch."""
    attrs = read_attrs(path)
    if attrs.get("kind") != kind:
        raise ValueError(f"{path}: kind = {attrs.get('kind')!r}, but {kind!r} is needed")
    for key, need in required.items():
        have = attrs.get(key, "<missing>")
        if isinstance(have, str) and isinstance(need, list | tuple):
            have = json.loads(have)
        if isinstance(need, tuple):
            need = list(need)
        if have != need:
            raise ValueError(f"{path}: parameter {key} = {have!r}, but {key} = {need!r} is needed")


def _table(pairs: Iterable[tuple[str, Any]]) -> list[str]:
    pairs = list(pairs)
    w = max((len(k) for k, _ in pairs), default=0)
    return [f"  {k:<{w}}  {v}" for k, v in pairs]


def describe(path: str | Path) -> str:
    """Human summary for ``avel info``: kind, rows, splits, class counts, background share, parameters."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with h5py.File(path, "r") as f:
        attrs = {k: attr_value(v) for k, v in f.attrs.items()}
        kind = attrs.get("kind")
        if kind == CGMNIST_KIND:
            return describe_cgmnist(path, f, attrs)
        if kind not in (PREPROCESS_KIND, FEATURES_KIND, CLIPS_KIND):
            raise ValueError(f"{path}: not an avel file (attribute kind={kind!r})")
        classes = json.loads(attrs["classes"])
        if kind == CLIPS_KIND:
            classes = [*classes, ""]  # one label per clip, no background label
        seg = f["segment_labels"][()] if "segment_labels" in f else np.zeros((0,), np.int64)
        label = f["label"][()]
        splits = {k: len(f[f"splits/{k}"]) for k in f.get("splits", {})}
        data = [
            (k, f"{f[k].shape} {f[k].dtype}") for k in ("frames", "spectrogram", "audio", "visual") if k in f
        ]
    bg = len(classes) - 1
    counts = Counter(label.tolist())
    lines = [f"{path}", f"kind: {kind} (schema {attrs.get('schema_version')})", f"rows: {len(label)}"]
    lines += ["splits:", *_table((k, v) for k, v in splits.items())]
    lines += ["arrays:", *_table(data)]
    lines.append(f"background segments: {100 * (seg == bg).mean():.1f}% of {seg.size}" if seg.size else "")
    lines += [f"classes ({bg}{'' if kind == CLIPS_KIND else ' + background'}), rows per class:"]
    lines += _table((f"{i:2d} {c}", counts.get(i, 0)) for i, c in enumerate(classes[:-1]))
    params = {k: v for k, v in attrs.items() if k not in ("kind", "schema_version", "classes")}
    lines += ["parameters:", *_table(sorted(params.items()))]
    return "\n".join(lines)


def describe_cgmnist(path: Path, f: h5py.File, attrs: dict[str, Any]) -> str:
    """``avel info`` of a CG-MNIST file: splits, how often the colour names the class, rows per class."""
    classes = json.loads(attrs["classes"])
    label, color_class = f["label"][()], f["color_class"][()]
    lines = [
        f"{path}",
        f"kind: {attrs['kind']} (schema {attrs.get('schema_version')})",
        f"rows: {len(label)}",
    ]
    lines.append(f"modalities: {', '.join(json.loads(attrs['modalities']))}")
    lines.append("splits (rows; share whose colour is its class's mean colour):")
    split_rows = {k: f[f"splits/{k}"][()] for k in SPLIT_NAMES if f"splits/{k}" in f}
    lines += _table(
        (k, f"{len(r)}; colour = class {100 * (color_class[r] == label[r]).mean():.1f}%" if len(r) else "0")
        for k, r in split_rows.items()
    )
    lines += ["arrays:", *_table((k, f"{f[k].shape} {f[k].dtype}") for k in ("gray", "colored"))]
    counts = Counter(label.tolist())
    lines += [f"classes ({len(classes)}), rows per class:"]
    lines += _table((f"{i:2d} {c}", counts.get(i, 0)) for i, c in enumerate(classes))
    params = {k: v for k, v in attrs.items() if k not in ("kind", "schema_version", "classes", "modalities")}
    lines += ["parameters:", *_table(sorted(params.items()))]
    return "\n".join(lines)
