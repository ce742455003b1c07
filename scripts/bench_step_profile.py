"""One training step of the released PMR AVClassifier (with and without its compress block) beside avel's
resnet18 concat model, fp32 and bf16 autocast, on the same random inputs (not a test: BENCHMARKS.md, #30):
process CPU time per step (one thread, interleaved, medians), then ``torch.profiler``'s table of one fp32
step of each (its times are wall time: on a shared machine compare the shares, not the seconds).

    python scripts/bench_step_profile.py                     # 224 px, width 64, batch 16, 3 frames, 257 x 299
    python scripts/bench_step_profile.py --size 64 --width 8 --rounds 1
    TORCHINDUCTOR_COMPILE_THREADS=1 python scripts/bench_step_profile.py --compile --no-profile
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from avel.families import build_model

sys.path.insert(0, str(Path(__file__).parent))
from bench_released_loop import ReleasedAVClassifier  # noqa: E402 (the released model, one definition)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also avel's model under torch.compile (inductor)")
    ap.add_argument("--no-profile", action="store_true", help="skip the profiler tables")
    args = ap.parse_args()
    torch.set_num_threads(1)
    b, k, s, w = args.batch_size, args.frames, args.size, args.width
    g = torch.Generator().manual_seed(0)
    audio, visual = torch.randn(b, 1, 257, 299, generator=g), torch.randn(b, k, 3, s, s, generator=g)
    labels = torch.randint(0, 6, (b,), generator=g)
    ce = nn.CrossEntropyLoss()
    torch.manual_seed(0)
    released = {c: ReleasedAVClassifier(6, w, c) for c in ((True, False) if s >= 193 else (False,))}
    avel = build_model("resnet18", "concat", input_mode="e2e", num_classes=6, width=w)
    models = [*released.values(), avel]
    opts = {id(m): torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4) for m in models}

    def step(model: nn.Module, amp: bool) -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=amp):
            if model is not avel and isinstance(model, ReleasedAVClassifier):
                logits = model(audio, visual.permute(0, 2, 1, 3, 4))[2]  # the release's (B, 3, T, S, S)
            else:
                logits = model(audio, visual).logits
            loss = ce(logits, labels)
        opts[id(model)].zero_grad()
        loss.backward()
        opts[id(model)].step()

    cases = {f"released{' compress' if c else ''} fp32": (m, False) for c, m in released.items()}
    cases |= {"avel fp32": (avel, False), "avel bf16": (avel, True)}
    if args.compile:  # the same parameters and optimizer, the forward compiled
        compiled = torch.compile(avel)
        opts[id(compiled)] = opts[id(avel)]
        cases |= {"avel fp32 compiled": (compiled, False), "avel bf16 compiled": (compiled, True)}
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
    for key in () if args.no_profile else ("released fp32", "avel fp32"):
        m, amp = cases[key]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(m, amp)
        print(f"== {key} (profiler: wall time)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
