"""Per-video test accuracy of fused runs -> the clustered sampling std of the test split (issue 25)."""

import sys
from pathlib import Path

import torch

from avel.engine.checkpoint import model_from_checkpoint
from avel.engine.evaluate import predict_split
from avel.families import load_splits

grid = Path(sys.argv[1])
cells = sys.argv[2].split(",")
pair = sys.argv[3]
torch.set_num_threads(1)
for cell in cells:
    for s in range(5):
        ck = grid / cell / f"seed{s}" / "best.pt"
        if not ck.exists():
            continue
        model, ckpt = model_from_checkpoint(ck, torch.device("cpu"))
        cfg = ckpt["config"]
        data = load_splits(
            pair.format(seed=s),
            family=cfg["model"],
            device=torch.device("cpu"),
            frames=cfg.get("frames", 4),
            eval_frames=cfg.get("eval_frames", 0),
            audio_norm=cfg.get("audio_norm", "clip"),
        )
        pred = predict_split(model, data.test)
        y = data.test.labels
        ok = (pred["logits"].argmax(-1) == y).float()  # (videos, T)
        pv = ok.mean(-1)
        n, p = ok.numel(), ok.mean().item()
        clus = pv.std(unbiased=True).item() / len(pv) ** 0.5
        binom = (p * (1 - p) / n) ** 0.5
        print(
            f"{cell} s{s}: shape {tuple(ok.shape)} acc {100 * p:.1f}  binomial std {100 * binom:.2f}  "
            f"clustered std {100 * clus:.2f}  deff {(clus / binom) ** 2 if binom else 0:.1f}  "
            f"videos <100%: {(pv < 1).sum().item()}",
            flush=True,
        )
