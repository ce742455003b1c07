"""What ``≥ 4× the released PMR CREMA-D loop`` asks of this CPU (not a test: BENCHMARKS.md, issue 30).

One thread, process CPU time, random inputs at the released shapes (batch 16, 3 frames of 224 px, a 257 x
299 spectrogram, width 64):

1. the floating-point operations of one training step (forward + backward, ``FlopCounterMode``: a
   multiply-add is 2) of avel's ResNet18 pair and of the released ``AVClassifier`` (``compress`` block on);
2. the released model's fp32 SGD step and avel's with its best options (bf16 autocast, channels_last
   parameters; the encoders' ``conv_layout`` still hands the convolutions NCHW inputs, which PyTorch
   reorders: bench only, ``avel train`` proves the layout first), best of ``--steps``;
3. ``torch.profiler``'s split of avel's step: convolutions (forward and backward) against the rest
   (batch norm, ReLU, pooling, the optimizer), scaled to the step's CPU time;
4. the ceiling of the convolutions: each 3x3 convolution shape of the model alone, forward, in the same
   dtype and layout (the best rate a convolution of the model reaches here);
5. the bound: avel's step if every convolution ran at that best rate and the rest stayed as it is.

    python scripts/bench_cpu_ceiling.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_released_loop import ReleasedAVClassifier, cpu_model  # noqa: E402

from avel.families import build_model  # noqa: E402

CL = torch.channels_last


def logits_of(model: torch.nn.Module, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
    if isinstance(model, ReleasedAVClassifier):
        return model(audio, visual.transpose(1, 2))[-1]  # released visual input: (B, 3, K, S, S)
    return model(audio, visual).logits


def step_gflop(model: torch.nn.Module, audio: torch.Tensor, visual: torch.Tensor) -> float:
    """GFLOP of one forward + backward."""
    with FlopCounterMode(display=False) as counter:
        logits_of(model, audio, visual).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9


def make_step(model: torch.nn.Module, audio: torch.Tensor, visual: torch.Tensor, bf16: bool):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    labels = torch.zeros(audio.shape[0], dtype=torch.long)

    def step() -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            logits = logits_of(model, audio, visual)
        loss = F.cross_entropy(logits.float(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def best_cpu_s(fn, repeat: int) -> float:
    """Best process CPU seconds of ``fn`` over ``repeat`` calls, after one untimed."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def conv_share(step) -> float:
    """The convolutions' share (forward and backward) of the step's self CPU time, from the profiler."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    rows = prof.key_averages()
    total = sum(r.self_cpu_time_total for r in rows)
    conv = sum(r.self_cpu_time_total for r in rows if "convolution" in r.key)
    return conv / total


def conv_ceiling(batch: int, width: int, size: int, repeat: int) -> dict[str, float]:
    """GFLOP/s of each 3x3 stage convolution of the visual ResNet18 alone (bf16, channels_last, forward)."""
    rates = {}
    for stage in range(1, 5):
        c, side = width * 2 ** (stage - 1), size // 2 ** (stage + 1)
        x = torch.randn(batch, c, side, side).to(torch.bfloat16).contiguous(memory_format=CL)
        w = torch.randn(c, c, 3, 3).to(torch.bfloat16).contiguous(memory_format=CL)
        seconds = best_cpu_s(lambda x=x, w=w: F.conv2d(x, w, padding=1), repeat)
        rates[f"layer{stage} {c}x{side}x{side}"] = 2 * batch * c * c * 9 * side * side / seconds / 1e9
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="timed steps of each model (the best counts)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    b, k = args.batch_size, args.frames
    audio, visual = torch.randn(b, 1, 257, 299), torch.randn(b, k, 3, args.size, args.size)
    print(f"# {cpu_model()}, torch {torch.__version__}, one thread, batch {b}, {k} frames, {args.size} px, "
          f"width {args.width}")  # fmt: skip
    released = ReleasedAVClassifier(6, args.width, compress=True)
    avel = build_model(family="resnet18", fusion="concat", input_mode="e2e", width=args.width, num_classes=6)
    flop = {"released": step_gflop(released, audio, visual), "avel": step_gflop(avel, audio, visual)}
    print(f"GFLOP a step: released {flop['released']:.1f}, avel {flop['avel']:.1f}")
    released_s = best_cpu_s(make_step(released, audio, visual, bf16=False), args.steps)
    avel = avel.to(memory_format=CL)
    best = make_step(avel, audio.contiguous(memory_format=CL), visual, bf16=True)
    avel_s = best_cpu_s(best, args.steps)
    share = conv_share(best)
    print(f"released fp32 step: {released_s:.3f} CPU s ({flop['released'] / released_s:.0f} GFLOP/s)")
    print(f"avel bf16 + channels_last step: {avel_s:.3f} CPU s ({flop['avel'] / avel_s:.0f} GFLOP/s), "
          f"{released_s / avel_s:.2f}x the released step; convolutions {share:.0%} of it "
          f"({share * avel_s:.3f} s, {flop['avel'] / (share * avel_s):.0f} GFLOP/s), the rest "
          f"{(1 - share) * avel_s:.3f} s")  # fmt: skip
    rates = conv_ceiling(b * k, args.width, args.size, args.steps)
    for name, rate in rates.items():
        print(f"  3x3 convolution alone, {name}, bf16 channels_last forward: {rate:.0f} GFLOP/s")
    ceiling = max(rates.values())
    bound = flop["avel"] / ceiling + (1 - share) * avel_s
    print(f"bound: every convolution at {ceiling:.0f} GFLOP/s and the rest as measured: {bound:.3f} CPU s, "
          f"{released_s / bound:.2f}x the released step; 4x needs {released_s / 4:.3f} s: the rest at "
          f"most {released_s / 4 - flop['avel'] / ceiling:.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
