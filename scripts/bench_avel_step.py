"""AVEL training step on features: avel's loop beside a plain re-implementation of the reference loop.

The reference (AVE-ECCV18 ``supervised_main.py`` as its paper and code describe it) is re-written here in a
few lines: the whole feature arrays in host memory, each batch copied sample by sample into host buffers and
moved to the device, the model (audio-guided attention with ``bmm``, two bi-LSTMs with explicit zero
states, concat or DMRN, softmax output), ``MultiLabelSoftMarginLoss`` on one-hot labels, Adam 1e-3, the
loss read back to the host (``.item()``) and the LR scheduler stepped every iteration.

avel's side is ``avel.engine.train.train_one_epoch`` itself (split on the device, no host round trip per
step), in fp32, with bf16 autocast (``amp``, where the device has native bf16) and optionally
``torch.compile`` (its compile time is reported on its own). Both sides see the same batches in the same
order, in one process; runs are interleaved (reference, then each avel variant, ``--repeat`` times) and the
medians are reported: process CPU time on a CPU (one torch thread; other processes on a shared machine do not
count), wall time on CUDA. Not a test: figures go to BENCHMARKS.md.

    python scripts/bench_avel_step.py --device cpu --videos 256 --steps 4 --repeat 3
    python scripts/bench_avel_step.py --device cuda --videos 3339 --steps 52 --variants fp32,bf16,compile
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avel.balance import build_balancer
from avel.data.splits import SplitData
from avel.engine.config import TrainConfig, bf16_supported
from avel.engine.train import build_optimizer, train_one_epoch
from avel.families import build_model

T, DA, GRID, C, CLASSES, HIDDEN = 10, 128, 7, 512, 29, 128


class ReferenceNet(nn.Module):
    """The reference A+V-att / DMRN network, re-implemented plainly (same layers, same order)."""

    def __init__(self, fusion: str):
        super().__init__()
        self.fusion = fusion
        self.lstm_audio = nn.LSTM(DA, HIDDEN, 1, batch_first=True, bidirectional=True)
        self.lstm_video = nn.LSTM(C, HIDDEN, 1, batch_first=True, bidirectional=True)
        self.affine_audio, self.affine_video = nn.Linear(DA, 512), nn.Linear(C, 512)
        self.affine_v = nn.Linear(512, GRID * GRID, bias=False)
        self.affine_g = nn.Linear(512, GRID * GRID, bias=False)
        self.affine_h = nn.Linear(GRID * GRID, 1, bias=False)
        d = 2 * HIDDEN
        if fusion == "concat":
            self.L1, self.L2 = nn.Linear(2 * d, 64), nn.Linear(64, CLASSES)
        else:
            self.U_v = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d))
            self.U_a = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d))
            self.L2 = nn.Linear(d, CLASSES)

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        b = video.shape[0]
        raw = video.reshape(b * T, -1, C)
        v = F.relu(self.affine_video(raw))
        a = F.relu(self.affine_audio(audio.reshape(-1, DA)))
        z = self.affine_h(torch.tanh(self.affine_v(v) + self.affine_g(a).unsqueeze(2))).squeeze(2)
        alpha = F.softmax(z, dim=-1).unsqueeze(1)
        attended = torch.bmm(alpha, raw).view(b, T, C)
        zeros = torch.zeros(2, b, HIDDEN, device=audio.device)
        h_a, _ = self.lstm_audio(audio.view(b, T, -1), (zeros, zeros))
        h_v, _ = self.lstm_video(attended, (zeros.clone(), zeros.clone()))
        if self.fusion == "concat":
            out = self.L2(F.relu(self.L1(F.relu(torch.cat((h_a, h_v), -1)))))
        else:
            merged = (self.U_v(h_v) + self.U_a(h_a)) * 0.5
            out = self.L2((torch.tanh(h_a + merged) + torch.tanh(h_v + merged)) * 0.5)
        return F.softmax(out, dim=-1)


class ReferenceLoop:
    """The reference training loop: host batches copied per sample, ``.item()`` and scheduler per step."""

    def __init__(self, fusion: str, audio: np.ndarray, visual: np.ndarray, onehot: np.ndarray, device, bs):
        self.audio, self.visual, self.onehot, self.device, self.bs = audio, visual, onehot, device, bs
        self.net = ReferenceNet(fusion).to(device)
        self.loss_fn = nn.MultiLabelSoftMarginLoss()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=15000, gamma=0.1)
        self.a_buf = np.zeros((bs, *audio.shape[1:]), np.float32)
        self.v_buf = np.zeros((bs, *visual.shape[1:]), np.float32)
        self.y_buf = np.zeros((bs, *onehot.shape[1:]), np.float32)

    def epoch(self, order: np.ndarray) -> float:
        total = 0.0
        for start in range(0, len(order) - self.bs + 1, self.bs):
            for i, row in enumerate(order[start : start + self.bs]):
                self.v_buf[i] = self.visual[row]
                self.a_buf[i] = self.audio[row]
                self.y_buf[i] = self.onehot[row]
            a = torch.from_numpy(self.a_buf).float().to(self.device)
            v = torch.from_numpy(self.v_buf).float().to(self.device)
            y = torch.from_numpy(self.y_buf).float().to(self.device)
            self.net.zero_grad()
            loss = self.loss_fn(self.net(a, v), y)
            total += loss.item()
            loss.backward()
            self.sched.step()
            self.opt.step()
        return total


class AvelLoop:
    """avel's loop (``train_one_epoch``) on a device-resident split of the same rows."""

    def __init__(self, fusion: str, split: SplitData, device, bs: int, amp: bool, compile_: bool):
        torch.manual_seed(0)
        self.model = build_model("avel", fusion, input_mode="features", audio_dim=DA, visual_dim=C).to(device)
        if compile_:
            self.model.compile()
        self.balancer = build_balancer("none")
        self.cfg = TrainConfig(batch_size=bs, amp=amp, optimizer="adam", lr=1e-3, progress=False)
        self.opt = build_optimizer(self.cfg, self.model.parameters())
        self.split = split

    def epoch(self, generator: torch.Generator) -> float:
        return train_one_epoch(self.model, self.balancer, self.split, self.opt, self.cfg, generator)["loss"]


def copy_generator(g: torch.Generator) -> torch.Generator:
    out = torch.Generator()
    out.set_state(g.get_state())
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def clock(device: torch.device):
    """Process CPU time on a CPU (one thread: other processes on a shared machine do not count), else wall."""
    return time.perf_counter if device.type == "cuda" else time.process_time


def timed(fn, device: torch.device) -> float:
    sync(device)
    t0 = clock(device)()
    fn()
    sync(device)
    return clock(device)() - t0


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB (CUDA, since the last reset)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB (process peak RSS)"


def profile_loops(fusion: str, ref: ReferenceLoop, variants: dict, gens: dict, n: int) -> None:
    """torch.profiler's top operators (self CPU time) of one epoch of each loop."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    runs = {"reference": lambda: ref.epoch(torch.randperm(n).numpy())}
    runs |= {k: (lambda loop=loop, k=k: loop.epoch(gens[k])) for k, loop in variants.items()}
    for k, fn in runs.items():
        with profile(activities=acts) as prof:
            fn()
        print(f"# profile {fusion} {k}")
        ops = prof.key_averages()
        print(ops.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))


def bench_fusion(fusion: str, args, device: torch.device) -> dict[str, float]:
    n = args.steps * args.batch_size
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((n, T, DA), dtype=np.float32)
    visual = rng.standard_normal((n, T, GRID, GRID, C), dtype=np.float32)
    labels = rng.integers(0, CLASSES, (n, T))
    onehot = np.eye(CLASSES, dtype=np.float32)[labels]
    split = SplitData(
        torch.from_numpy(audio).to(device),
        torch.from_numpy(visual).to(device),
        torch.from_numpy(labels).to(device),
    )
    ref = ReferenceLoop(fusion, audio, visual, onehot, device, args.batch_size)
    variants = {}
    for name in args.variants.split(","):
        if name == "bf16" and not bf16_supported(device):
            print(f"# {fusion}: bf16 skipped (no native bf16 on {device})")
            continue
        variants[name] = AvelLoop(fusion, split, device, args.batch_size, name == "bf16", name == "compile")
    times: dict[str, list[float]] = {"reference": [], **{k: [] for k in variants}}
    gens = {k: torch.Generator().manual_seed(0) for k in variants}
    for k, loop in variants.items():  # warm-up (compile happens here): one epoch each
        dt = timed(lambda loop=loop, k=k: loop.epoch(gens[k]), device)
        print(
            f"# {fusion} {k}: warm-up epoch {dt:.2f} s"
            + (" (includes torch.compile)" if k == "compile" else "")
        )
    order_gen = torch.Generator().manual_seed(0)
    ref.epoch(torch.randperm(n, generator=order_gen).numpy())  # warm-up
    for _ in range(args.repeat):
        for k, loop in variants.items():
            # the reference sees the same permutation train_one_epoch draws from this generator state
            order = torch.randperm(n, generator=copy_generator(gens[k])).numpy()
            times["reference"].append(timed(lambda order=order: ref.epoch(order), device))
            times[k].append(timed(lambda loop=loop, k=k: loop.epoch(gens[k]), device))
    if args.profile:
        profile_loops(fusion, ref, variants, gens, n)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    for k, s in med.items():
        ratio = med["reference"] / s
        print(
            f"| {fusion} | {k} | {1000 * s / args.steps:.1f} | {n / s:.1f} | {ratio:.2f}x |",
            flush=True,
        )
    return {k: med["reference"] / s for k, s in med.items() if k != "reference"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=4, help="batches per timed epoch")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved timed epochs per side (median)")
    ap.add_argument("--fusions", default="concat,dmrn")
    ap.add_argument("--variants", default="fp32,bf16", help="fp32, bf16 (autocast) and/or compile")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    ap.add_argument("--profile", action="store_true", help="also print each loop's top operators")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler")  # the reference order
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"# AVEL step | device {name} | torch {torch.__version__} | threads {torch.get_num_threads()}"
        f" | batch {args.batch_size} | {args.steps} steps x {args.repeat} interleaved runs"
    )
    print("| fusion | loop | ms/step | samples/s | x reference |")
    print("|---|---|---|---|---|")
    ratios = {f: bench_fusion(f, args, device) for f in args.fusions.split(",")}
    print(f"# peak memory: {peak_memory(device)}")
    best = {f: max(r.items(), key=lambda kv: kv[1]) for f, r in ratios.items()}
    parts = ", ".join(f"{f} {k} {r:.2f}x" for f, (k, r) in best.items())
    print(f"ratio avel/reference step throughput (goal >= 1.5x): {parts}")


if __name__ == "__main__":
    main()
