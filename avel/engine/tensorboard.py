"""TensorBoard event files beside ``metrics.jsonl`` (``--tensorboard``; rank 0 only), as the released PMR and
OGM-GE code offer with ``--use_tensorboard``: watch long runs with ``tensorboard --logdir runs/``.

Every number of an epoch's metrics line is one scalar at step = epoch: ``train/…`` (losses, ρ/β/γ,
coefficients, prototype accuracies of the batches), ``val/…`` (accuracy, each modality's prototype
accuracy), ``speed/…`` (times, samples/s) and ``lr``. Needs the ``tensorboard`` package
(``pip install 'avel[tensorboard]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPEED_KEYS = ("time_s", "train_time_s", "prototype_time_s", "samples_per_s")


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a metrics.jsonl key."""
    if key == "lr":
        return "lr"
    if key.startswith("val_"):
        return "val/" + key[4:]
    if key in SPEED_KEYS:
        return "speed/" + key
    return "train/" + key


class TensorBoardLog:
    """One run's event file writer (``torch.utils.tensorboard.SummaryWriter`` in the run directory)."""

    def __init__(self, run_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError(
                "--tensorboard needs the tensorboard package: pip install 'avel[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(log_dir=str(run_dir))

    def write(self, line: dict[str, Any]) -> None:
        """Each number of one metrics line at step ``line["epoch"]``; written to disk at once."""
        step = int(line["epoch"])
        for key, value in line.items():
            if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(scalar_tag(key), float(value), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
