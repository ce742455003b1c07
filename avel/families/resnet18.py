"""The ResNet18 clip classifiers (the PMR / OGM-GE setting): one label per clip, from each AVE video's event
span (a preprocess file) or from a clip dataset's stored clips (CREMA-D, ``avel-clips``)."""

from __future__ import annotations

from torch import nn

from avel.data.splits import read_event_clips, read_stored_clips
from avel.families.base import Family, ModelArgs
from avel.models.base import AVModel
from avel.models.classifier import AVClassifier
from avel.models.encoders import AudioEncoder, VisualEncoder
from avel.preprocessing.h5 import CLIPS_KIND, PREPROCESS_KIND


class ResNet18(Family):
    name = "resnet18"
    label = "a ResNet18 model"
    models = "ResNet18 clip classifiers"
    fusions = ("concat", "sum", "film", "gated", "mmtm", "centralnet")
    grid_fusions = ("concat", "film")  # Table 2 compares on concat and FiLM
    readers = {PREPROCESS_KIND: read_event_clips, CLIPS_KIND: read_stored_clips}
    trains_on = "frames and spectrograms: `avel preprocess` files and clip datasets"
    released_prototypes = "train"  # the released CREMA-D script: a fresh tenth of train every epoch
    switches = ("compress",)  # the released PMR backbone's compress / recover block after layer2

    def build(self, fusion: str, args: ModelArgs) -> AVModel:
        return AVClassifier(
            fusion, num_classes=args.num_classes, modality=args.modality, width=args.width,
            pretrained=args.pretrained, compress=args.compress,
        )  # fmt: skip

    def staged_encoders(self, args: ModelArgs) -> tuple[nn.Module, nn.Module, int]:
        """The ResNet18 pair: MMTM / CentralNet between its three final residual stages."""
        audio = AudioEncoder(args.width, compress=args.compress)
        visual = VisualEncoder(args.width, args.pretrained, pooled=True, compress=args.compress)
        return audio, visual, 8 * args.width

    def num_classes(self, kind: str, labels: int) -> int:
        return labels - 1 if kind == PREPROCESS_KIND else labels  # AVE lists background: no clip label
