"""Write tests/data/pre_families_cgmnist_mmtm.pt: a CG-MNIST checkpoint as ``avel train`` wrote it before the
model-family registry (#26; main 2ed5741): MMTM between the 4-conv encoders (gate "code", head "mean"),
PMR's prototypes in the balancer state, weights stored in float16 (a small file), plus "probe": fixed
inputs and the logits that code computed on them with those weights.

Run with the code of that commit (e.g. ``PYTHONPATH=<checkout of 2ed5741>``):
``python tests/data/make_pre_families.py WORK_DIR OUT_DIR``.
"""

import sys
from pathlib import Path

import torch

from avel.engine.checkpoint import model_from_checkpoint
from avel.engine.config import load_config
from avel.engine.train import run_training
from avel.synth.cgmnist import CGMNISTConfig, make_cgmnist

work, out = map(Path, sys.argv[1:3])
data = work / "cg.h5"
make_cgmnist(data, CGMNISTConfig(train=100, test=40, seed=3))
overrides = {
    "data": str(data), "model": "cgmnist", "fusion": "mmtm", "mmtm_gate": "code", "mmtm_head": "mean",
    "epochs": 1, "batch_size": 16, "device": "cpu", "progress": False, "out": str(work / "run"),
    "balance": "pmr", "measures": False,
}  # fmt: skip
run_training(load_config(None, overrides))
ckpt = torch.load(work / "run" / "last.pt", weights_only=False)
model, _ = model_from_checkpoint(work / "run" / "last.pt")
with torch.no_grad():  # parameters stored in float16 (a small file): round them first
    for t in model.state_dict().values():
        if t.is_floating_point():
            t.copy_(t.half().float())
gen = torch.Generator().manual_seed(1)
shapes = {"audio": (2, 1, 28, 28), "visual": (2, 3, 28, 28)}  # gray first, colored second
gray, colored = torch.randn(shapes["audio"], generator=gen), torch.randn(shapes["visual"], generator=gen)
with torch.no_grad():
    logits = model(gray, colored).logits
ckpt = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler", "rng")}  # not needed to rebuild
ckpt["model"] = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
ckpt["probe"] = {"seed": 1, **shapes, "logits": logits}
path = out / "pre_families_cgmnist_mmtm.pt"
torch.save(ckpt, path)
print(path, path.stat().st_size, logits)
