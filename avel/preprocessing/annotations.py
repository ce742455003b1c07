"""Parsing the AVE annotation and split files into rows, a class order and per-segment labels.

Format: ``Category&VideoID&Quality&StartTime&EndTime`` per line, an optional header line, CRLF or LF,
an optional UTF-8 BOM. Rows keep Annotations.txt order (the official ``*_order.h5`` index it); a split
line is matched to its annotation row by full line identity. Class order is the AVE standard: order of
first appearance in the full Annotations.txt; background index = number of classes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SEGMENTS = 10  # one AVE video = ten one-second segments
HEADER = ("Category", "VideoID", "Quality", "StartTime", "EndTime")
SPLIT_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}


@dataclass(frozen=True)
class Annotation:
    """One annotation line: an event ``[start, end)`` in whole seconds of one video."""

    category: str
    video_id: str
    quality: str
    start: int
    end: int
    line: int = field(default=0, compare=False)  # 1-based line number in its file

    @property
    def key(self) -> tuple[str, str, str, int, int]:
        return (self.category, self.video_id, self.quality, self.start, self.end)


@dataclass
class AVEAnnotations:
    """Every annotation row, the class list, and each split as row indices into ``rows``."""

    rows: list[Annotation]
    classes: list[str]
    splits: dict[str, np.ndarray]
    source: Path | None = None

    @property
    def background(self) -> int:
        return len(self.classes)

    def labels(self) -> np.ndarray:
        """(N,) int64 class index of each row's category."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[r.category] for r in self.rows], dtype=np.int64)

    def segment_labels(self, segments: int = SEGMENTS) -> np.ndarray:
        return segment_labels(self.rows, self.classes, segments)


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; BOM, CR and a header line removed."""
    text = path.read_text(encoding="utf-8-sig")
    out = [(i + 1, s.strip()) for i, s in enumerate(text.splitlines())]
    out = [(i, s) for i, s in out if s]
    if out and tuple(p.strip() for p in out[0][1].split("&")) == HEADER:
        out = out[1:]
    return out


def parse_line(text: str, path: str | Path, line: int, segments: int = SEGMENTS) -> Annotation:
    """One ``Category&VideoID&Quality&StartTime&EndTime`` line; a clear error naming file and line."""
    parts = text.split("&")
    where = f"{path}:{line}"
    if len(parts) != 5:
        raise ValueError(
            f"{where}: expected 5 fields 'Category&VideoID&Quality&StartTime&EndTime', got "
            f"{len(parts)} in {text!r}"
        )
    category, video_id, quality, start_s, end_s = (p.strip() for p in parts)
    if not category or not video_id:
        raise ValueError(f"{where}: empty category or video id in {text!r}")
    try:
        start, end = int(start_s), int(end_s)
    except ValueError:
        raise ValueError(f"{where}: start/end must be whole seconds, got {start_s!r}, {end_s!r}") from None
    if not 0 <= start <= end <= segments:
        raise ValueError(f"{where}: need 0 <= start <= end <= {segments}, got start={start}, end={end}")
    return Annotation(category, video_id, quality, start, end, line)


def read_annotations(path: str | Path, segments: int = SEGMENTS) -> list[Annotation]:
    """All rows of an annotation (or split) file, in file order."""
    path = Path(path)
    return [parse_line(s, path, i, segments) for i, s in _lines(path)]


def class_order(rows: list[Annotation], classes: list[str] | None = None) -> list[str]:
    """Order of first appearance in ``rows`` (the AVE standard), or ``classes`` checked to cover them."""
    seen = list(dict.fromkeys(r.category for r in rows))
    if classes is None:
        return seen
    missing = [c for c in seen if c not in classes]
    if missing:
        raise ValueError(f"categories not in the given class list: {missing}")
    return list(classes)


def match_split(rows: list[Annotation], split_path: str | Path, segments: int = SEGMENTS) -> np.ndarray:
    """Row indices (int64, in split file order) of the annotation rows the split's lines are."""
    split_path = Path(split_path)
    by_key: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_key[r.key].append(i)
    used: dict[tuple, int] = defaultdict(int)
    out = []
    for a in read_annotations(split_path, segments):
        hits = by_key.get(a.key)
        if not hits:
            raise ValueError(
                f"{split_path}:{a.line}: no matching line in the annotations ({'&'.join(map(str, a.key))})"
            )
        out.append(hits[min(used[a.key], len(hits) - 1)])  # identical lines take successive rows
        used[a.key] += 1
    return np.array(out, dtype=np.int64)


def segment_labels(rows: list[Annotation], classes: list[str], segments: int = SEGMENTS) -> np.ndarray:
    """(N, T) int64: segment t has the row's class iff start <= t < end, else background = len(classes)."""
    index = {c: i for i, c in enumerate(classes)}
    t = np.arange(segments)
    out = np.full((len(rows), segments), len(classes), dtype=np.int64)
    for n, r in enumerate(rows):
        out[n, (r.start <= t) & (t < r.end)] = index[r.category]
    return out


def one_hot(labels: np.ndarray, num_labels: int) -> np.ndarray:
    """(N, T) labels -> (N, T, num_labels) uint8 one-hot (num_labels = classes + background)."""
    return np.eye(num_labels, dtype=np.uint8)[labels]


def load_ave(
    dataset_dir: str | Path,
    annotations: str | Path | None = None,
    classes: list[str] | None = None,
    segments: int = SEGMENTS,
) -> AVEAnnotations:
    """Annotations.txt and train/val/testSet.txt of an AVE-layout folder."""
    dataset_dir = Path(dataset_dir)
    ann_path = Path(annotations) if annotations else dataset_dir / "Annotations.txt"
    if not ann_path.is_file():
        raise FileNotFoundError(f"{ann_path}: no such file (the AVE annotation file)")
    rows = read_annotations(ann_path, segments)
    splits = {}
    for name, fname in SPLIT_FILES.items():
        p = ann_path.parent / fname if not (dataset_dir / fname).is_file() else dataset_dir / fname
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such file (the {name} split)")
        splits[name] = match_split(rows, p, segments)
    return AVEAnnotations(rows, class_order(rows, classes), splits, ann_path)
