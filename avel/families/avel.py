"""The AVEL family (Tian et al., ECCV 2018): per-segment event localization, background the last class, on
precomputed features (a features file) or end to end from frames and spectrograms (a preprocess file)."""

from __future__ import annotations

from typing import Any

from avel.data.splits import read_features, read_segments
from avel.families.base import Family, ModelArgs
from avel.models.base import AVModel
from avel.models.encoders import resnet_grid
from avel.models.localizer import AVELocalizer
from avel.preprocessing.h5 import FEATURES_KIND, PREPROCESS_KIND


class AVEL(Family):
    name = "avel"
    label = "an AVEL model"
    models = "AVEL localizers"
    fusions = ("concat", "dmrn")
    grid_fusions = ("concat", "dmrn")  # Table 4's fusions
    readers = {FEATURES_KIND: read_features, PREPROCESS_KIND: read_segments}
    trains_on = "features files and `avel preprocess` files (one label per segment)"
    input_modes = ("features", "e2e")
    per_segment = True

    def build(self, fusion: str, args: ModelArgs) -> AVModel:
        return AVELocalizer(
            fusion,
            input_mode=args.input_mode,
            num_classes=args.num_classes,
            audio_dim=args.audio_dim,
            visual_dim=args.visual_dim,
            regions=args.regions,
            modality=args.modality,
            width=args.width,
            pretrained=args.pretrained,
            hidden=args.hidden,
            audio_pool=args.audio_pool,
        )

    def data_kwargs(
        self, cfg: Any, input_mode: str, audio_shape: tuple, visual_shape: tuple
    ) -> dict[str, Any]:
        """The localizer's sizes come from the arrays: features' widths and grid, or the ResNet18 grid of the
        stored frames."""
        if input_mode == "features":  # audio (N, T, Da), visual (N, T, h, w, C)
            regions = int(visual_shape[2] * visual_shape[3])
            return {
                "audio_dim": int(audio_shape[-1]),
                "visual_dim": int(visual_shape[-1]),
                "regions": regions,
            }
        # stored frames (N, T, K, S, S, 3): the ResNet18 layer4 grid
        return {"regions": resnet_grid(int(visual_shape[3])) ** 2, "audio_pool": cfg.audio_pool}

    def trained_text(self, kwargs: dict[str, Any]) -> str:
        if kwargs.get("input_mode", "features") != "features":
            return super().trained_text(kwargs)
        audio, regions, visual = (kwargs.get(k) for k in ("audio_dim", "regions", "visual_dim"))
        return (
            f"an AVEL model trained on a features file (audio {audio}-d, visual {regions} regions x "
            f"{visual}, {kwargs.get('num_classes')} labels)"
        )

    def checkpoint_kinds(self, kwargs: dict[str, Any]) -> tuple[str, ...]:
        return (FEATURES_KIND,) if kwargs.get("input_mode", "features") == "features" else (PREPROCESS_KIND,)
