"""Train-time transforms: SpecAugment masks against a hand count, and their wiring into the data splits."""

from __future__ import annotations

import pytest
import torch

from avel.data.augment import spec_augment
from avel.families import load_splits


def test_spec_augment_masks_one_band_and_one_span_per_sample():
    a = torch.randn(3, 4, 1, 40, 25) + 10.0  # no value is 0 before masking
    out = spec_augment(a, torch.Generator().manual_seed(0), freq_frac=1 / 4, time_frac=1 / 5)
    assert out.shape == a.shape
    zero = (out == 0).reshape(12, 40, 25)
    for m in zero:
        bands = m.all(dim=1)  # bins masked over every column
        spans = m.all(dim=0)  # columns masked over every bin
        f_width, t_width = int(bands.sum()), int(spans.sum())
        assert f_width <= 10 and t_width <= 5  # 1/4 of 40 bins, 1/5 of 25 columns
        assert int(m.sum()) == f_width * 25 + t_width * 40 - f_width * t_width  # nothing else masked
        if f_width:  # one contiguous band
            idx = bands.nonzero().flatten()
            assert int(idx[-1] - idx[0]) + 1 == f_width
    kept = out != 0
    assert torch.equal(out[kept], a[kept])  # the rest untouched
    again = spec_augment(a, torch.Generator().manual_seed(0), freq_frac=1 / 4, time_frac=1 / 5)
    assert torch.equal(out, again) and zero.any()


@pytest.mark.parametrize("family", ["avel", "resnet18"])
def test_augment_audio_masks_train_batches_only(tiny_h5, family):
    plain = load_splits(tiny_h5, family=family, augment=False, splits=("train",)).train
    masked = load_splits(tiny_h5, family=family, augment=False, augment_audio=True, splits=("train",)).train
    idx = torch.arange(4)
    gen = torch.Generator().manual_seed(0)
    a0, _ = plain.transform(plain.audio[idx], plain.visual[idx], idx, True, gen)
    a1, _ = masked.transform(masked.audio[idx], masked.visual[idx], idx, True, gen)
    a2, _ = masked.transform(masked.audio[idx], masked.visual[idx], idx, False, gen)
    assert a0.shape == a1.shape  # avel (4, 10, 1, 257, W) per segment; resnet18 (4, 1, 257, 1004) per clip
    assert torch.equal(a2, a0)  # eval: no masks
    changed = a1 != a0
    assert changed.any() and torch.all(a1[changed] == 0)  # train: only masked cells differ, set to 0
