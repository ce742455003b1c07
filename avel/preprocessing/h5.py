"""The two avel HDF5 schemas (documented in data/README.md): writing, checking and describing them.

``kind="avel-preprocess"``: frames (N,10,K,S,S,3) uint8 and log-spectrograms (N,257,L) float32 per
annotation row, from ``avel preprocess``. ``kind="avel-features"``: audio (N,10,Da) and visual
(N,10,H,W,C) features, from ``avel import-features`` / ``avel extract``. Both carry the same row
metadata datasets, ``splits/<name>`` row indices, and root attributes with the class list (JSON) and
every parameter that produced them.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from avel.preprocessing.annotations import AVEAnnotations, one_hot
from avel.preprocessing.lock import output_lock

SCHEMA_VERSION = 2  # 2: fletcher32 checksums on every dataset and a completion marker written last
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
            create(f, name, strings(getattr(self, name)))
        for name in ("label", "start", "end", "segment_labels", "annotation_row"):
            create(f, name, np.asarray(getattr(self, name), dtype=np.int64))
        create(f, "onehot", one_hot(self.segment_labels, len(self.classes) + 1))
        for name, rows in self.splits.items():
            create(f, f"splits/{name}", np.asarray(rows, dtype=np.int64))
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


def strings(values) -> np.ndarray:
    """Fixed-length UTF-8 bytes (variable-length strings cannot carry a checksum filter)."""
    encoded = [str(v).encode() for v in values]
    return np.array(encoded, dtype=f"S{max((len(b) for b in encoded), default=1) or 1}")


def create(f: h5py.File, name: str, data=None, shape=None, dtype=None, chunks=None) -> h5py.Dataset:
    """A dataset with HDF5's per-chunk fletcher32 checksum (a damaged chunk raises on read)."""
    if isinstance(data, np.ndarray) and data.dtype.kind == "S":  # UTF-8 bytes, written as they are
        ds = f.create_dataset(
            name, shape=data.shape, dtype=h5py.string_dtype("utf-8", data.dtype.itemsize), fletcher32=True
        )
        if data.size:
            ds.id.write(h5py.h5s.ALL, h5py.h5s.ALL, data, mtype=ds.id.get_type())
        return ds
    if data is not None and np.ndim(data) == 0:  # scalars cannot be chunked, so carry no checksum
        return f.create_dataset(name, data=data, dtype=dtype)
    return f.create_dataset(name, shape=shape, dtype=dtype, data=data, chunks=chunks, fletcher32=True)


def set_attrs(f: h5py.File, kind: str, attrs: dict[str, Any]) -> None:
    f.attrs["kind"] = kind
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["checksums"] = "fletcher32"
    f.attrs["avel_version"] = software_version()
    for k, v in attrs.items():
        f.attrs[k] = json.dumps(v) if isinstance(v, list | dict | tuple) else v


def atomic_h5(path: str | Path):
    """An open ``PATH.tmp`` for writing (the caller holds ``output_lock(path)``, so the name is its own);
    call ``mark_complete`` last, close it, then ``commit(path)``."""
    tmp = Path(f"{path}.tmp")
    tmp.unlink(missing_ok=True)
    return h5py.File(tmp, "w")


def mark_complete(f: h5py.File) -> None:
    """The completion marker, written after everything else: a file without it is unfinished."""
    f.attrs["complete"] = True


def commit(path: str | Path) -> None:
    os.replace(f"{path}.tmp", path)  # never a half-written file at ``path``


def row_chunked(f: h5py.File, name: str, shape: tuple[int, ...], dtype) -> h5py.Dataset:
    """A dataset stored one row per chunk (fast random row access, no compression, fletcher32)."""
    chunks = (1, *shape[1:]) if shape[0] else None
    return create(f, name, shape=shape, dtype=dtype, chunks=chunks)


def copy_rows(dst: h5py.Dataset, src, rows: np.ndarray | None = None, dtype=None) -> list[int]:
    """dst[i] = src[rows[i]] in chunks of CHUNK_ROWS (src: array or h5py dataset, never read whole);
    returns the rows of ``dst`` that hold a NaN or an infinity (as written: float16 overflow included)."""
    n = dst.shape[0]
    rows = np.arange(n) if rows is None else np.asarray(rows)
    bad: list[int] = []
    for a in range(0, n, CHUNK_ROWS):
        r = rows[a : a + CHUNK_ROWS]
        contiguous = len(r) and (np.diff(r) == 1).all()
        block = src[int(r[0]) : int(r[-1]) + 1] if contiguous else np.stack([src[int(i)] for i in r])
        with np.errstate(over="ignore"):  # a value float16 cannot hold becomes inf: found just below
            block = block.astype(dtype or dst.dtype, copy=False)
        bad += [a + int(i) for i in nonfinite_rows(block)]
        dst[a : a + len(r)] = block
    return bad


def nonfinite_rows(x: np.ndarray) -> np.ndarray:
    """Indices along the first axis of the rows of ``x`` holding a NaN or an infinity (none for integers)."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.inexact) or x.size == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(1))


def nonfinite_error(path: str | Path, what: dict[str, list[int]], ids: Iterable[str] | None = None) -> str:
    """One line naming the rows of each dataset that hold NaN / Inf (and their ids when given)."""
    ids = list(ids) if ids is not None else None
    parts = []
    for name, rows in what.items():
        named = (
            f" ({', '.join(str(ids[r]) for r in rows[:8])}{', ...' if len(rows) > 8 else ''})" if ids else ""
        )
        parts.append(f"{name} {rows_text(rows)}{named}")
    return f"{path}: NaN or Inf values in {'; '.join(parts)}"


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
    with write_h5(path, "a features writer") as f:
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
        bad = {
            name: copy_rows(row_chunked(f, name, (n, *src.shape[1:]), dtype), src, rows)
            for name, src in (("audio", audio), ("visual", visual))
        }
        bad = {k: v for k, v in bad.items() if v}
        if bad:  # refused: the file is not written (write_h5 removes it)
            ids = [str(v) for v in rows_meta.video_id] if any(map(str, rows_meta.video_id)) else None
            raise ValueError(f"{nonfinite_error(path, bad, ids)}; nothing written")


@contextlib.contextmanager
def write_h5(path: str | Path, command: str) -> Iterator[h5py.File]:
    """Write an avel file whole or not at all: the output checked and locked (``output_lock``), filled
    in ``PATH.tmp``, the completion marker set last, then renamed onto ``PATH``; removed on any error."""
    check_output(path)
    with output_lock(path, command):
        f = atomic_h5(path)
        try:
            yield f
            mark_complete(f)
        except BaseException:
            f.close()
            Path(f"{path}.tmp").unlink(missing_ok=True)
            raise
        f.close()
        commit(path)


def check_output(path: str | Path) -> None:
    """Refuse, before any work, an output that cannot be written: a folder, a parent that is a file or
    does not exist, a folder without write permission."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give the path of the HDF5 file to write")
    parent = path.parent
    for p in (parent, *parent.parents):
        if p.exists():
            if not p.is_dir():
                raise ValueError(f"{path}: cannot write here, {p} is a file, not a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise ValueError(f"{path}: cannot write in {p} (permission denied); choose another output")
            break
    parent.mkdir(parents=True, exist_ok=True)


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


# ----------------------------------------------------------------------------------------- checking

KINDS = (PREPROCESS_KIND, FEATURES_KIND, CGMNIST_KIND, CLIPS_KIND)
# datasets each kind needs beyond the labels and splits every avel file has
REQUIRED = {
    PREPROCESS_KIND: (
        "segment_labels",
        "frames",
        "spectrogram",
        "segment_columns",
        "duration",
        "fps",
        "source_sample_rate",
    ),
    FEATURES_KIND: ("segment_labels", "audio", "visual"),
    CGMNIST_KIND: ("gray", "colored", "color_class"),
    CLIPS_KIND: ("frames", "spectrogram"),
}
DATA_ARRAYS = ("frames", "spectrogram", "audio", "visual", "gray", "colored")  # what a model reads
ROW_DATASETS = ("label", *(f"splits/{k}" for k in SPLIT_NAMES))
PER_ROW = ("video_id", "category", "quality", "start", "end", "annotation_row", "onehot")
WRITERS = {
    PREPROCESS_KIND: "`avel preprocess`",
    FEATURES_KIND: "`avel import-features` / `avel extract`",
    CGMNIST_KIND: "`avel cgmnist`",
    CLIPS_KIND: "`avel preprocess` (clip sets)",
}


def damage_error(path: str | Path, ds: h5py.Dataset, e: BaseException) -> ValueError:
    rows = damaged_rows(ds)
    where = rows_text(rows) if rows else "a chunk"
    return ValueError(
        f"{path}: damaged file: dataset {ds.name.lstrip('/')} {where} failed its checksum ({_short(e)}); "
        f"`avel info --verify {path}` lists every damaged row; write the file again"
    )


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1][:200] if text else type(e).__name__


def read_checked(path: str | Path, ds: h5py.Dataset, sel: Any = ()) -> np.ndarray:
    """``ds[sel]``; a checksum or read error names the file, the dataset and its damaged rows."""
    try:
        return ds[sel]
    except OSError as e:
        raise damage_error(path, ds, e) from None


def check_file(f: h5py.File, path: str | Path, kinds: tuple[str, ...] = KINDS) -> str:
    """Refuse (ValueError naming the file and the problem) an avel file that is of another kind,
    unfinished (no completion marker), or lacks the datasets and attributes its kind needs, or whose
    datasets disagree in rows; returns its kind. Files from before checksums (schema 1) pass unmarked."""
    kind = attr_value(f.attrs.get("kind"))
    if kind not in KINDS:
        expected = " or ".join(f"{k!r} from {WRITERS[k]}" for k in kinds)
        raise ValueError(f"{path}: not an avel file (attribute kind={kind!r}; expected {expected})")
    if kind not in kinds:
        raise ValueError(f"{path}: a {kind} file, but {' or '.join(map(repr, kinds))} is needed here")
    if "checksums" in f.attrs and not f.attrs.get("complete", False):
        raise ValueError(
            f"{path}: unfinished file (no completion marker: the run writing it did not finish); "
            f"write it again with {WRITERS[kind]}"
        )
    missing = [d for d in (*ROW_DATASETS, *REQUIRED[kind]) if d not in f]
    if missing:
        raise ValueError(f"{path}: incomplete {kind} file, missing dataset(s) {missing}; write it again")
    try:
        classes = json.loads(attr_value(f.attrs["classes"]))
        assert isinstance(classes, list) and len(classes) >= 2
    except (KeyError, ValueError, TypeError, AssertionError):
        raise ValueError(f"{path}: missing or malformed attribute 'classes' (a JSON list)") from None
    n = f["label"].shape[0]
    for name in (*PER_ROW, *REQUIRED[kind]):
        if name in f and name != "segment_columns" and (f[name].ndim == 0 or f[name].shape[0] != n):
            raise ValueError(f"{path}: dataset {name} has shape {f[name].shape}, but the file has {n} rows")
    if "segment_labels" in f:
        seg = read_checked(path, f["segment_labels"])
        if seg.size and (seg.min() < 0 or seg.max() >= len(classes)):
            raise ValueError(f"{path}: segment_labels outside 0..{len(classes) - 1} (the class list)")
    for name in SPLIT_NAMES:
        rows = read_checked(path, f[f"splits/{name}"])
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise ValueError(f"{path}: splits/{name} has row indices outside 0..{n - 1}")
    return str(kind)


@contextlib.contextmanager
def open_avel(path: str | Path, kinds: tuple[str, ...] = KINDS, check: bool = True) -> Iterator[h5py.File]:
    """An avel file opened for reading after ``check_file`` (``check``); errors name the file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give an avel HDF5 file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not an HDF5 file, or damaged ({_short(e)})") from None
    with f:
        if check:
            check_file(f, path, kinds)
        elif attr_value(f.attrs.get("kind")) not in kinds:
            check_file(f, path, kinds)  # its message for a file of another kind
        yield f


def rows_text(rows: list[int]) -> str:
    """``row 3`` / ``rows 3-5, 9``."""
    return f"row{'s' if len(rows) > 1 else ''} {_ranges(rows)}"


def _ranges(rows: list[int]) -> str:
    out, start = [], None
    for i, r in enumerate(rows):
        if start is None:
            start = r
        if i + 1 == len(rows) or rows[i + 1] != r + 1:
            out.append(str(start) if start == r else f"{start}-{r}")
            start = None
    return ", ".join(out)


def damaged_rows(ds: h5py.Dataset) -> list[int]:
    """Rows (first index) of ``ds`` in chunks that fail to read (checksum mismatch, bad compression)."""
    return scan_rows(ds)[0]


def scan_rows(ds: h5py.Dataset) -> tuple[list[int], list[int]]:
    """Read every chunk of ``ds``: (rows in chunks that fail to read, rows holding NaN or Inf)."""
    if ds.chunks is None:
        try:
            return [], nonfinite_rows(ds[()]).tolist() if ds.ndim else []
        except OSError:
            return (list(range(ds.shape[0])) if ds.ndim else [0]), []
    bad: set[int] = set()
    nonfinite: set[int] = set()
    for i in range(ds.id.get_num_chunks()):
        offset = ds.id.get_chunk_info(i).chunk_offset
        sel = tuple(slice(o, min(o + c, n)) for o, c, n in zip(offset, ds.chunks, ds.shape, strict=True))
        try:
            block = ds[sel]
        except OSError:
            bad.update(range(sel[0].start, sel[0].stop))
            continue
        nonfinite.update(sel[0].start + int(r) for r in nonfinite_rows(block))
    return sorted(bad), sorted(nonfinite)


def verify(path: str | Path) -> tuple[str, dict[str, list[int]], dict[str, list[int]]]:
    """Read every chunk of every dataset: (a line saying what was checked, {dataset: damaged rows},
    {dataset: rows holding NaN or Inf}). The structure is checked (``check_file``) only when no chunk is
    damaged."""
    damaged: dict[str, list[int]] = {}
    nonfinite: dict[str, list[int]] = {}
    with open_avel(path, check=False) as f:
        checksums = "checksums" in f.attrs
        names: list[str] = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        for name in names:
            rows, bad_values = scan_rows(f[name])
            bad_values = bad_values if name in DATA_ARRAYS else []  # clip start / end: NaN = whole clip
            if rows:
                damaged[name] = rows
            if bad_values:
                nonfinite[name] = bad_values
        if not damaged:
            check_file(f, path)
    if not checksums:
        what = "no checksums to verify (written before avel stored them)"
        return (
            f"verify: {what}; every chunk of {len(names)} datasets read, every value finite",
            damaged,
            nonfinite,
        )
    line = (
        f"verify: every chunk of {len(names)} datasets read, fletcher32 checksums match, every value finite"
    )
    return line, damaged, nonfinite


def describe_damage(path: str | Path, damaged: dict[str, list[int]]) -> str:
    parts = [f"{name} {rows_text(rows)}" for name, rows in damaged.items()]
    return f"{path}: damaged file, chunks failing their checksum: {'; '.join(parts)}; write it again"


def _table(pairs: Iterable[tuple[str, Any]]) -> list[str]:
    pairs = list(pairs)
    w = max((len(k) for k, _ in pairs), default=0)
    return [f"  {k:<{w}}  {v}" for k, v in pairs]


def describe(path: str | Path) -> str:
    """Human summary for ``avel info``: kind, rows, splits, class counts, background share, parameters."""
    path = Path(path)
    with open_avel(path) as f:
        attrs = {k: attr_value(v) for k, v in f.attrs.items()}
        kind = attrs.get("kind")
        if kind == CGMNIST_KIND:
            return describe_cgmnist(path, f, attrs)
        classes = json.loads(attrs["classes"])
        if kind == CLIPS_KIND:
            classes = [*classes, ""]  # one label per clip, no background label
        seg = read_checked(path, f["segment_labels"]) if "segment_labels" in f else np.zeros((0,), np.int64)
        label = read_checked(path, f["label"])
        checksums = "checksums" in f.attrs
        splits = {k: len(f[f"splits/{k}"]) for k in f.get("splits", {})}
        data = [
            (k, f"{f[k].shape} {f[k].dtype}") for k in ("frames", "spectrogram", "audio", "visual") if k in f
        ]
    bg = len(classes) - 1
    counts = Counter(label.tolist())
    lines = [f"{path}", f"kind: {kind} (schema {attrs.get('schema_version')})", f"rows: {len(label)}"]
    lines.append(
        "checksums: fletcher32 on every chunk (`avel info --verify` reads them all)"
        if checksums
        else "checksums: none (written before avel stored them)"
    )
    lines += ["splits:", *_table((k, v) for k, v in splits.items())]
    lines += ["arrays:", *_table(data)]
    lines.append(f"background segments: {100 * (seg == bg).mean():.1f}% of {seg.size}" if seg.size else "")
    lines += [f"classes ({bg}{'' if kind == CLIPS_KIND else ' + background'}), rows per class:"]
    lines += _table((f"{i:2d} {c}", counts.get(i, 0)) for i, c in enumerate(classes[:-1]))
    hidden = ("kind", "schema_version", "classes", "checksums", "complete")
    params = {k: v for k, v in attrs.items() if k not in hidden}
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
