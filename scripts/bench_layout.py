"""Forward + backward time of the encoders on CPU: contiguous NCHW (avel's CPU layout) vs channels_last (the
layout before issue #24), interleaved in one process, as a ratio (not a test: figures go to BENCHMARKS.md).
Times are the process's CPU time (one torch thread by default), so other work on a shared machine does not
count.

The channels_last baseline is the path that segfaults at width 8 on 224 px frames (Intel Xeon and AMD EPYC),
so the cases stop at 112 px; ``--skip-baseline-width 8`` leaves out width 8 on a CPU where 112 px crashes too.

    python scripts/bench_layout.py                  # every case, 1 thread, 7 interleaved rounds
    python scripts/bench_layout.py --rounds 15 --threads 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from avel.families import build_model
from avel.models import encoders


def cases(skip_width: int | None) -> dict[str, tuple[torch.nn.Module, Callable[[], tuple]]]:
    """name -> (module, inputs): the CPU recipes avel trains (embedded_cremad: width 8, 3 frames of 32 px,
    a 257x299 spectrogram, batch 16), wider and larger frames, and the CG-MNIST encoder (permuted input)."""
    g = torch.Generator().manual_seed(0)
    out: dict[str, tuple[torch.nn.Module, Callable[[], tuple]]] = {}
    audio = torch.randn(16, 1, 257, 299, generator=g)
    frames = torch.rand(16, 3, 3, 32, 32, generator=g)
    for width in (8, 16):
        if width == skip_width:
            continue
        model = build_model("resnet18", "concat", input_mode="e2e", num_classes=6, width=width)
        out[f"resnet18 concat w{width}, batch 16, 3x32px + 257x299"] = (model, lambda: (audio, frames))
    for width, size, n in ((8, 112, 16), (16, 112, 16), (64, 32, 48), (64, 112, 8)):
        if width == skip_width:
            continue
        visual = torch.rand(n, 1, 3, size, size, generator=g)
        enc = encoders.VisualEncoder(width, pooled=True)
        out[f"visual encoder w{width}, {n}x{size}px"] = (enc, lambda v=visual: (v,))
    digits = torch.rand(64, 28, 28, 3, generator=g).permute(0, 3, 1, 2)  # as avel.data.splits gives them
    out["CGConvNet colored, batch 64"] = (encoders.CGConvNet(3), lambda: (digits,))
    return out


def step_time(module: torch.nn.Module, inputs: tuple, channels_last: bool, steps: int) -> float:
    """Seconds per forward + backward with the encoders' CPU layout set to channels_last or NCHW."""
    encoders.CHANNELS_LAST_DEVICES = frozenset({"cuda", "cpu"} if channels_last else {"cuda"})
    t0 = time.process_time()
    for _ in range(steps):
        out = module(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        (out.logits if hasattr(out, "logits") else out).float().square().mean().backward()
    return (time.process_time() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median ratio)")
    p.add_argument("--steps", type=int, default=3, help="steps per timing")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-baseline-width", type=int, default=None, help="leave out this width's cases")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
        platform.processor(),
    )
    print(
        f"CPU {cpu}, torch {torch.__version__}, {args.threads} thread(s), {args.rounds} rounds x {args.steps}"
    )
    print("| case | NCHW CPU s/step | channels_last CPU s/step | NCHW / channels_last |")
    print("|---|---|---|---|")
    for name, (module, make) in cases(args.skip_baseline_width).items():
        inputs = make()
        for cl in (True, False):  # warm-up of both paths
            step_time(module, inputs, cl, 1)
        nchw, last, ratio = [], [], []
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            t = {cl: step_time(module, inputs, cl, args.steps) for cl in order}
            nchw.append(t[False])
            last.append(t[True])
            ratio.append(t[False] / t[True])
        print(
            f"| {name} | {statistics.median(nchw):.4f} | {statistics.median(last):.4f} "
            f"| {statistics.median(ratio):.2f} |",
            flush=True,
        )
    encoders.CHANNELS_LAST_DEVICES = frozenset({"cuda"})


if __name__ == "__main__":
    main()
