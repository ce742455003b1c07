"""Colored-and-gray MNIST (CG-MNIST; Kim et al., CVPR 2019 colours, as used by PMR, Fan et al., CVPR 2023):
the dataset in one place: its colouring, its HDF5 file (``kind = "avel-cgmnist"``, data/README.md) and
``avel cgmnist``, which writes one from the MNIST idx files in a folder, or embedded (digits rendered by
``avel.synth.digits``: no download). How a model reads it is the cgmnist family's (``avel.families.cgmnist``).

Each sample pairs a gray-scale digit with a monochromatic copy of the same digit (the released PMR code pairs
``MNIST[i]`` with ``colored_mnist[i]``, the same image). Colours follow Kim et al.'s
``mnist_10color_jitter_var_0.030``: ten mean colours, one per class; a sample's colour is its mean colour
plus Gaussian jitter of variance ``color_var`` per channel, clipped to [0, 1], multiplied into the digit.

- train (and val, carved from train with a fixed seed): the mean colour is the label's (strong correlation);
- test: with probability ``test_color_match`` the label's mean colour, else the mean colour of a class drawn
  uniformly at random (weak correlation: the PMR paper's "weakly color-correlated" test set; 0 makes the
  test colours independent of the class).

By default MNIST's size: 60,000 train digits (val carved from them) and 10,000 test digits, test colours
independent of the label (``DEFAULT_TEST_COLOR_MATCH``); rendered digits are cached (``avel.synth.digits``).
``SMALL`` is the earlier embedded set (2,000 / 1,000, test colours matching the label 60 % of the time)
for demos and tests. ``read_idx`` reads the standard MNIST idx files (raw or .gz); ``write_cgmnist`` writes
the file. The choices the PMR paper and its data leave open (mean colours, the test set's colour
correlation, the val split) are listed in docs/deviations.md.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from avel.preprocessing.h5 import (
    CGMNIST_KIND,
    create,
    nonfinite_rows,
    rows_text,
    set_attrs,
    strings,
    write_h5,
)

CLASSES = [str(d) for d in range(10)]
MODALITIES = ("gray", "colored")  # PMR's modality 1 and 2: avel's first (audio) and second (visual) slot
IMAGE_SIZE = 28
# ten mean colours (RGB in [0, 1]), one per digit; Kim et al. do not publish theirs, these are ten
# well-separated ones (pairwise distance >= 0.5)
MEAN_COLORS = np.array(
    [
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [1.0, 1.0, 0.0],
        [1.0, 0.0, 1.0],
        [0.0, 1.0, 1.0],
        [1.0, 0.5, 0.0],
        [0.5, 0.0, 1.0],
        [0.0, 0.5, 0.5],
        [1.0, 1.0, 1.0],
    ],
    dtype=np.float64,
)
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_UBYTE = 0x08


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (magic 0x0000 08 D, big-endian dimensions, uint8 data; gzip or raw) as a uint8 array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an idx file (bad magic number)")
    if raw[2] != _IDX_UBYTE:
        raise ValueError(f"{path}: idx data type 0x{raw[2]:02x}, only unsigned bytes (0x08) are MNIST")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated idx header")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    size = int(np.prod(shape))
    data = raw[4 + 4 * ndim :]
    if len(data) != size:
        raise ValueError(f"{path}: idx header says {shape} = {size} bytes, the file holds {len(data)}")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: no {stem} (or {stem}.gz): the standard MNIST idx files are needed")


def read_mnist_folder(folder: str | Path) -> dict[str, np.ndarray]:
    """The four standard MNIST idx files of ``folder``: train/test images (N, 28, 28) and labels (N,)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    out = {k: read_idx(find_idx(folder, stem)) for k, stem in IDX_NAMES.items()}
    for split in ("train", "test"):
        images, labels = out[f"{split}_images"], out[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"{folder}: {split} images have shape {images.shape}, expected (N, 28, 28)")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"{folder}: {len(images)} {split} images but labels of shape {labels.shape}")
        if labels.size and labels.max() > 9:
            raise ValueError(f"{folder}: {split} labels go up to {labels.max()}, MNIST has 0..9")
    return out


def color_classes(labels: np.ndarray, match: float, rng: np.random.Generator) -> np.ndarray:
    """The class whose mean colour each sample gets: its own with probability ``match``, else uniform."""
    keep = rng.random(len(labels)) < match
    return np.where(keep, labels, rng.integers(0, len(MEAN_COLORS), len(labels))).astype(np.int64)


def colorize(
    gray: np.ndarray, color_class: np.ndarray, color_var: float, rng: np.random.Generator
) -> np.ndarray:
    """(N, 28, 28) uint8 digits -> (N, 28, 28, 3) uint8: digit intensity × (mean colour + N(0, var)),
    the colour clipped to [0, 1] (Kim et al. 2019, colour jitter of variance ``color_var``)."""
    color = MEAN_COLORS[color_class] + rng.normal(0.0, np.sqrt(color_var), (len(gray), 3))
    color = np.clip(color, 0.0, 1.0)
    out = gray[..., None].astype(np.float64) * color[:, None, None, :]
    bad = nonfinite_rows(out)
    if len(bad):  # a NaN cast to uint8 is an arbitrary byte: refused, never written
        where = rows_text(bad.tolist())
        raise ValueError(f"colouring gave NaN or Inf in {where} (colour variance {color_var})")
    return np.round(out).astype(np.uint8)


def carve_val(n_train: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows) of the ``n_train`` train images: a fixed-seed random val subset."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val fraction must be in (0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(n_train)
    k = max(1, round(val_fraction * n_train))
    return np.sort(perm[k:]), np.sort(perm[:k])


def write_cgmnist(
    path: str | Path,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    seed: int = 0,
    color_var: float = 0.03,
    test_color_match: float = 0.0,
    val_fraction: float = 0.1,
    source: str = "",
    extra_attrs: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Colour both sets and write one CG-MNIST file atomically; returns the rows per split.

    Rows: the train images (train and val split), then the test images. Every random draw (val subset,
    colour classes, jitter) follows ``seed``.
    """
    if not 0 <= test_color_match <= 1:
        raise ValueError(f"test colour match must be in [0, 1], got {test_color_match}")
    if not 0 <= color_var < np.inf:
        raise ValueError(f"colour variance must be a finite number >= 0, got {color_var}")
    rng = np.random.default_rng([seed, 1])
    train_rows, val_rows = carve_val(len(train_images), val_fraction, seed)
    train_cc = train_labels.astype(np.int64)  # train and val: the label's colour
    test_cc = color_classes(test_labels.astype(np.int64), test_color_match, rng)
    gray = np.concatenate([train_images, test_images]).astype(np.uint8)
    labels = np.concatenate([train_labels, test_labels]).astype(np.int64)
    cc = np.concatenate([train_cc, test_cc])
    colored = colorize(gray, cc, color_var, rng)
    n_train = len(train_images)
    splits = {"train": train_rows, "val": val_rows, "test": n_train + np.arange(len(test_images))}
    with write_h5(path, "avel cgmnist") as f:
        set_attrs(
            f,
            CGMNIST_KIND,
            {
                "classes": CLASSES,
                "modalities": list(MODALITIES),
                "image_size": IMAGE_SIZE,
                "color_var": float(color_var),
                "test_color_match": float(test_color_match),
                "val_fraction": float(val_fraction),
                "seed": int(seed),
                "mean_colors": MEAN_COLORS.tolist(),
                "source": source,
                **(extra_attrs or {}),
            },
        )
        create(f, "gray", gray, chunks=(min(len(gray), 1024), IMAGE_SIZE, IMAGE_SIZE))
        create(f, "colored", colored, chunks=(min(len(gray), 1024), IMAGE_SIZE, IMAGE_SIZE, 3))
        create(f, "label", labels)
        create(f, "category", strings(CLASSES[i] for i in labels))
        create(f, "color_class", cc)
        for name, rows in splits.items():
            create(f, f"splits/{name}", rows.astype(np.int64))
    return {k: len(v) for k, v in splits.items()}


# P(a test digit has its class's mean colour), else a random class's: 0 = independent of the label, so the
# colored branch's test accuracy comes from shape (docs/deviations.md, docs/results.md: CG-MNIST at scale)
DEFAULT_TEST_COLOR_MATCH = 0.0


@dataclass
class CGMNISTConfig:
    """Options of ``avel cgmnist``; the defaults make MNIST's 60,000 / 10,000 digits, embedded."""

    train: int = 60000  # embedded: rendered train images (val is carved from them)
    test: int = 10000  # embedded: rendered test images
    seed: int = 0
    color_var: float = 0.03  # Kim et al.'s jitter variance (mnist_10color_jitter_var_0.030)
    test_color_match: float = DEFAULT_TEST_COLOR_MATCH
    val_fraction: float = 0.1


# the small embedded set of the CPU recipe's tables (docs/results.md), for demos and tests
SMALL = CGMNISTConfig(train=2000, test=1000, test_color_match=0.6)


def small(**changes) -> CGMNISTConfig:
    """``SMALL`` with some options changed (e.g. ``small(train=1500, test=500)`` for the demo)."""
    return replace(SMALL, **changes)


@contextmanager
def progress_bar(total: int, enabled: bool):
    """A rich progress bar of ``total`` rendered digits; yields its advance(n) (None when disabled)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("rendering digits"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
    ) as bar:
        task = bar.add_task("render", total=total)
        yield lambda n: bar.advance(task, n)


def make_cgmnist(
    out: str | Path, cfg: CGMNISTConfig, mnist_dir: str | Path | None = None, progress: bool = False
) -> dict[str, int]:
    """Write ``out`` from the idx files in ``mnist_dir``, or from rendered digits when it is None (cached;
    ``progress``: a progress bar while rendering)."""
    if mnist_dir is not None:
        mnist = read_mnist_folder(mnist_dir)
        source = f"MNIST idx files in {Path(mnist_dir).resolve()}"
        arrays = (mnist["train_images"], mnist["train_labels"], mnist["test_images"], mnist["test_labels"])
        extra: dict = {}
    else:
        if cfg.train < 10 or cfg.test < 10:
            raise ValueError(
                f"the embedded set needs >= 10 train and test digits, got {cfg.train}, {cfg.test}"
            )
        y_train = np.random.default_rng([cfg.seed, 2]).permutation(np.arange(cfg.train) % 10)
        y_test = np.random.default_rng([cfg.seed, 3]).permutation(np.arange(cfg.test) % 10)
        with progress_bar(cfg.train + cfg.test, progress) as advance:
            arrays = rendered(y_train, y_test, cfg.seed, advance)
        source = "embedded: digits rendered by avel.synth.digits"
        extra = {"rendered_train": cfg.train, "rendered_test": cfg.test}
    return write_cgmnist(
        out,
        *arrays,
        seed=cfg.seed,
        color_var=cfg.color_var,
        test_color_match=cfg.test_color_match,
        val_fraction=cfg.val_fraction,
        source=source,
        extra_attrs=extra,
    )


def rendered(
    y_train: np.ndarray, y_test: np.ndarray, seed: int, advance: Callable[[int], None] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels) of the embedded set, rendered or cached."""
    from avel.synth.digits import cached_render

    # test images draw from generators (seed, 10^6 + i): never the same draw as a train image
    return (
        cached_render(y_train, seed, 0, advance),
        y_train,
        cached_render(y_test, seed, 10**6, advance),
        y_test,
    )
