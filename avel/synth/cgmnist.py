"""``avel cgmnist``: a Colored-and-gray MNIST file (PMR Table 1's third dataset), from the MNIST idx files
in a folder, or embedded (digits rendered by ``avel.synth.digits``: no download).

By default MNIST's size: 60,000 train digits (val carved from them) and 10,000 test digits, test colours
independent of the label (``DEFAULT_TEST_COLOR_MATCH``); rendered digits are cached (``avel.synth.digits``).
``SMALL`` is the earlier embedded set (2,000 / 1,000, test colours matching the label 60 % of the time)
for demos and tests.

The file format and the colouring are ``avel.preprocessing.cgmnist``; the choices the PMR paper and its data
leave open (mean colours, the test set's colour correlation, the val split) are listed in
docs/deviations.md.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from avel.preprocessing.cgmnist import read_mnist_folder, write_cgmnist

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
