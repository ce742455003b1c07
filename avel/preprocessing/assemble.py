"""Shards and the final file of ``avel preprocess`` (every layout: ``avel.preprocessing.runs``).

A shard ``OUT.h5.parts/<id>.shard`` holds one decoded video or clip (consecutive ``np.save`` records,
written to a temporary name and renamed, so it exists only when complete): the unit of resume after a
crash and of ``--shard I/N`` runs. ``Assembler`` fills ``OUT.h5.tmp`` row by row on one background thread
while decoding goes on, and renames it onto ``OUT.h5`` only once every row is written and the completion
marker is set: a killed run never leaves a half-written ``OUT.h5``. What the file holds besides the decoded
arrays (its kind, attributes, row metadata and row shapes) is the layout's ``FileRows``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import h5py
import numpy as np

from avel.preprocessing.h5 import atomic_h5, commit, create, mark_complete, row_chunked, set_attrs

SHARD_FIELDS = ("frames", "spectrogram", "duration", "fps", "source_sample_rate")
SCALARS = {"duration": np.float32, "fps": np.float32, "source_sample_rate": np.int32}
MAX_PENDING = 4  # videos queued for the writer thread (bounds memory: ~2.5 MB each at 224 px)


def shard_path(parts: Path, shard_id: str) -> Path:
    """``parts/<id>.shard``, the id percent-encoded where it is not a plain file name (a manifest's own
    ids may hold ``/``); AVE and CREMA-D ids are kept as they are."""
    return parts / f"{quote(shard_id, safe='')}.shard"


def write_shard(path: Path, arrays: dict[str, Any]) -> None:
    """One video's arrays as consecutive .npy records (no zip, no CRC), written to a temporary name and
    renamed: a shard exists only when complete."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        for name in SHARD_FIELDS:
            np.save(fh, np.asarray(arrays[name]))
    os.replace(tmp, path)


def read_shard(path: Path) -> dict[str, np.ndarray]:
    with open(path, "rb") as fh:
        return {name: np.load(fh) for name in SHARD_FIELDS}


@dataclass(frozen=True)
class FileRows:
    """A layout's OUT.h5 besides its decoded arrays: row i holds the shard of ``ids[i]`` (AVE: one video's
    shard for each of its annotation rows), ``frames`` (N, *frame_shape) uint8 and ``spectrogram``
    (N, *spectrogram_shape) float32; ``write_meta`` writes the row metadata and splits."""

    kind: str
    attrs: dict[str, Any]
    ids: list[str]
    frame_shape: tuple[int, ...]
    spectrogram_shape: tuple[int, int]
    write_meta: Callable[[h5py.File], None]


class Assembler:
    """``OUT.h5.tmp`` of ``rows``, filled video by video (clip by clip) on one writer thread."""

    def __init__(self, out_h5: Path, rows: FileRows) -> None:
        n = len(rows.ids)
        self.out_h5, self.n = out_h5, n
        self.f = atomic_h5(out_h5)
        try:
            set_attrs(self.f, rows.kind, rows.attrs)
            rows.write_meta(self.f)
            self.frames = row_chunked(self.f, "frames", (n, *rows.frame_shape), np.uint8)
            self.spectrogram = row_chunked(self.f, "spectrogram", (n, *rows.spectrogram_shape), np.float32)
        except BaseException:
            self.f.close()
            Path(f"{out_h5}.tmp").unlink(missing_ok=True)
            raise
        self.values = {name: np.zeros(n, dt) for name, dt in SCALARS.items()}
        self.rows: dict[str, list[int]] = {}
        for i, shard_id in enumerate(rows.ids):
            self.rows.setdefault(str(shard_id), []).append(i)
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="avel-assemble")
        self.pending: deque[Future] = deque()
        self.failed: list[Any] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the writer thread, in order; waits while MAX_PENDING are queued. A task
        that returns a value (a failed video) has it appended to ``failed``."""
        while len(self.pending) >= MAX_PENDING:
            self._collect()
        self.pending.append(self.thread.submit(fn, *args))

    def _collect(self) -> None:
        result = self.pending.popleft().result()  # a writer error (e.g. disk full) is raised here
        if result is not None:
            self.failed.append(result)

    def wait(self) -> None:
        """Until every submitted task has run."""
        while self.pending:
            self._collect()

    def write(self, shard_id: str, arrays: dict[str, Any]) -> None:
        """Every row of ``shard_id`` from one video's (clip's) arrays (on the writer thread)."""
        for i in self.rows[shard_id]:
            self.frames[i] = arrays["frames"]
            self.spectrogram[i] = arrays["spectrogram"]
            for name in SCALARS:
                self.values[name][i] = arrays[name]

    def write_shard_file(self, shard_id: str, shard: Path) -> None:
        self.write(shard_id, read_shard(shard))

    def close(self, keep: bool) -> int:
        """With ``keep``: wait for the writer and rename the file onto OUT.h5. Without: drop what is
        queued and delete the file. Returns the number of rows."""
        try:
            if keep:
                self.wait()
                for name, v in self.values.items():
                    create(self.f, name, v)
                mark_complete(self.f)
        finally:
            self.thread.shutdown(cancel_futures=True)
            self.f.close()
        if keep:
            commit(self.out_h5)
        else:
            Path(f"{self.out_h5}.tmp").unlink(missing_ok=True)
        return self.n


def assemble_from_shards(out_h5: Path, parts: Path, rows: FileRows) -> int:
    """OUT.h5 of ``rows`` from the shards in ``parts``."""
    asm = Assembler(out_h5, rows)
    try:
        for shard_id in asm.rows:
            asm.submit(asm.write_shard_file, shard_id, shard_path(parts, shard_id))
    except BaseException:
        asm.close(keep=False)
        raise
    return asm.close(keep=True)
