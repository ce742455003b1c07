"""One training step of the released PMR AVClassifier (with and without its compress block) beside avel's
resnet18 concat model, fp32 and bf16 autocast, on the same random inputs (not a test: BENCHMARKS.md, #30):
process CPU time per step (one thread, interleaved, medians), then ``torch.profiler``'s table of one fp32
step of each (its times are wall time: on a shared machine compare the shares, not the seconds).

    python scripts/bench_step_profile.py                     # 224 px, width 64, batch 16, 3 frames, 257 x 299
    python scripts/bench_step_profile.py --size 64 --width 8 --rounds 1
    TORCHINDUCTOR_COMPILE_THREADS=1 python scripts/bench_step_profile.py --compile --no-profile
    python scripts/bench_step_profile.py --compile --layouts channels_last --no-released --no-profile

``--compile`` compiles avel's model as ``--set compile=true`` does (``avel.engine.compiling``: inductor
keeps the CPU convolutions NCHW); ``--layouts channels_last`` adds avel's model with channels_last
parameters and inputs, eager and compiled with inductor's own layout choice (channels_last convolutions:
the path that segfaults on some CPUs, #24: run it in a process of its own).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from avel.engine.compiling import compile_encoders, compile_targets
from avel.families import build_model

sys.path.insert(0, str(Path(__file__).parent))
from bench_released_loop import ReleasedAVClassifier, keep_layout  # noqa: E402 (one definition each)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also avel's model under torch.compile (inductor)")
    ap.add_argument("--no-profile", action="store_true", help="skip the profiler tables")
    ap.add_argument("--no-released", action="store_true", help="leave the released model out")
    ap.add_argument("--no-bf16", action="store_true", help="fp32 cases only")
    ap.add_argument("--layouts", default="nchw", help="nchw and/or channels_last (comma-separated)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    b, k, s, w = args.batch_size, args.frames, args.size, args.width
    g = torch.Generator().manual_seed(0)
    audio, visual = torch.randn(b, 1, 257, 299, generator=g), torch.randn(b, k, 3, s, s, generator=g)
    labels = torch.randint(0, 6, (b,), generator=g)
    ce = nn.CrossEntropyLoss()
    torch.manual_seed(0)
    sides = () if args.no_released else ((True, False) if s >= 193 else (False,))
    released = {c: ReleasedAVClassifier(6, w, c) for c in sides}
    avel = build_model("resnet18", "concat", input_mode="e2e", num_classes=6, width=w)
    layouts = args.layouts.split(",")
    cl = None
    if "channels_last" in layouts:  # the same weights, channels_last parameters and inputs
        cl = copy.deepcopy(avel).to(memory_format=torch.channels_last)
    models = [*released.values(), avel, *([cl] if cl is not None else [])]
    opts = {id(m): torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4) for m in models}

    audio_cl = audio.contiguous(memory_format=torch.channels_last)
    visual_cl = visual.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (b, k))

    def step(model: nn.Module, amp: bool) -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=amp):
            if model is not avel and isinstance(model, ReleasedAVClassifier):
                logits = model(audio, visual.permute(0, 2, 1, 3, 4))[2]  # the release's (B, 3, T, S, S)
            elif model in cl_models:
                with keep_layout():
                    logits = model(audio_cl, visual_cl).logits
            else:
                logits = model(audio, visual).logits
            loss = ce(logits, labels)
        opts[id(model)].zero_grad()
        loss.backward()
        opts[id(model)].step()

    cases = {f"released{' compress' if c else ''} fp32": (m, False) for c, m in released.items()}
    precisions = {"fp32": False} if args.no_bf16 else {"fp32": False, "bf16": True}
    cl_models: list[nn.Module] = []

    def compiled_copy(model: nn.Module, own_layout: bool) -> nn.Module:
        """A copy of the same weights (its own optimizer), its encoders compiled: as `--set compile=true`
        (NCHW CPU convolutions), or with inductor's own layout choice (``own_layout``: channels_last)."""
        copied = copy.deepcopy(model)
        opts[id(copied)] = torch.optim.SGD(copied.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
        if own_layout:
            for module in compile_targets(copied):
                module.compile(dynamic=False)
        else:
            compile_encoders(copied)
        return copied

    for name, amp in precisions.items():  # one compiled copy per precision: one graph each
        if "nchw" in layouts:
            cases[f"avel {name}"] = (avel, amp)
            if args.compile:
                cases[f"avel {name} compiled"] = (compiled_copy(avel, False), amp)
        if cl is not None:
            cl_models.append(cl)
            cases[f"avel {name} channels_last"] = (cl, amp)
            if args.compile:
                cl_models.append(compiled_copy(cl, True))
                cases[f"avel {name} channels_last compiled"] = (cl_models[-1], amp)
    for key, (m, amp) in cases.items():
        t0 = time.perf_counter()
        step(m, amp)  # warm-up (the compile, where asked: gcc runs in child processes, so wall time)
        if "compiled" in key:
            print(f"{key}: first step (compile) {time.perf_counter() - t0:.1f} s wall", flush=True)
    times: dict[str, list[float]] = {key: [] for key in cases}
    for _ in range(args.rounds):
        for key, (m, amp) in cases.items():
            t0 = time.process_time()
            step(m, amp)
            times[key].append(time.process_time() - t0)
    for key, v in times.items():
        print(f"{key}: {statistics.median(v):.3f} CPU s per step", flush=True)
    for key in () if args.no_profile or args.no_released else ("released fp32", "avel fp32"):
        m, amp = cases[key]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(m, amp)
        print(f"== {key} (profiler: wall time)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
