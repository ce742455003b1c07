"""Model families: each is one file here (its data readers, its models, its checkpoint kwargs, its fusions and
the names of its modalities) and one entry of the ``register`` loop below; nothing else branches on a family.

``load_splits`` reads a file as a family needs it; ``build_model`` is the one constructor of a model
(checkpoints store its keyword arguments: ``avel.engine.checkpoint.model_from_kwargs``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from avel.data.splits import DataSplits, ReadOptions, read_splits
from avel.families.avel import AVEL
from avel.families.base import (
    FAMILIES,
    Family,
    ModelArgs,
    get,
    modality_slot,
    register,
    switch_families,
    switched_on,
)
from avel.families.cgmnist import CGMNIST
from avel.families.resnet18 import ResNet18
from avel.models.base import AVModel
from avel.models.classifier import CentralNetClassifier, MMTMClassifier
from avel.preprocessing.h5 import SPLIT_NAMES
from avel.rules import check, one_of

for _family in (AVEL(), ResNet18(), CGMNIST()):  # registration order: --model's and error messages' order
    register(_family)

INTERMEDIATE_FUSIONS = ("mmtm", "centralnet")  # inside the encoders (PMR Table 3)
MODALITIES = ("both", "audio", "visual")
INPUT_MODES = {
    "features": "train on precomputed features (input_mode 'features')",
    "e2e": "train end to end (input_mode 'e2e')",
}


def load_splits(
    path: str | Path,
    *,
    family: str = "avel",
    device: str | torch.device = "cpu",
    frames: int = 4,
    augment: bool = True,
    augment_audio: bool = False,
    splits: tuple[str, ...] = SPLIT_NAMES,
    eval_frames: int = 0,
    audio_norm: str = "clip",
) -> DataSplits:
    """Every split of an avel file onto ``device`` in the layout ``family`` needs: its reader for the
    file's kind (``Family.readers``, options ``avel.data.splits.ReadOptions``), its class count and input
    mode in ``meta`` (and its modality names where the file has none). A kind the family does not read is
    refused in one line naming the file."""
    fam = get(family)
    options = ReadOptions(frames, augment, augment_audio, eval_frames, audio_norm)
    data = read_splits(path, fam.reader, device=device, options=options, splits=splits)
    kind = data.meta["kind"]
    data.meta["num_classes"] = fam.num_classes(kind, len(data.meta["classes"]))
    data.meta["family"] = fam.name
    data.meta["input_mode"] = fam.input_mode(kind)
    data.meta.setdefault("modalities", list(fam.modality_names))  # the file's names, else the family's
    return data


def build_model(family: str, fusion: str, **kwargs: Any) -> AVModel:
    """A model of ``family`` with ``fusion``; ``kwargs`` are ``ModelArgs``' (an input mode the family does
    not train with is refused). MMTM / CentralNet fuse between the stages of its two staged encoders."""
    fam = get(family)
    check(f"fusion for {family}", fusion, one_of(*fam.fusions))
    args = ModelArgs(**kwargs)
    modality = modality_slot(family, args.modality)
    check("modality", modality, one_of(*dict.fromkeys((*MODALITIES, *fam.modality_names))))
    check("input_mode", args.input_mode, one_of(*INPUT_MODES))
    if args.input_mode not in fam.input_modes:
        how = " or ".join(INPUT_MODES[m] for m in fam.input_modes)
        raise ValueError(f"{fam.models} {how}, not with input_mode {args.input_mode!r}")
    for switch in (s for s in switched_on(args) if s not in fam.switches):
        raise ValueError(
            f"{switch} applies to the {' / '.join(switch_families(switch))} family, not {family}"
        )
    args = replace(args, modality=modality)
    model = _intermediate(fam, fusion, args) if fusion in INTERMEDIATE_FUSIONS else fam.build(fusion, args)
    model.family = fam.name
    return model


def _intermediate(fam: Family, fusion: str, args: ModelArgs) -> AVModel:
    """MMTM / CentralNet between the stages of ``fam``'s two staged encoders (PMR Table 3)."""
    if args.modality != "both":
        raise ValueError(f"fusion {fusion!r} fuses inside the encoders: it needs both modalities")
    encoders = fam.staged_encoders(args)
    if encoders is None:
        raise ValueError(f"fusion {fusion!r} fuses inside staged encoders: {fam.models} have none")
    audio, visual, dim = encoders
    if fusion == "mmtm":
        options: dict[str, Any] = {"gate": args.mmtm_gate, "head": args.mmtm_head}
        return MMTMClassifier(audio, visual, num_classes=args.num_classes, dim=dim, **options)
    unimodal = {"unimodal_loss": args.centralnet_unimodal_loss}
    return CentralNetClassifier(audio, visual, num_classes=args.num_classes, dim=dim, **unimodal)


__all__ = [
    "FAMILIES",
    "INTERMEDIATE_FUSIONS",
    "MODALITIES",
    "Family",
    "ModelArgs",
    "build_model",
    "get",
    "load_splits",
    "modality_slot",
    "register",
    "switch_families",
]
