"""Models: the AVEL localizer (attention + bi-LSTM, concat / DMRN) and the clip classifiers.

Blocks below assemblies: ``encoders`` (every encoder), ``temporal`` (AVEL's attention and bi-LSTM),
``fusion`` (late fusions and DMRN), ``intermediate`` (MMTM, CentralNet between encoder stages) and
``prototypes`` (PMR's prototype classifier) are the blocks; ``localizer`` and ``classifier`` assemble them;
``base`` holds the ``AVModel`` contract every model follows. ``build_model(**kwargs)`` is the one
constructor; checkpoints store its kwargs to rebuild a model (``avel.engine.checkpoint.model_from_kwargs``).
"""

from __future__ import annotations

from avel.models.base import AVModel, ModelOutput, count_parameters
from avel.models.classifier import AVClassifier, CentralNetClassifier, CGClassifier, MMTMClassifier
from avel.models.encoders import AudioEncoder, CGConvNet, VisualEncoder
from avel.models.localizer import AVELocalizer

MODEL_FAMILIES: dict[str, type[AVModel]] = {
    "avel": AVELocalizer,
    "resnet18": AVClassifier,
    "cgmnist": CGClassifier,
}
FUSIONS: dict[str, tuple[str, ...]] = {
    "avel": ("concat", "dmrn"),
    "resnet18": ("concat", "sum", "film", "gated", "mmtm", "centralnet"),
    "cgmnist": ("concat", "sum", "film", "gated", "mmtm", "centralnet"),
}
INTERMEDIATE_FUSIONS = ("mmtm", "centralnet")  # inside the encoders (PMR Table 3)
MODALITIES = ("both", "audio", "visual")
# what each family's two branch slots hold (PMR's modality 1 and 2); on CG-MNIST --modality gray / colored
# name the slots
MODALITY_NAMES: dict[str, tuple[str, str]] = {
    "avel": ("audio", "visual"),
    "resnet18": ("audio", "visual"),
    "cgmnist": ("gray", "colored"),
}


def modality_slot(family: str, modality: str) -> str:
    """'both' / 'audio' / 'visual' for a modality given by slot or by its name in ``family`` (gray: audio)."""
    names = MODALITY_NAMES.get(family, ("audio", "visual"))
    return {names[0]: "audio", names[1]: "visual"}.get(modality, modality)


INPUT_MODES = ("features", "e2e")


def build_model(
    family: str,
    fusion: str,
    *,
    input_mode: str = "features",
    num_classes: int = 29,
    audio_dim: int = 128,
    visual_dim: int = 512,
    regions: int = 49,
    modality: str = "both",
    width: int = 64,
    pretrained: bool = False,
    hidden: int = 128,
    mmtm_gate: str = "paper",
    mmtm_head: str = "concat",
    centralnet_unimodal_loss: bool = True,
    audio_pool: str = "mean",
    compress: bool = False,
    cg_stem: str = "layers",
) -> AVModel:
    """An AVEL localizer (``family="avel"``, per segment, background = the last class) or a ResNet18 clip
    classifier (``family="resnet18"``). ``regions`` is the attention's grid size h·w (49 on 7×7).
    ``compress``: the ResNet18 pair with the released PMR backbone's compress / recover block after
    layer2 (``avel.models.encoders.compress_block``; resnet18 family only). ``cg_stem``: the CG-MNIST
    encoders' first BN and convolution as modules or fused (``avel.models.encoders.CGConvNet``)."""
    _check("model family", family, MODEL_FAMILIES)
    _check(f"fusion for {family}", fusion, FUSIONS[family])
    modality = modality_slot(family, modality)
    _check("modality", modality, MODALITIES)
    _check("input mode", input_mode, INPUT_MODES)
    if family == "resnet18" and input_mode != "e2e":
        raise ValueError("resnet18 classifiers train end to end (input_mode 'e2e'), not on features")
    if compress and family != "resnet18":
        raise ValueError(f"compress applies to the resnet18 family, not {family}")
    if cg_stem != "layers" and family != "cgmnist":
        raise ValueError(f"cg_stem applies to the cgmnist family, not {family}")
    if fusion in INTERMEDIATE_FUSIONS:
        if modality != "both":
            raise ValueError(f"fusion {fusion!r} fuses inside the encoders: it needs both modalities")
        mmtm = {"gate": mmtm_gate, "head": mmtm_head}
        options = mmtm if fusion == "mmtm" else {"unimodal_loss": centralnet_unimodal_loss}
        return _intermediate(family, fusion, num_classes, width, pretrained, compress, cg_stem, **options)
    if family == "cgmnist":
        return CGClassifier(fusion, num_classes=num_classes, modality=modality, stem=cg_stem)
    if family == "resnet18":
        return AVClassifier(
            fusion,
            num_classes=num_classes,
            modality=modality,
            width=width,
            pretrained=pretrained,
            compress=compress,
        )
    return AVELocalizer(
        fusion,
        input_mode=input_mode,
        num_classes=num_classes,
        audio_dim=audio_dim,
        visual_dim=visual_dim,
        regions=regions,
        modality=modality,
        width=width,
        pretrained=pretrained,
        hidden=hidden,
        audio_pool=audio_pool,
    )


def _intermediate(
    family: str,
    fusion: str,
    num_classes: int,
    width: int,
    pretrained: bool,
    compress: bool,
    cg_stem: str,
    **options,
) -> AVModel:
    """MMTM / CentralNet between the stages of two staged encoders (PMR Table 3): the ResNet18 pair (the
    three final residual stages) or the CG-MNIST pair of 4-conv encoders (the last three convolutions)."""
    if family == "cgmnist":
        audio, visual = CGConvNet(1, stem=cg_stem), CGConvNet(3, stem=cg_stem)
        dim = audio.fc.out_features
    else:
        audio = AudioEncoder(width, compress=compress)
        visual, dim = VisualEncoder(width, pretrained, pooled=True, compress=compress), 8 * width
    assembly = MMTMClassifier if fusion == "mmtm" else CentralNetClassifier
    model = assembly(audio, visual, num_classes=num_classes, dim=dim, **options)
    model.family = family
    return model


def _check(what: str, value: str, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {list(valid)}")


def describe(model: AVModel) -> str:
    """One line: family, fusion, input mode, parameter count."""
    family = getattr(model, "family", None) or {AVELocalizer: "avel", CGClassifier: "cgmnist"}.get(
        type(model), "resnet18"
    )
    mode = f", {model.input_mode}" if isinstance(model, AVELocalizer) else ""
    return f"{family} {model.fusion_name}{mode}: {count_parameters(model):,} parameters"


__all__ = [
    "FUSIONS",
    "INTERMEDIATE_FUSIONS",
    "MODALITY_NAMES",
    "MODEL_FAMILIES",
    "modality_slot",
    "AVModel",
    "ModelOutput",
    "build_model",
    "describe",
]
