"""What a model family is, and the registry of families (``FAMILIES``, ``register``, ``get``).

A family is one file in ``avel/families/`` and one line in ``avel/families/__init__.py``: the avel file kinds
it trains on and the reader of each (``avel.data.splits``: how ``load_splits`` turns rows into model
inputs), its class count, its models (``build``; MMTM / CentralNet around its staged encoders), the
constructor arguments a checkpoint stores (``model_kwargs``), its fusions and Table 2's columns, and the
names of its two modality slots in logs, plots and tables (gray / colored on CG-MNIST).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from avel.data.splits import Reader
from avel.models.base import AVModel
from avel.preprocessing.h5 import FEATURES_KIND
from avel.rules import check, one_of


@dataclass(frozen=True)
class ModelArgs:
    """``build_model``'s keyword arguments, as checkpoints store them (``model_kwargs``); each family reads
    the ones that apply to it."""

    input_mode: str = "features"  # "features" (precomputed: AVEL) or "e2e" (encoders trained end to end)
    num_classes: int = 29
    modality: str = "both"  # both | audio | visual (the slot; gray / colored are CG-MNIST's names)
    width: int = 64  # ResNet18 base width (64 = the standard ResNet18)
    pretrained: bool = False
    audio_dim: int = 128  # AVEL features: the audio vector's width,
    visual_dim: int = 512  # the visual map's channels,
    regions: int = 49  # and the attention's grid size h·w (49 on 7×7)
    hidden: int = 128  # AVEL's bi-LSTM width
    audio_pool: str = "mean"  # AVEL end to end: how the audio encoder pools (mean | freq | freq_bn)
    mmtm_gate: str = "paper"
    mmtm_head: str = "concat"
    centralnet_unimodal_loss: bool = True
    compress: bool = False  # the released PMR backbone's compress / recover block (ResNet18's ``switches``)
    cg_stem: str = "layers"  # CG-MNIST encoders' input BN + first conv as modules or "fused" (CG-MNIST's)


# ModelArgs that only the families listing them in ``switches`` take: another value than the default is
# refused by the others
SWITCHES = ("compress", "cg_stem")


class Family:
    """A model family; subclass it, set the attributes, implement ``build`` and ``register`` an instance."""

    name: str = ""  # --model NAME
    label: str = ""  # how messages name one of its models, e.g. "a CG-MNIST model"
    models: str = ""  # and several, e.g. "CG-MNIST classifiers"
    fusions: tuple[str, ...] = ()  # --fusion choices (mmtm / centralnet: ``staged_encoders`` needed)
    grid_fusions: tuple[str, ...] = ()  # the columns of its ``avel ablate balancers`` grid (PMR Table 2)
    grid_rows_left_out: tuple[str, ...] = ()  # balancers-grid rows not run for it
    modality_names: tuple[str, str] = ("audio", "visual")  # its two slots in logs, plots and tables
    readers: ClassVar[dict[str, Reader]] = {}  # file kind -> how its splits become model inputs
    trains_on: str = ""  # the files it reads, in words (for a refused file)
    input_modes: tuple[str, ...] = ("e2e",)  # the ones it trains with; the first builds ``probe_model``
    per_segment: bool = False  # labels per one-second segment, background the last class (AVEL)
    switches: tuple[str, ...] = ()  # the SWITCHES its models take; the others are refused when on
    # the split the released PMR script (main_Prototype_grad.py) takes the prototypes from under the
    # released protocol: CGMNIST its test loader (L537, L554: val_dataset = the test set, L489), CREMAD
    # (and KS, VGGSound) its train loader (L539, L557); families no released script runs keep "test"
    released_prototypes: str = "test"

    def build(self, fusion: str, args: ModelArgs) -> AVModel:
        """A model of this family with a late fusion (or one modality: ``args.modality``)."""
        raise NotImplementedError

    def staged_encoders(self, args: ModelArgs) -> tuple[nn.Module, nn.Module, int] | None:
        """The two staged encoders MMTM / CentralNet fuse between, and their width D; None: no such pair."""
        return None

    def num_classes(self, kind: str, labels: int) -> int:
        """Logits of its model on a file of ``kind`` listing ``labels`` classes."""
        return labels

    def input_mode(self, kind: str) -> str:
        return "features" if kind == FEATURES_KIND else "e2e"

    def data_kwargs(
        self, cfg: Any, input_mode: str, audio_shape: tuple, visual_shape: tuple
    ) -> dict[str, Any]:
        """``ModelArgs`` its model takes from the train arrays' shapes (``audio_shape``, ``visual_shape``)
        and from ``cfg`` (an ``avel.engine.config.TrainConfig``) beyond the common ones."""
        return {}

    def reader(self, meta: dict[str, Any]) -> Reader:
        """The reader of the file ``meta`` describes; a one-line refusal naming the file for another kind."""
        kind = meta["kind"]
        if kind in self.readers:
            return self.readers[kind]
        readers = [f"{f.models} (--model {f.name})" for f in FAMILIES.values() if kind in f.readers]
        raise ValueError(
            f"{meta['path']}: a {kind} file trains {' or '.join(readers) or 'no registered model family'}, "
            f"not --model {self.name} (it trains on {self.trains_on})"
        )

    def trained_text(self, kwargs: dict[str, Any]) -> str:
        """The model a checkpoint's ``model_kwargs`` describe, in words (a refused data file's message)."""
        outputs = kwargs.get("num_classes")
        return f"{self.label} trained end to end on frames and spectrograms ({outputs} outputs)"

    def checkpoint_kinds(self, kwargs: dict[str, Any]) -> tuple[str, ...]:
        """The file kinds a checkpoint of this family with ``model_kwargs`` reads."""
        return tuple(self.readers)


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family`` to the registry (its ``name`` is --model's value); returns it."""
    if not family.name:
        raise ValueError(f"{type(family).__name__}: a family needs a name")
    FAMILIES[family.name] = family
    return family


def get(name: str) -> Family:
    """The registered family ``name``; an unknown name is an error listing the valid ones."""
    check("model", name, one_of(*FAMILIES))
    return FAMILIES[name]


def switched_on(args: ModelArgs) -> list[str]:
    """The ``SWITCHES`` of ``args`` set to another value than their default."""
    return [s for s in SWITCHES if getattr(args, s) != getattr(ModelArgs, s)]


def switch_families(switch: str) -> list[str]:
    """The families whose models take ``switch`` (one of ``SWITCHES``)."""
    return [name for name, family in FAMILIES.items() if switch in family.switches]


def modality_slot(family: str, modality: str) -> str:
    """'both' / 'audio' / 'visual' for a modality given by slot or by its name in ``family`` (gray: audio)."""
    names = FAMILIES[family].modality_names if family in FAMILIES else ("audio", "visual")
    return {names[0]: "audio", names[1]: "visual"}.get(modality, modality)
