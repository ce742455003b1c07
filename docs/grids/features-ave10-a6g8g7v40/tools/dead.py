"""Is a stuck audio encoder's freq head dead? Fraction of zero ReLU outputs of proj and of layer4."""

import sys

import torch

from avel.engine.checkpoint import model_from_checkpoint
from avel.families import load_splits

torch.set_num_threads(1)
model, ck = model_from_checkpoint(sys.argv[1], torch.device("cpu"))
cfg = ck["config"]
data = load_splits(
    sys.argv[2],
    family="avel",
    device=torch.device("cpu"),
    frames=cfg.get("frames", 4),
    audio_norm=cfg.get("audio_norm", "clip"),
)
enc = [m for m in model.modules() if m.__class__.__name__ == "AudioEncoder"][0]
model.eval()
batch = next(iter(data.val.batches(8)))
feats = {}
enc.net.register_forward_hook(lambda m, i, o: feats.__setitem__("layer4", o))
enc.proj.register_forward_hook(lambda m, i, o: feats.__setitem__("proj", o))
with torch.no_grad():
    out = model(batch.audio, batch.visual)
for k, v in feats.items():
    print(
        k,
        tuple(v.shape),
        "zero fraction",
        float((v == 0).float().mean()),
        "mean",
        float(v.mean()),
        "std over rows",
        float(v.flatten(1).std(0).mean()),
    )
print("logit std over rows", float(out.logits.flatten(0, -2).std(0).mean()))
