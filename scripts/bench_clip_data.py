"""ResNet18 clip classifiers: what the data path adds to a training step (not a test: BENCHMARKS.md).

Writes a preprocess-kind file with avel's own writer (``avel.preprocessing.assemble.Assembler``: 10
segments of ``--frames-per-segment`` uint8 frames of ``--size`` px and a 257-bin log-spectrogram per video),
loads it with
``load_splits(family="resnet18")`` (event span, tiled spectrogram, frames kept as stored) and times,
interleaved ``--repeat`` times, the same training steps (forward, loss, backward, SGD step) two ways:

- model step: the inputs of every batch built once beforehand and held on the device (the floor);
- data + step: each batch gathered (into reused tensors) and transformed by ``SplitData.batch`` (4 frames
  sampled across the event span, random-resized-crop + flip, normalisation) right before its step, as
  ``train_one_epoch`` does;
- data alone: the same gathers and transforms without the steps.

Medians of process CPU time on a CPU (one torch thread: other processes on a shared machine do not
count), wall time on CUDA.

    python scripts/bench_clip_data.py --videos 32 --batch-size 8 --width 16 --size 112
    python scripts/bench_clip_data.py --device cuda --videos 512 --batch-size 64 --amp
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from avel.balance import build_balancer
from avel.engine.config import TrainConfig, bf16_supported
from avel.engine.train import build_optimizer
from avel.families import build_model, load_splits
from avel.preprocessing.annotations import SEGMENTS
from avel.preprocessing.assemble import Assembler
from avel.preprocessing.audio import SpecParams, segment_columns
from avel.preprocessing.h5 import RowsMeta
from avel.preprocessing.pipeline import ave_file_rows


def write_file(path: Path, videos: int, size: int, k: int) -> None:
    """Random frames and spectrograms; every video has an event of 2..10 segments."""
    rng = np.random.default_rng(0)
    start = rng.integers(0, 9, videos)
    end = np.minimum(start + rng.integers(2, 11, videos), SEGMENTS)
    seg = np.full((videos, SEGMENTS), 28, np.int64)
    label = rng.integers(0, 28, videos)
    for i in range(videos):
        seg[i, start[i] : end[i]] = label[i]
    ids = np.array([f"v{i}" for i in range(videos)], dtype=object)
    meta = RowsMeta(
        video_id=ids,
        category=np.array(["c"] * videos, dtype=object),
        label=label,
        quality=np.array(["good"] * videos, dtype=object),
        start=start,
        end=end,
        segment_labels=seg,
        annotation_row=np.arange(videos),
        splits={"train": np.arange(videos), "val": np.arange(0), "test": np.arange(0)},
        classes=[f"class {c}" for c in range(28)],
    )
    spec = SpecParams()
    length = int(segment_columns(SEGMENTS, spec)[-1])
    asm = Assembler(path, ave_file_rows(meta, {"frames_per_segment": k, "frame_size": size}, spec))
    try:
        for vid in ids:
            arrays = {
                "frames": rng.integers(0, 256, (SEGMENTS, k, size, size, 3), dtype=np.uint8),
                "spectrogram": rng.standard_normal((spec.n_fft // 2 + 1, length), dtype=np.float32),
                "duration": 10.0,
                "fps": 25.0,
                "source_sample_rate": 16000,
            }
            asm.write(str(vid), arrays)
    finally:
        asm.close(keep=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--videos", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=int, default=224, help="frame size")
    ap.add_argument("--width", type=int, default=64, help="ResNet18 base width")
    ap.add_argument("--frames-per-segment", type=int, default=1)
    ap.add_argument("--fusion", default="concat")
    ap.add_argument("--balance", default="none")
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp = args.amp and bf16_supported(device)
    clock = time.perf_counter if device.type == "cuda" else time.process_time  # CPU: this process only
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clips.h5"
        write_file(path, args.videos, args.size, args.frames_per_segment)
        data = load_splits(path, family="resnet18", device=device, splits=("train",))
    split = data.train
    torch.manual_seed(0)
    model = build_model("resnet18", args.fusion, input_mode="e2e", num_classes=28, width=args.width)
    model = model.to(device)
    balancer = build_balancer(args.balance)
    model = balancer.prepare_model(model).to(device)
    cfg = TrainConfig(model="resnet18", optimizer="sgd", lr=1e-3, batch_size=args.batch_size)
    opt = build_optimizer(cfg, model.parameters())
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(split), generator=gen)
    bs = args.batch_size
    idxs = [order[i : i + bs] for i in range(0, len(order) - bs + 1, bs)]
    placed = [split.batch(i, train=True, generator=gen) for i in idxs]  # the floor's pre-built inputs

    def step(batch) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            result = balancer.training_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        result.loss.backward()
        balancer.before_optimizer_step(model, result)
        opt.step()

    def floor() -> None:
        for b in placed:
            step(b)

    buffers: dict[str, torch.Tensor] = {}  # as train_one_epoch: batches(..., reuse=True)

    def with_data() -> None:
        for i in idxs:
            step(split.batch(i, True, gen, buffers))

    def data_only() -> None:
        for i in idxs:
            split.batch(i, True, gen, buffers)

    print(
        f"# resnet18 {args.fusion} {args.balance} | device {name} | torch {torch.__version__} | threads "
        f"{torch.get_num_threads()} | width {args.width} | {args.size} px | batch {args.batch_size} | "
        f"{len(idxs)} steps x {args.repeat} | amp {amp}"
    )
    times: dict[str, list[float]] = {"model step": [], "data + step": [], "data alone": []}
    floor()  # warm-up
    for _ in range(args.repeat):
        for key, fn in (("model step", floor), ("data + step", with_data), ("data alone", data_only)):
            sync(device)
            t0 = clock()
            fn()
            sync(device)
            times[key].append(clock() - t0)
    n = len(idxs) * args.batch_size
    med = {k: statistics.median(v) for k, v in times.items()}
    print("| loop | s per pass | samples/s | x model step |")
    print("|---|---|---|---|")
    for k, s in med.items():
        print(f"| {k} | {s:.3f} | {n / s:.1f} | {s / med['model step']:.3f}x |")
    if device.type == "cuda":
        print(f"# peak memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB (CUDA)")
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
        print(f"# peak memory: {rss:.0f} MiB (process peak RSS)")
    print(
        f"ratio (data + step) / model step (goal <= 1.05x): {med['data + step'] / med['model step']:.3f}x "
        f"(data alone {med['data alone'] / med['model step']:.3f}x)"
    )


if __name__ == "__main__":
    main()
