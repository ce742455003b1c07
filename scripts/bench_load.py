"""``load_splits`` beside reading the same rows one by one in order (not a test: figures go to BENCHMARKS.md).

Writes an AVE-shaped features file with avel's own writer (``write_features_file``: VGGish 128-d audio,
7x7x512 visual maps, one row per chunk), then times, interleaved ``--repeat`` times, for a large split
(``--train-frac`` of the rows, scattered as AVE's train rows are) and a small one (``--val-frac``):

- floor: the split's rows read one at a time in increasing order into one preallocated array per dataset;
- load_splits: ``avel.data.splits.load_splits(FILE, splits=(name,))``, the arrays as the training loop gets
  them.

Times are this process's CPU time (the file was just written and sits in the page cache: reading it is
CPU work), so other processes on a shared machine do not count. Memory: the peak of Python-tracked
allocations (numpy buffers; ``tracemalloc``) during ``load_splits`` beside the bytes of the split's arrays.

    python scripts/bench_load.py --videos 600
    python scripts/bench_load.py --videos 600 --old     # also the previous reader (fancy indexing)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np

from avel.families import load_splits
from avel.preprocessing.h5 import RowsMeta, write_features_file

T, DA, GRID, C = 10, 128, 7, 512


def write_file(path: Path, videos: int, train_frac: float, val_frac: float) -> None:
    rng = np.random.default_rng(0)
    order = rng.permutation(videos)
    n_tr, n_va = int(train_frac * videos), int(val_frac * videos)
    seg = rng.integers(0, 29, (videos, T))
    meta = RowsMeta(
        video_id=np.array([f"v{i}" for i in range(videos)], dtype=object),
        category=np.array(["c"] * videos, dtype=object),
        label=seg[:, 0].copy(),
        quality=np.array(["good"] * videos, dtype=object),
        start=np.zeros(videos, np.int64),
        end=np.full(videos, T, np.int64),
        segment_labels=seg,
        annotation_row=np.arange(videos),
        splits={"train": order[:n_tr], "val": order[n_tr : n_tr + n_va], "test": order[n_tr + n_va :]},
        classes=[f"class {k}" for k in range(28)],
    )
    audio = rng.standard_normal((videos, T, DA), dtype=np.float32)
    write_features_file(path, meta, audio, RandomRows((videos, T, GRID, GRID, C)), {"source": "bench_load"})


class RandomRows:
    """A (N, ...) float32 array-like whose rows are drawn when sliced: the writer streams it in chunks,
    so a file larger than memory can be written."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def __getitem__(self, rows: slice) -> np.ndarray:
        n = len(range(*rows.indices(self.shape[0])))
        return np.random.default_rng(rows.start).standard_normal((n, *self.shape[1:]), dtype=np.float32)


clock = time.process_time  # this process's CPU time (reads come from the page cache): others do not count


def floor(path: Path, split: str) -> float:
    """Seconds to read the split's rows one by one, in increasing order, into preallocated arrays."""
    t0 = clock()
    with h5py.File(path, "r") as f:
        rows = np.sort(f[f"splits/{split}"][()])
        for name in ("audio", "visual", "segment_labels"):
            ds = f[name]
            out = np.empty((len(rows), *ds.shape[1:]), ds.dtype)
            for i, r in enumerate(rows):
                out[i] = ds[r]
    return clock() - t0


def old_reader(path: Path, split: str) -> float:
    """The reader before #19: h5py fancy indexing below half the rows, whole array then index above."""
    t0 = clock()
    with h5py.File(path, "r") as f:
        rows = np.sort(f[f"splits/{split}"][()])
        for name in ("audio", "visual", "segment_labels"):
            ds = f[name]
            _ = ds[()][rows] if len(rows) > 0.5 * ds.shape[0] else ds[rows]
    return clock() - t0


def candidate(path: Path, split: str) -> float:
    """Seconds ``load_splits`` takes for one split."""
    t0 = clock()
    load_splits(path, splits=(split,))
    return clock() - t0


def memory(path: Path, split: str) -> tuple[int, int]:
    """Peak traced bytes during ``load_splits`` (an untimed call: tracing slows allocations) and the bytes
    of the split's arrays."""
    tracemalloc.start()
    data = load_splits(path, splits=(split,))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    s = getattr(data, split)
    return peak, sum(t.numel() * t.element_size() for t in (s.audio, s.visual, s.labels))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=600)
    ap.add_argument("--train-frac", type=float, default=0.8)
    ap.add_argument("--val-frac", type=float, default=0.1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--old", action="store_true", help="also time the previous reader")
    ap.add_argument("--dir", default=None, help="where to write the file (default: a temporary directory)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "features.h5"
        t0 = time.perf_counter()
        write_file(path, args.videos, args.train_frac, args.val_frac)
        size = path.stat().st_size / 2**20
        print(
            f"# wrote {path.name}: {args.videos} videos, {size:.0f} MiB in {time.perf_counter() - t0:.1f} s"
        )
        print("| split | rows | floor s | load_splits s | rows/s | peak traced MiB | split MiB | x floor |")
        print("|---|---|---|---|---|---|---|---|")
        ratios = []
        for split in ("train", "val"):
            times: dict[str, list[float]] = {"floor": [], "load": [], "old": []}
            peak, nbytes = memory(path, split)
            for i in range(args.repeat):  # alternate which goes first: neither always meets a cold cache
                pair = [("floor", floor), ("load", candidate)]
                for key, fn in pair if i % 2 == 0 else pair[::-1]:
                    times[key].append(fn(path, split))
                if args.old:
                    times["old"].append(old_reader(path, split))
            with h5py.File(path, "r") as f:
                n = len(f[f"splits/{split}"])
            fl, ld = statistics.median(times["floor"]), statistics.median(times["load"])
            ratios.append((split, ld / fl, peak / nbytes))
            print(
                f"| {split} | {n} | {fl:.3f} | {ld:.3f} | {n / ld:.0f} | {peak / 2**20:.0f} | "
                f"{nbytes / 2**20:.0f} | {ld / fl:.2f}x |"
            )
            if args.old:
                print(f"# {split}: previous reader {statistics.median(times['old']):.3f} s")
    parts = ", ".join(f"{s} {r:.2f}x (memory {m:.2f}x the arrays)" for s, r, m in ratios)
    print(f"ratio load_splits/floor time (goal <= 1.25x, memory <= 1.0x): {parts}")


if __name__ == "__main__":
    main()
