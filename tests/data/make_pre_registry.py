"""Write tests/data/pre_registry_resnet18_gblend.pt: a checkpoint as ``avel train`` wrote it before the
balancer registry (#26), with the flat config keys of that code (``gblend_predict``, ``pmr_alpha``, ...),
plus "probe": fixed inputs and the logits that code computed on them.

Run with the code of that commit on the tests' tiny AVE file:
``python tests/data/make_pre_registry.py TINY.h5 WORK_DIR OUT_DIR``.
"""

import sys
from pathlib import Path

import torch

from avel.engine.checkpoint import model_from_checkpoint
from avel.engine.config import load_config
from avel.engine.train import run_training

tiny_h5, work, out = map(Path, sys.argv[1:4])
overrides = {
    "data": str(tiny_h5), "model": "resnet18", "fusion": "concat", "width": 1, "epochs": 1, "batch_size": 8,
    "device": "cpu", "progress": False, "out": str(work / "run"), "balance": "gblend",
    "gblend_predict": "mean", "gblend_holdout": 0.2, "gblend_super_epoch": 2,  # predict=mean: other logits
    "pmr_alpha": 1.5, "ogm_warmup": 3,  # options of other tables, stored as flat keys
}  # fmt: skip
run_training(load_config(None, overrides))
ckpt = torch.load(work / "run" / "last.pt", weights_only=False)
model, _ = model_from_checkpoint(work / "run" / "last.pt")
gen = torch.Generator().manual_seed(1)
shapes = {"audio": (1, 1, 257, 1004), "visual": (1, 4, 3, 32, 32)}  # one clip: spectrogram, 4 frames
with torch.no_grad():
    logits = model(
        torch.randn(shapes["audio"], generator=gen), torch.randn(shapes["visual"], generator=gen)
    ).logits
ckpt = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler")}  # not needed to rebuild: small
ckpt["probe"] = {"seed": 1, **shapes, "logits": logits}
path = out / "pre_registry_resnet18_gblend.pt"
torch.save(ckpt, path)
print(path, path.stat().st_size, logits)
