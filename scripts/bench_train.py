"""Epoch time of the training loop on random AVE-shaped data (not a test: figures go to BENCHMARKS.md).

AVEL on features: 3,339 train videos x 10 segments, VGGish audio (128) and VGG19 pool5 maps (7x7x512),
batch 64 — the reference AVE-ECCV18 loop takes 1.57 s (concat) / 1.68 s (DMRN) per epoch on an H100.
ResNet18 classifiers end to end: samples/s with 4 frames of 224 px and a 257x1004 spectrogram per sample.

    python scripts/bench_train.py avel --device cuda                   # every fusion x balancer
    python scripts/bench_train.py resnet18 --device cuda --videos 1024
    python scripts/bench_train.py avel --device cpu --videos 256        # a quick CPU figure
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from avel.balance import build_balancer
from avel.data.splits import DataSplits, SplitData
from avel.engine.config import TrainConfig
from avel.engine.train import build_optimizer, train_one_epoch
from avel.families import build_model


def avel_data(videos: int, device: torch.device, grid: int = 7, channels: int = 512) -> DataSplits:
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(videos, 10, 128, generator=g).to(device)
    visual = torch.randn(videos, 10, grid, grid, channels, generator=g).to(device)
    labels = torch.randint(0, 29, (videos, 10), generator=g).to(device)
    split = SplitData(audio, visual, labels)
    return DataSplits(split, split, split, {"num_classes": 29})


def resnet_data(videos: int, device: torch.device, size: int, frames: int) -> DataSplits:
    from avel.data.augment import frames_to_input

    g = torch.Generator().manual_seed(0)
    audio = torch.randn(videos, 1, 257, 1004, generator=g).to(device)
    visual = torch.randint(0, 255, (videos, frames, size, size, 3), generator=g, dtype=torch.uint8).to(device)
    labels = torch.randint(0, 28, (videos,), generator=g).to(device)

    def transform(a, v, idx, train, gen):
        return a, frames_to_input(v, train, True, gen)

    split = SplitData(audio, visual, labels, transform)
    return DataSplits(split, split, split, {"num_classes": 28})


def time_epochs(model, balancer, data, cfg, device, epochs: int) -> float:
    """Median seconds per epoch (prototype pass included) after one warm-up epoch."""
    optimizer = build_optimizer(cfg, model.parameters())
    gen = torch.Generator().manual_seed(0)
    times = []
    for epoch in range(epochs + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        balancer.on_epoch_start(model, data, epoch)
        train_one_epoch(model, balancer, data.train, optimizer, cfg, gen)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if epoch:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("family", choices=["avel", "resnet18"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--videos", type=int, default=3339)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--size", type=int, default=224, help="resnet18: frame size")
    ap.add_argument("--width", type=int, default=64, help="resnet18: base width")
    ap.add_argument("--fusions", default=None, help="comma-separated (default: all of the family)")
    ap.add_argument("--balancers", default="none,pmr,ogm-ge,opm,iprm,dropout")
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"# {args.family} | device {name} | torch {torch.__version__} | videos {args.videos}"
        f" | batch {args.batch_size}"
    )
    fusions = (args.fusions or ("concat,dmrn" if args.family == "avel" else "concat,sum,film,gated")).split(
        ","
    )
    if args.family == "avel":
        data = avel_data(args.videos, device)
    else:
        data = resnet_data(args.videos, device, args.size, 4)
    cfg = TrainConfig(
        batch_size=args.batch_size, amp=args.amp, optimizer="adam" if args.family == "avel" else "sgd"
    )
    print("| fusion | balancer | s/epoch | samples/s | x none |")
    print("|---|---|---|---|---|")
    for fusion in fusions:
        base = None
        for bal in args.balancers.split(","):
            torch.manual_seed(0)
            kw = (
                {"input_mode": "features", "audio_dim": 128, "visual_dim": 512}
                if args.family == "avel"
                else {"input_mode": "e2e", "num_classes": 28, "width": args.width}
            )
            model = build_model(args.family, fusion, **kw).to(device)
            balancer = build_balancer(bal)
            reason = balancer.applies_to(model)
            if reason:
                print(f"| {fusion} | {bal} | n/a | | |")
                continue
            model = balancer.prepare_model(model).to(device)
            if args.family == "resnet18" and device.type == "cuda":
                model = model.to(memory_format=torch.channels_last)
            s = time_epochs(model, balancer, data, cfg, device, args.epochs)
            base = base or s
            print(f"| {fusion} | {bal} | {s:.3f} | {args.videos / s:.0f} | {s / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
