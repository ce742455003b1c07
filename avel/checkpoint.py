"""Checkpoints that rebuild themselves: {model, model_kwargs, optimizer, scheduler, balancer, config, epoch}.

Written atomically (temporary file + ``os.replace``), so a kill -9 during a save leaves the previous
checkpoint intact and a resumed run continues from a consistent state.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from avel import config as config_mod
from avel.models import build_model
from avel.models.base import AVModel


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"{path}: not a readable avel checkpoint ({type(e).__name__}: {e})") from None


def model_from_kwargs(kwargs: dict[str, Any], balancer_options: dict[str, Any] | None = None) -> AVModel:
    """The model ``avel.train.model_kwargs`` describes: ``build_model`` of its arguments, then the layers its
    balancer (built with ``balancer_options``) adds in ``prepare_model`` (IPRM's and G-Blend's heads), as
    the training loop builds it."""
    from avel.balance import build_balancer

    args = dict(kwargs)
    balancer = build_balancer(args.pop("balancer", "none"), **(balancer_options or {}))
    return balancer.prepare_model(build_model(**args))


def model_from_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[AVModel, dict[str, Any]]:
    """Rebuild the model (balancer heads included) from a checkpoint alone: (model in eval mode, ckpt)."""
    ckpt = load_checkpoint(path, map_location=device)
    if "model_kwargs" not in ckpt:
        raise ValueError(f"{path}: not an avel checkpoint (no model_kwargs)")
    stored = {k: v for k, v in ckpt.get("config", {}).items() if k in config_mod.field_names()}
    cfg = config_mod.apply(config_mod.TrainConfig(), stored, str(path))
    kwargs = {"balancer": cfg.balance, **ckpt["model_kwargs"]}  # older checkpoints: the config's balancer
    model = model_from_kwargs(kwargs, config_mod.balancer_options(cfg))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


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
