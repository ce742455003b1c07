"""Reading avel HDF5 files into device-resident splits, and batching them without host round trips."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class Batch:
    """Model inputs for one mini-batch, already on the training device.

    Localizer (features): audio (B, T, Da), visual (B, T, H, W, C).
    Localizer (end-to-end): audio (B, T, 1, F, W) spectrogram per second, visual (B, T, K, 3, S, S) float.
    Classifier: audio (B, 1, F, 1004), visual (B, K, 3, S, S) float.
    labels: (B, T) segment labels (background = 28) or (B,) clip labels. index: (B,) rows of the split.
    """

    audio: Tensor
    visual: Tensor
    labels: Tensor
    index: Tensor


@dataclass
class DataSplits:
    train: SplitData
    val: SplitData
    test: SplitData
    meta: dict = field(default_factory=dict)


class SplitData:
    """One split on one device. ``batches`` yields :class:`Batch` objects (filled in by avel.data)."""

    def __len__(self) -> int:  # pragma: no cover - replaced by the real implementation
        raise NotImplementedError

    def batches(
        self, batch_size: int, *, shuffle: bool = False, generator=None, indices: Tensor | None = None,
        train: bool = False,
    ) -> Iterator[Batch]:  # pragma: no cover
        raise NotImplementedError
