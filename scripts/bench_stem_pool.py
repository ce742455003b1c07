"""The ResNet18 stem's pool on CPU (not a test: BENCHMARKS.md, #30): bn1 -> ReLU -> max pool forward +
backward against bn1 -> max pool -> ReLU (max commutes with ReLU: the same values, gradients equal up to
rounding, checked here), with PyTorch's NCHW pool and with avel's ``MaxPool2d`` (channels_last inside, with
and without a channels_last gradient), interleaved, process CPU time of one thread, medians.

    python scripts/bench_stem_pool.py --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from avel.models.encoders import MaxPool2d

# the layer-1 map after conv1: 3 frames x batch 16 of 224 px at width 64, the 257 x 299 spectrogram at
# width 64 and width 8 (the CPU recipes), batch 16
SHAPES = {
    "visual w64 224px x48": (48, 64, 112, 112),
    "audio w64 257x299 x16": (16, 64, 129, 150),
    "audio w8 257x299 x16": (16, 8, 129, 150),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    relu = nn.ReLU(inplace=True)
    plain, cl, cl_grad = (
        nn.MaxPool2d(3, 2, 1),
        MaxPool2d(3, 2, 1),
        MaxPool2d(3, 2, 1, grad_channels_last=True),
    )
    print("| map | case | CPU s (fwd + bwd) |\n|---|---|---|")
    for name, shape in SHAPES.items():
        bn = nn.BatchNorm2d(shape[1])
        cases = {
            "ReLU -> avel MaxPool2d (before #30)": lambda x, bn=bn: cl(relu(bn(x))),
            "ReLU -> avel MaxPool2d, channels_last gradient": lambda x, bn=bn: cl_grad(relu(bn(x))),
            "ReLU -> NCHW pool (the release, torchvision)": lambda x, bn=bn: plain(relu(bn(x))),
            "NCHW pool -> ReLU (avel since #30)": lambda x, bn=bn: relu(plain(bn(x))),
        }
        x0 = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        g = torch.randn(shape[0], shape[1], (shape[2] + 1) // 2, (shape[3] + 1) // 2)
        times: dict[str, list[float]] = {k: [] for k in cases}
        ref = None
        for r in range(args.rounds + 1):  # round 0 warms up
            for k, f in cases.items():
                x = x0.clone().requires_grad_(True)
                t0 = time.process_time()
                f(x).backward(g)
                dt = time.process_time() - t0
                if r:
                    times[k].append(dt)
                ref = x.grad if ref is None else ref
                assert torch.allclose(ref, x.grad, atol=1e-6), k
        for k, v in times.items():
            print(f"| {name} | {k} | {statistics.median(v):.3f} |")


if __name__ == "__main__":
    main()
