"""The listing every dataset layout produces (``avel.preprocessing.layouts``): a ``ClipList`` of ``Clip``s.

A layout reader (``avel.preprocessing.annotations`` for AVE, ``avel.preprocessing.cremad``,
``avel.preprocessing.manifest``) turns a folder or a CSV into a ``ClipList``: each clip's id, media paths (a
video, and an optional separate audio file), label, split, optional ``[start, end)`` seconds of the clip
inside its file, and the event times inside it where the layout has them (AVE).
``avel.preprocessing.clip_pipeline`` decodes a ``ClipList`` of a clip layout into one HDF5 file of
``kind="avel-clips"`` (data/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avel.preprocessing.h5 import SPLIT_NAMES


@dataclass(frozen=True)
class Clip:
    """One clip of a clip dataset; ``start``/``end`` None = the whole file."""

    clip_id: str
    video: Path
    label: str
    split: str
    audio: Path | None = None  # None: the video file's audio stream
    start: float | None = None
    end: float | None = None
    line: int = 0  # 1-based line of the list that named it
    events: tuple[tuple[float, float], ...] = ()  # [start, end) seconds of its events (AVE); () = the label


@dataclass
class ClipList:
    """Every clip, the class order, and what produced them (recorded in the HDF5 file)."""

    clips: list[Clip]
    classes: list[str]
    layout: str  # a name of avel.preprocessing.layouts.LAYOUTS
    source: Path
    info: dict = field(default_factory=dict)  # e.g. val_seed, val_fraction, split files

    def labels(self) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[c.label] for c in self.clips], dtype=np.int64)

    def splits(self) -> dict[str, np.ndarray]:
        """Split name -> int64 clip indices (in list order)."""
        names = np.array([c.split for c in self.clips])
        return {s: np.flatnonzero(names == s).astype(np.int64) for s in SPLIT_NAMES}


def carve_val(labels: list[str], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the train clips moved to val: ``round(fraction · n_k)`` clips of each class k
    (at least 1 when a class has 2 or more), drawn with ``numpy.random.default_rng(seed)``.

    Model selection needs a val split and the released PMR / OGM-GE code selects on test; avel carves val
    from train so test is used once (recorded in the file: ``val_seed``, ``val_fraction``).
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"val fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    arr = np.array(labels)
    out = np.zeros(len(arr), dtype=bool)
    for k in sorted(set(labels)):  # sorted: the draw does not depend on the list order of classes
        members = np.flatnonzero(arr == k)
        n = round(fraction * len(members))
        if fraction > 0 and len(members) >= 2:
            n = max(n, 1)
        out[rng.choice(members, size=min(n, len(members) - 1), replace=False)] = True
    return out


def with_val(clips: list[Clip], fraction: float, seed: int) -> list[Clip]:
    """``clips`` with a per-class ``fraction`` of the train clips moved to val (``carve_val``)."""
    train = [i for i, c in enumerate(clips) if c.split == "train"]
    moved = carve_val([clips[i].label for i in train], fraction, seed)
    out = list(clips)
    for i, m in zip(train, moved, strict=True):
        if m:
            c = clips[i]
            out[i] = Clip(c.clip_id, c.video, c.label, "val", c.audio, c.start, c.end, c.line)
    return out
