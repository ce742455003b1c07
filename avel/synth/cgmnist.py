"""``avel cgmnist``: a Colored-and-gray MNIST file (PMR Table 1's third dataset), from the MNIST idx files
in a folder, or embedded (digits rendered by ``avel.synth.digits``: no download).

The file format and the colouring are ``avel.preprocessing.cgmnist``; the choices the PMR paper and its data
leave open (mean colours, the test set's colour correlation, the val split) are listed in
docs/deviations.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avel.preprocessing.cgmnist import read_mnist_folder, write_cgmnist


@dataclass
class CGMNISTConfig:
    """Options of ``avel cgmnist``; the defaults make the embedded set of docs/results.md."""

    train: int = 2000  # embedded: rendered train images (val is carved from them)
    test: int = 1000  # embedded: rendered test images
    seed: int = 0
    color_var: float = 0.03  # Kim et al.'s jitter variance (mnist_10color_jitter_var_0.030)
    test_color_match: float = 0.6  # P(a test digit has its class's mean colour); else a random class's
    val_fraction: float = 0.1


def make_cgmnist(out: str | Path, cfg: CGMNISTConfig, mnist_dir: str | Path | None = None) -> dict[str, int]:
    """Write ``out`` from the idx files in ``mnist_dir``, or from rendered digits when it is None."""
    if mnist_dir is not None:
        mnist = read_mnist_folder(mnist_dir)
        source = f"MNIST idx files in {Path(mnist_dir).resolve()}"
        arrays = (mnist["train_images"], mnist["train_labels"], mnist["test_images"], mnist["test_labels"])
        extra: dict = {}
    else:
        from avel.synth.digits import render_digits

        if cfg.train < 10 or cfg.test < 10:
            raise ValueError(
                f"the embedded set needs >= 10 train and test digits, got {cfg.train}, {cfg.test}"
            )
        y_train = np.random.default_rng([cfg.seed, 2]).permutation(np.arange(cfg.train) % 10)
        y_test = np.random.default_rng([cfg.seed, 3]).permutation(np.arange(cfg.test) % 10)
        # test images draw from generators (seed, 10^6 + i): never the same draw as a train image
        arrays = (
            render_digits(y_train, cfg.seed, 0),
            y_train,
            render_digits(y_test, cfg.seed, 10**6),
            y_test,
        )
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
