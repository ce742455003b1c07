"""Train-time transforms that run on the training device, batched: no per-sample Python, no host round trips.

Frames, train: random-resized-crop (scale 0.08–1, ratio 3/4–4/3, as torchvision) + horizontal flip +
ImageNet normalisation, done with one ``affine_grid``/``grid_sample`` call for the whole batch. Eval:
normalisation only (frames are stored already resized and center-cropped by ``avel preprocess``).

Spectrograms, train, when asked (``augment_audio``): SpecAugment without time warping (Park et al., 2019),
one frequency band and one time span masked per sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float_chw(frames: Tensor) -> Tensor:
    """uint8 (..., S, S, 3) -> float (..., 3, S, S) in [0, 1]."""
    return frames.movedim(-1, -3).float().div_(255.0)


def normalize(x: Tensor) -> Tensor:
    """ImageNet normalisation of (..., 3, S, S) floats in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def random_resized_crop_flip(
    x: Tensor,
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    """Random-resized-crop + horizontal flip of (N, 3, S, S) frames, one crop per leading sample.

    The crop box is drawn per sample (area fraction in ``scale``, aspect in ``ratio``, clamped to fit) and
    resampled bilinearly to the same S×S; frames of one sample share a box if the caller folds them together.
    """
    n = x.shape[0]
    dev = x.device
    u = torch.rand(n, 5, generator=generator, device="cpu").to(dev)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)  # crop width / image width
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (1 - w) * (2 * u[:, 2] - 1)  # centre in [-1+w, 1-w] (normalised coordinates)
    cy = (1 - h) * (2 * u[:, 3] - 1)
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def frames_to_input(frames: Tensor, train: bool, augment: bool, generator: torch.Generator | None) -> Tensor:
    """uint8 (B, ..., S, S, 3) -> normalised float (B, ..., 3, S, S); random crop/flip per sample if training.

    All frames of one sample (its segments / clip frames) share one crop, as a video-level augmentation.
    """
    x = to_float_chw(frames)
    if train and augment:
        b, s = x.shape[0], x.shape[-1]
        inner = x.shape[1:-3]
        k = math.prod(inner)
        y = random_resized_crop_flip(x.reshape(b, k * 3, s, s), generator)  # one box per sample
        x = y.reshape(x.shape)
    return normalize(x)


def spec_augment(
    a: Tensor, generator: torch.Generator | None, freq_frac: float = 1 / 8, time_frac: float = 1 / 5
) -> Tensor:
    """SpecAugment masks of (..., F, W) log-spectrograms: per leading sample, one band of 0..freq_frac·F bins
    and one span of 0..time_frac·W columns set to 0, the clip mean of the standardised log-spectrogram."""
    *lead, f, w = a.shape
    n = math.prod(lead)
    u = torch.rand(n, 4, generator=generator, device="cpu").to(a.device)
    f_width = (u[:, 0] * (int(freq_frac * f) + 1)).long()
    f_start = (u[:, 1] * (f - f_width + 1)).long()
    t_width = (u[:, 2] * (int(time_frac * w) + 1)).long()
    t_start = (u[:, 3] * (w - t_width + 1)).long()
    bins, cols = torch.arange(f, device=a.device), torch.arange(w, device=a.device)
    f_mask = (bins >= f_start[:, None]) & (bins < (f_start + f_width)[:, None])  # (n, F)
    t_mask = (cols >= t_start[:, None]) & (cols < (t_start + t_width)[:, None])  # (n, W)
    mask = f_mask[:, :, None] | t_mask[:, None, :]
    return a.reshape(n, f, w).masked_fill(mask, 0.0).reshape(a.shape)
