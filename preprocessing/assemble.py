"""Shards and the final file of ``avel preprocess``.

A shard ``OUT.h5.parts/<id>.shard`` holds one decoded video (consecutive ``np.save`` records, written to
a temporary name and renamed, so it exists only when complete): the unit of resume after a crash.
``Assembler`` fills ``OUT.h5.tmp`` row by row on one background thread while decoding goes on, and renames
it onto ``OUT.h5`` only once every row is written: a killed run never leaves a half-written ``OUT.h5``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from preprocessing.annotations import SEGMENTS
from preprocessing.audio import SpecParams, segment_columns
from preprocessing.h5 import (
    PREPROCESS_KIND,
    RowsMeta,
    atomic_h5,
    commit,
    create,
    mark_complete,
    row_chunked,
    set_attrs,
)

SHARD_FIELDS = ("frames", "spectrogram", "duration", "fps", "source_sample_rate")
SCALARS = {"duration": np.float32, "fps": np.float32, "source_sample_rate": np.int32}
MAX_PENDING = 4  # videos queued for the writer thread (bounds memory: ~2.5 MB each at 224 px)


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


class Assembler:
    """``OUT.h5.tmp`` of ``meta``'s rows, filled video by video on one writer thread."""

    def __init__(self, out_h5: Path, meta: RowsMeta, attrs: dict[str, Any], spec: SpecParams) -> None:
        n, k, s = len(meta), attrs["frames_per_segment"], attrs["frame_size"]
        columns = segment_columns(SEGMENTS, spec)
        self.out_h5, self.n = out_h5, n
        self.f = atomic_h5(out_h5)
        try:
            set_attrs(self.f, PREPROCESS_KIND, attrs)
            meta.write(self.f)
            create(self.f, "segment_columns", columns)
            self.frames = row_chunked(self.f, "frames", (n, SEGMENTS, k, s, s, 3), np.uint8)
            shape = (n, spec.n_fft // 2 + 1, int(columns[-1]))
            self.spectrogram = row_chunked(self.f, "spectrogram", shape, np.float32)
        except BaseException:
            self.f.close()
            Path(f"{out_h5}.tmp").unlink(missing_ok=True)
            raise
        self.values = {name: np.zeros(n, dt) for name, dt in SCALARS.items()}
        self.rows: dict[str, list[int]] = {}
        for i, vid in enumerate(meta.video_id):
            self.rows.setdefault(str(vid), []).append(i)
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

    def write(self, video_id: str, arrays: dict[str, Any]) -> None:
        """Every row of ``video_id`` from one video's arrays (on the writer thread)."""
        for i in self.rows[video_id]:
            self.frames[i] = arrays["frames"]
            self.spectrogram[i] = arrays["spectrogram"]
            for name in SCALARS:
                self.values[name][i] = arrays[name]

    def write_shard_file(self, video_id: str, shard: Path) -> None:
        self.write(video_id, read_shard(shard))

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


def assemble_from_shards(
    out_h5: Path, parts: Path, meta: RowsMeta, attrs: dict[str, Any], spec: SpecParams
) -> int:
    """OUT.h5 of ``meta``'s rows from the shards in ``parts``."""
    asm = Assembler(out_h5, meta, attrs, spec)
    try:
        for vid in asm.rows:
            asm.submit(asm.write_shard_file, vid, parts / f"{vid}.shard")
    except BaseException:
        asm.close(keep=False)
        raise
    return asm.close(keep=True)
