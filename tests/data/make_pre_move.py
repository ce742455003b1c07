"""Write tests/data/pre_move_*.pt with the models of main at 5a4d50f (before #14 moved the model blocks).

Each file is a checkpoint as model_from_checkpoint reads it (model, model_kwargs, config, data_meta,
data_params) plus "probe": fixed inputs and the logits main's code computed on them.
"""

import sys
from pathlib import Path

import torch

from avel.balance import build_balancer
from avel.engine import config as config_mod
from avel.engine.config import TrainConfig
from avel.families import build_model, load_splits

tiny_h5, features_h5, out = map(Path, sys.argv[1:4])
DATA_META = ("classes", "kind", "num_classes", "input_mode", "family")
PARAMS = ("frame_size", "frames_per_segment", "sample_rate", "n_fft", "win_length", "hop_length", "segments")


def write(name, family, data_path, kwargs, cfg_over, balance="none"):
    torch.manual_seed(0)
    data = load_splits(data_path, family=family, device=torch.device("cpu"), augment=False)
    model = build_model(
        family=family, input_mode=data.meta["input_mode"], num_classes=data.meta["num_classes"], **kwargs
    )
    if balance == "iprm":
        model = build_balancer("iprm").prepare_model(model)
    batch = data.test.batch(torch.arange(2))
    if balance == "iprm":  # a few steps so that lambda moves and the heads are materialised
        model.train()
        b = build_balancer("iprm")
        for _ in range(2):
            b.training_loss(model, batch)
    model.eval()
    with torch.no_grad():  # parameters stored in float16 (small files): round them first
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    shapes = {"audio": (1, 2, *batch.audio.shape[2:]), "visual": (1, 2, *batch.visual.shape[2:])}
    if family != "avel":
        shapes = {"audio": (1, *batch.audio.shape[1:]), "visual": (1, *batch.visual.shape[1:])}
    gen = torch.Generator().manual_seed(1)
    audio = torch.randn(shapes["audio"], generator=gen)
    visual = torch.randn(shapes["visual"], generator=gen)
    with torch.no_grad():
        logits = model(audio, visual).logits
    cfg = config_mod.apply(
        TrainConfig(), {"model": family, "balance": balance, "data": "", **cfg_over}, "gen"
    )
    state = {
        "model": {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()},
        "model_kwargs": {
            "family": family,
            "input_mode": data.meta["input_mode"],
            "num_classes": data.meta["num_classes"],
            **kwargs,
        },
        "config": config_mod.to_dict(cfg),
        "epoch": 0,
        "best": {"val_accuracy": 0.0, "epoch": 0},
        "data_meta": {k: data.meta[k] for k in DATA_META},
        "data_params": {k: data.meta[k] for k in PARAMS if k in data.meta},
        "probe": {"seed": 1, **shapes, "logits": logits.clone()},
    }
    torch.save(state, out / f"pre_move_{name}.pt")
    print(
        name,
        sum(p.numel() for p in model.state_dict().values()),
        (out / f"pre_move_{name}.pt").stat().st_size,
    )


small = {"modality": "both", "pretrained": False}
write(
    "avel_e2e_concat",
    "avel",
    tiny_h5,
    {"fusion": "concat", "width": 1, "hidden": 4, "regions": 1, **small},
    {"fusion": "concat", "width": 1},
)
write(
    "resnet18_concat",
    "resnet18",
    tiny_h5,
    {"fusion": "concat", "width": 1, **small},
    {"fusion": "concat", "width": 1},
)
feat = {"audio_dim": 16, "visual_dim": 8, "regions": 4, "hidden": 4, "width": 64, **small}
write(
    "avel_features_dmrn_iprm",
    "avel",
    features_h5,
    {"fusion": "dmrn", **feat},
    {"fusion": "dmrn"},
    balance="iprm",
)
