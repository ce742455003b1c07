"""Checkpoints that rebuild themselves: {model, model_kwargs, optimizer, scheduler, balancer, config, epoch}.

Written atomically (temporary file + ``os.replace``), so a kill -9 during a save leaves the previous
checkpoint intact and a resumed run continues from a consistent state.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avel import families
from avel.engine import config as config_mod
from avel.families import build_model
from avel.models.base import AVModel
from avel.preprocessing.h5 import (
    FEATURES_KIND,
    PREPROCESS_KIND,
    attr_value,
    open_avel,
)

# tests only: "last.pt:1" stops the write of last.pt for epoch 1 halfway and waits there (to be killed)
PAUSE_ENV = "AVEL_TEST_PAUSE_IN_CHECKPOINT"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` into ``PATH.tmp``, then renamed onto ``path``: a process killed while writing leaves the
    previous checkpoint (tests/test_faults.py kills one inside the write)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        if os.environ.get(PAUSE_ENV) == f"{path.name}:{state.get('epoch')}":
            _pause_halfway(f, tmp)
    os.replace(tmp, path)


def _pause_halfway(f, tmp: Path) -> None:
    """Leave ``tmp`` half written, say so on stderr, and wait to be killed."""
    f.truncate(f.tell() // 2)
    f.flush()
    print(f"paused writing {tmp}", file=sys.stderr, flush=True)
    time.sleep(3600)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"{path}: not a readable avel checkpoint ({type(e).__name__}: {e})") from None


def model_from_kwargs(kwargs: dict[str, Any], balancer_options: dict[str, Any] | None = None) -> AVModel:
    """The model ``avel.engine.train.model_kwargs`` describes: ``build_model`` of its arguments, then the
    layers its balancer (built with ``balancer_options``) adds in ``prepare_model`` (IPRM's and G-Blend's
    heads), as the training loop builds it."""
    from avel.balance import build_balancer

    args = dict(kwargs)
    balancer = build_balancer(args.pop("balancer", "none"), **(balancer_options or {}))
    return balancer.prepare_model(build_model(**args))


def config_of(ckpt: dict[str, Any], source: str) -> config_mod.TrainConfig:
    """The config a checkpoint was trained with (flat keys, as every version stored them; keys this code
    does not know are left out, keys added since take their defaults)."""
    stored = {k: v for k, v in ckpt.get("config", {}).items() if k in config_mod.field_names()}
    return config_mod.apply(config_mod.TrainConfig(), stored, source)


def model_from_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[AVModel, dict[str, Any]]:
    """Rebuild the model (balancer heads included) from a checkpoint alone: (model in eval mode, ckpt)."""
    ckpt = load_checkpoint(path, map_location=device)
    if "model_kwargs" not in ckpt:
        raise ValueError(f"{path}: not an avel checkpoint (no model_kwargs)")
    cfg = config_of(ckpt, str(path))
    kwargs = {"balancer": cfg.balance, **ckpt["model_kwargs"]}  # older checkpoints: the config's balancer
    model = model_from_kwargs(kwargs, config_mod.balancer_options(cfg))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def data_signature(path: str | Path) -> dict[str, Any]:
    """What a model needs to know of a data file before reading it: kind, class count, feature sizes."""
    with open_avel(path) as f:
        sig: dict[str, Any] = {"kind": str(attr_value(f.attrs["kind"]))}
        sig["classes"] = len(json.loads(attr_value(f.attrs["classes"])))
        sig["attrs"] = {k: attr_value(v) for k, v in f.attrs.items()}
        if sig["kind"] == FEATURES_KIND:
            v = f["visual"].shape  # (N, T, h, w, C)
            sig.update(audio_dim=int(f["audio"].shape[-1]), visual_dim=int(v[-1]), regions=int(v[2] * v[3]))
    return sig


def _data_text(sig: dict[str, Any]) -> str:
    if sig["kind"] == FEATURES_KIND:
        return (
            f"a features file (audio {sig['audio_dim']}-d, visual {sig['regions']} regions x "
            f"{sig['visual_dim']}, {sig['classes']} labels)"
        )
    if sig["kind"] == PREPROCESS_KIND:
        return f"an `avel preprocess` file of frames and spectrograms ({sig['classes']} labels)"
    return f"an {sig['kind']} file ({sig['classes']} labels)"  # avel-clips, avel-cgmnist


def check_checkpoint_data(ckpt: dict[str, Any], checkpoint: str | Path, data: str | Path) -> None:
    """Refuse, in one line naming both sides, a data file the checkpoint's model cannot read: another
    input mode or model family, other feature sizes, another number of classes."""
    kw = ckpt["model_kwargs"]
    sig = data_signature(data)
    family = families.get(kw.get("family", "avel"))
    need = family.checkpoint_kinds(kw)
    trained_kind = ckpt.get("data_meta", {}).get("kind")
    need = (trained_kind,) if trained_kind in need else need  # a clip classifier of AVE spans or of clips
    # AVE files list background as a class: a localizer predicts it, a clip classifier does not
    outputs = family.num_classes(sig["kind"], sig["classes"])
    bad = sig["kind"] not in need or outputs != kw.get("num_classes", outputs)
    if sig["kind"] == FEATURES_KIND and not bad:
        bad |= any(sig[k] != kw.get(k, sig[k]) for k in ("audio_dim", "visual_dim", "regions"))
    if bad:
        raise ValueError(
            f"{checkpoint} is {family.trained_text(kw)}, but {data} is {_data_text(sig)}; "
            "give a data file like the one the model was trained on"
        )
    for key, trained in ckpt.get("data_params", {}).items():  # how the frames and spectrograms were made
        have = sig["attrs"].get(key)
        if have is not None and have != trained:
            raise ValueError(
                f"{checkpoint} was trained on data with {key} = {trained!r}, but {data} has "
                f"{key} = {have!r}; preprocess the videos with the same parameters"
            )


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_matching_weights(model: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Copy into ``model`` the tensors of the checkpoint's model with the same name and shape (AVE-ECCV18
    trains DMRN from a trained concat model); returns (loaded names, names of ``model`` left as they were)."""
    state = load_checkpoint(path)["model"]
    own = model.state_dict()
    loaded = [k for k, v in own.items() if k in state and state[k].shape == v.shape]
    if not loaded:
        raise ValueError(f"{path}: no weight of its model matches this model (name and shape)")
    model.load_state_dict({**own, **{k: state[k] for k in loaded}})
    return loaded, [k for k in own if k not in set(loaded)]
