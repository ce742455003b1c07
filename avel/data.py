"""Reading avel HDF5 files into device-resident splits, and batching them without host round trips."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
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


# transform(audio_rows, visual_rows, index, train, generator) -> (audio, visual) model inputs
Transform = Callable[[Tensor, Tensor, Tensor, bool, "torch.Generator | None"], tuple[Tensor, Tensor]]


class SplitData:
    """One split held as tensors on one device; ``batches`` gathers rows by index on that device.

    ``audio`` / ``visual`` hold the stored rows (features, or uint8 frames and spectrograms); an optional
    ``transform`` turns gathered rows into model inputs (segment cutting, GPU augmentation).
    """

    def __init__(
        self, audio: Tensor, visual: Tensor, labels: Tensor, transform: Transform | None = None,
        rows: Tensor | None = None,
    ) -> None:
        if not (len(audio) == len(visual) == len(labels)):
            raise ValueError(f"split tensors disagree in length: {len(audio)}, {len(visual)}, {len(labels)}")
        self.audio, self.visual, self.labels = audio, visual, labels
        self.transform = transform
        self.rows = rows if rows is not None else torch.arange(len(labels))  # rows in the HDF5 file

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        return self.labels.device

    def batch(self, idx: Tensor, train: bool = False, generator: torch.Generator | None = None) -> Batch:
        idx = idx.to(self.device)
        audio, visual = self.audio[idx], self.visual[idx]
        if self.transform is not None:
            audio, visual = self.transform(audio, visual, idx, train, generator)
        return Batch(audio, visual, self.labels[idx], idx)

    def batches(
        self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
        indices: Tensor | None = None, train: bool = False, drop_last: bool = False,
    ) -> Iterator[Batch]:
        """Mini-batches over ``indices`` (default: every row), shuffled with ``generator`` if asked."""
        order = indices if indices is not None else torch.arange(len(self))
        if shuffle:
            order = order[torch.randperm(len(order), generator=generator)]
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for start in range(0, stop, batch_size):
            yield self.batch(order[start : start + batch_size], train=train, generator=generator)


@dataclass
class DataSplits:
    train: SplitData
    val: SplitData
    test: SplitData
    meta: dict = field(default_factory=dict)
