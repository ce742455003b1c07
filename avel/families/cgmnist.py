"""The CG-MNIST family (PMR Table 1's third dataset): PMR's 4-conv encoders on a gray digit (the first slot)
and a coloured copy of it (the second slot), one label per sample, read from an ``avel cgmnist`` file (the
dataset: ``avel.synth.cgmnist``)."""

from __future__ import annotations

import h5py
import numpy as np
import torch
from torch import Tensor, nn

from avel.data.splits import ReadOptions, SplitData, rows_of
from avel.families.base import Family, ModelArgs
from avel.models.base import AVModel
from avel.models.classifier import CGClassifier
from avel.models.encoders import CGConvNet
from avel.preprocessing.h5 import CGMNIST_KIND
from avel.synth.cgmnist import MODALITIES

# input normalisation of the released CG-MNIST code: MNIST's mean/std (gray), CIFAR-10's (colored)
GRAY_MEAN, GRAY_STD = 0.1307, 0.3081
COLOR_MEAN, COLOR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def read_cgmnist(f: h5py.File, rows: np.ndarray, device, meta: dict, options: ReadOptions) -> SplitData:
    """CG-MNIST samples: gray (B, 1, 28, 28) in the first (audio) slot, colored (B, 3, 28, 28) in the
    second (visual) slot, clip labels (B,). Stored as uint8, normalised per batch (released code's means)."""
    gray = torch.from_numpy(rows_of(f["gray"], rows)).to(device)  # (N, 28, 28) uint8
    colored = torch.from_numpy(rows_of(f["colored"], rows)).to(device)  # (N, 28, 28, 3) uint8
    labels = torch.from_numpy(rows_of(f["label"], rows, np.int64)).to(device)
    c_mean = torch.tensor(COLOR_MEAN, device=device)[:, None, None]
    c_std = torch.tensor(COLOR_STD, device=device)[:, None, None]

    def transform(g: Tensor, c: Tensor, idx: Tensor, train: bool, gen) -> tuple[Tensor, Tensor]:
        g = (g.float().unsqueeze(1) / 255.0 - GRAY_MEAN) / GRAY_STD
        c = (c.float().permute(0, 3, 1, 2) / 255.0 - c_mean) / c_std
        return g, c

    return SplitData(gray, colored, labels, transform, rows=torch.from_numpy(rows))


class CGMNIST(Family):
    name = "cgmnist"
    label = "a CG-MNIST model"
    models = "CG-MNIST classifiers"
    fusions = ("concat", "sum", "film", "gated", "mmtm", "centralnet")
    grid_fusions = ("concat", "film")
    grid_rows_left_out = ("OPM", "IPRM")  # Table 2's rows the paper does not run (later methods): saves CPU
    modality_names = MODALITIES  # gray, colored: PMR's modality 1 and 2
    readers = {CGMNIST_KIND: read_cgmnist}
    trains_on = "`avel cgmnist` files"
    switches = ("cg_stem",)  # the encoders' input BN + first conv as modules or fused (same parameters)

    def build(self, fusion: str, args: ModelArgs) -> AVModel:
        return CGClassifier(fusion, num_classes=args.num_classes, modality=args.modality, stem=args.cg_stem)

    def staged_encoders(self, args: ModelArgs) -> tuple[nn.Module, nn.Module, int]:
        """The pair of 4-conv encoders: MMTM / CentralNet between their last three convolutions."""
        audio, visual = CGConvNet(1, stem=args.cg_stem), CGConvNet(3, stem=args.cg_stem)
        return audio, visual, audio.fc.out_features

    def trained_text(self, kwargs: dict) -> str:
        return f"{self.label} ({kwargs.get('num_classes')} classes)"
