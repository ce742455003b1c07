"""PMR's released CREMA-D training path beside avel's, on the same clips (not a test: BENCHMARKS.md).

Makes an embedded CREMA-D-form set (``avel synth --layout crema-d``), preprocesses it with avel (10 frames
per clip, 257 x 299 spectrograms) and writes the same train clips in the released code's on-disk layout:
``Image-01-FPS/<clip>/NNNNN.jpg`` (3 jpg frames per clip, one per second as its ``video_preprocessing.py``
keeps them; here the clip's stored frames, so both sides see the same pixels) and ``Audio-299/<clip>.pkl``
(the pickled spectrogram), plus ``train.csv``. Then, interleaved ``--rounds`` times, in one process:

- released: a plain re-implementation (read, not copied) of github.com/fanyunfeng-bit/Modal-Imbalance-PMR
  (commit 3615e48): ``CramedDataset`` (the pickle loaded per sample, ``os.listdir`` of the frame folder, a
  ``RandomResizedCrop`` / flip / ``ToTensor`` / ``Normalize`` pipeline built and run per sample on PIL
  images; the first ``num_frame`` listed files) in a ``DataLoader`` (shuffle, ``num_workers`` 0 as
  released); ``AVClassifier`` with its ResNet18 backbone (``compress=True``, its default: the block of
  ``avel.models.encoders.compress_block``), concat fusion; SGD (momentum 0.9, weight decay 1e-4); CE,
  ``loss.item()`` per step. ``+ PMR``: ``main_Prototype_grad.py --modulation Proto`` per step (split
  logits by ``torch.mm``, ``EU_dist``'s double Python loop of dot products, each score a Python sum over
  the batch of a fresh softmax, the step rule on Python floats, five ``.item()``), and its
  ``calculate_prototype`` (eval mode, the train loader's batches, a Python loop adding each sample);
- avel: ``balancer.on_epoch_start`` + ``avel.engine.train.train_one_epoch`` on ``load_splits`` of the
  preprocessed file (the loop ``avel train`` runs), fp32 and with ``--amp`` (bf16 autocast of the steps;
  the prototype pass stays fp32, as in ``avel train``); PMR with its defaults and with ``pmr_frames = 3``
  (the prototype pass on 3 stored frames per clip).

Timed on CPU in **process CPU time** of one torch thread (``time.process_time``: other processes on a
shared machine do not count), on CUDA in wall time. Each slice trains the same number of samples; PMR's
prototype pass is timed apart, per clip, and charged to an epoch at its real share (a tenth of train on
both sides), so a small bench set does not inflate it. The data path alone: the released ``DataLoader``
iterated without steps, and avel's ``SplitData.batch`` (gather, frame choice, crop/flip, normalisation).

    python scripts/bench_released_loop.py                                       # 224 px, width 64, batch 16
    python scripts/bench_released_loop.py --size 128 --width 32 --steps 2 --rounds 3  # sizes: multiples of 32
    python scripts/bench_released_loop.py --device cuda --clips 512 --batch-size 64 --steps 8
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import pickle
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from torchvision.models.resnet import BasicBlock

from avel.balance import build_balancer
from avel.engine import conv_probe
from avel.engine.compiling import compile_encoders
from avel.engine.config import TrainConfig, bf16_supported
from avel.engine.train import build_optimizer, train_one_epoch
from avel.families import build_model, load_splits
from avel.models import encoders
from avel.models.encoders import compress_block, cpu_channels_last
from avel.preprocessing.clip_pipeline import ClipParams, preprocess_clips
from avel.preprocessing.cremad import CREMAD_CLASSES, load_cremad
from avel.synth.clips import ClipSynthConfig, synth_clips

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
JPG_FRAMES = (1, 4, 7)  # of the 10 stored (centres of tenths of a 3 s window): about one per second


# ------------------------------------------------------------------------------------ the released layout


def write_released_layout(h5: Path, root: Path, rows: np.ndarray) -> None:
    """The train clips ``rows`` of the avel file ``h5`` as the released loader reads them."""
    (root / "Audio-299").mkdir(parents=True)
    with h5py.File(h5) as f, open(root / "train.csv", "w", newline="") as out:
        ids, labels = f["clip_id"].asstr()[()], f["label"][()]
        writer = csv.writer(out)
        for r in rows:
            folder = root / "Image-01-FPS" / ids[r]
            folder.mkdir(parents=True)
            frames = f["frames"][r]  # (10, S, S, 3) uint8
            for k in JPG_FRAMES:
                Image.fromarray(frames[k]).save(folder / f"{k:05d}.jpg", quality=95)  # cv2's default quality
            with open(root / "Audio-299" / f"{ids[r]}.pkl", "wb") as p:
                pickle.dump(f["spectrogram"][r].astype(np.float32), p)
            writer.writerow([ids[r], CREMAD_CLASSES[labels[r]]])


class ReleasedCremad(Dataset):
    """``CramedDataset`` (mode 'train') as released: per sample, the pickle, a freshly built transform, the
    frame folder listed and its first ``num_frame`` files opened with PIL (the drawn indices unused)."""

    def __init__(self, root: Path, num_frame: int, size: int):
        self.root, self.num_frame, self.size = root, num_frame, size
        self.items: list[tuple[Path, Path, int]] = []
        with open(root / "train.csv", encoding="UTF-8-sig") as f:
            for clip, emotion in csv.reader(f):
                audio = root / "Audio-299" / f"{clip}.pkl"
                visual = root / "Image-01-FPS" / clip
                if audio.exists() and visual.exists():
                    self.items.append((audio, visual, CREMAD_CLASSES.index(emotion)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int):
        audio, visual, label = self.items[idx]
        with open(audio, "rb") as f:
            spectrogram = pickle.load(f)
        transform = transforms.Compose(
            [
                transforms.RandomResizedCrop(self.size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(MEAN, STD),
            ]
        )
        files = os.listdir(visual)
        chosen = np.random.choice(
            len(files), size=self.num_frame, replace=False
        )  # drawn, unused (as released)
        chosen.sort()
        images = torch.zeros((self.num_frame, 3, self.size, self.size))
        for i in range(self.num_frame):
            images[i] = transform(Image.open(visual / files[i]).convert("RGB"))
        return spectrogram, images.permute(1, 0, 2, 3), label  # (3, T, S, S)


# ------------------------------------------------------------------------------------ the released model


class ReleasedResNet(nn.Module):
    """The released ``models/backbone.py`` ResNet18 (torchvision's BasicBlock, plain max pool), 1 input
    channel for audio, 3 for visual, with its compress / recover block after layer2 when ``compress``."""

    def __init__(self, modality: str, width: int = 64, compress: bool = True):
        super().__init__()
        self.modality, self.inplanes = modality, width
        self.conv1 = nn.Conv2d(1 if modality == "audio" else 3, width, 7, 2, 3, bias=False)
        self.bn1, self.relu = nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._layer(width, 1)
        self.layer2 = self._layer(2 * width, 2)
        self.compress = compress
        if compress:
            self.compress_layer, self.recover_layer = compress_block(modality, width)
        self.layer3 = self._layer(4 * width, 2)
        self.layer4 = self._layer(8 * width, 2)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _layer(self, planes: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes:
            down = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )
        blocks = [BasicBlock(self.inplanes, planes, stride, down), BasicBlock(planes, planes)]
        self.inplanes = planes
        return nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        if self.modality == "visual":
            b, c, t, h, w = x.size()
            x = x.permute(0, 2, 1, 3, 4).contiguous().view(b * t, c, h, w)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        if self.compress:
            x = self.recover_layer(self.compress_layer(x))
        return self.layer4(self.layer3(x))


class ReleasedAVClassifier(nn.Module):
    """``AVClassifier`` with ``ConcatFusion``: returns (a, v, out) as released."""

    def __init__(self, num_classes: int, width: int = 64, compress: bool = True):
        super().__init__()
        self.audio_net = ReleasedResNet("audio", width, compress)
        self.visual_net = ReleasedResNet("visual", width, compress)
        self.fc_out = nn.Linear(16 * width, num_classes)

    def forward(self, audio: Tensor, visual: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a, v = self.audio_net(audio), self.visual_net(visual)
        _, c, h, w = v.size()
        v = v.view(a.size(0), -1, c, h, w).permute(0, 2, 1, 3, 4)
        a = torch.flatten(F.adaptive_avg_pool2d(a, 1), 1)
        v = torch.flatten(F.adaptive_avg_pool3d(v, 1), 1)
        return a, v, self.fc_out(torch.cat((a, v), dim=1))


def eu_dist(x1: Tensor, x2: Tensor) -> Tensor:
    """The released ``EU_dist``: a Python double loop of dot products."""
    d = torch.zeros(x1.shape[0], x2.shape[0]).to(x1.device)
    for i in range(x1.shape[0]):
        for j in range(x2.shape[0]):
            d[i, j] = torch.sqrt(torch.dot(x1[i] - x2[j], x1[i] - x2[j]))
    return d


class ReleasedLoop:
    """The released training steps and prototype pass on one device."""

    def __init__(self, root: Path, args, device: torch.device, classes: int):
        self.device, self.classes, self.alpha = device, classes, 1.0
        self.data = ReleasedCremad(root, args.frames, args.size)
        self.loader = DataLoader(self.data, batch_size=args.batch_size, shuffle=True, pin_memory=False)
        torch.manual_seed(0)
        self.compress = args.size >= 193 and not args.released_no_compress  # the block needs >= 193 px
        self.model = ReleasedAVClassifier(classes, args.width, self.compress).to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
        self.criterion, self.softmax = nn.CrossEntropyLoss(), nn.Softmax(dim=1)
        self.protos: tuple[Tensor, Tensor] | None = None

    def batches(self, steps: int):
        for step, batch in enumerate(self.loader):
            if step == steps:
                return
            yield batch

    def inputs(self, spec, image, label):
        return spec.to(self.device).unsqueeze(1).float(), image.to(self.device).float(), label.to(self.device)

    def train(self, steps: int, pmr: bool) -> None:
        self.model.train()
        for spec, image, label in self.batches(steps):
            spec, image, label = self.inputs(spec, image, label)
            self.opt.zero_grad()
            a, v, out = self.model(spec, image)
            loss = self.pmr_loss(a, v, out, label) if pmr else self.criterion(out, label)
            loss.backward()
            self.opt.step()
            loss.item()

    def pmr_loss(self, a: Tensor, v: Tensor, out: Tensor, label: Tensor) -> Tensor:
        """``train_epoch`` of main_Prototype_grad.py, modulation Proto, concat, inside the window."""
        sm, ce, n = self.softmax, self.criterion, label.size(0)
        w, b = self.model.fc_out.weight, self.model.fc_out.bias
        half = w.size(1) // 2
        out_v = torch.mm(v, torch.transpose(w[:, half:], 0, 1)) + b / 2
        out_a = torch.mm(a, torch.transpose(w[:, :half], 0, 1)) + b / 2
        audio_sim, visual_sim = -eu_dist(a, self.protos[0]), -eu_dist(v, self.protos[1])
        score_a_p = sum([sm(audio_sim)[i][label[i]] for i in range(n)])
        score_v_p = sum([sm(visual_sim)[i][label[i]] for i in range(n)])
        ratio_a_p = score_a_p / score_v_p
        score_v = sum([sm(out_v)[i][label[i]] for i in range(n)])
        score_a = sum([sm(out_a)[i][label[i]] for i in range(n)])
        ratio_a = score_a / score_v
        loss_proto_a, loss_proto_v = ce(audio_sim, label), ce(visual_sim, label)
        if ratio_a_p > 1:
            beta, lam = 0, self.alpha
        elif ratio_a_p < 1:
            beta, lam = self.alpha, 0
        else:
            beta, lam = 0, 0
        loss = ce(out, label) + beta * loss_proto_a + lam * loss_proto_v
        loss_v, loss_a = ce(out_v, label), ce(out_a, label)
        for t in (loss_a, loss_v, loss_proto_a, loss_proto_v):  # the epoch sums of .item()
            t.item()
        ratio_a.detach()  # the release adds it to an epoch sum
        return loss

    def prototypes(self, batches: int) -> int:
        """``calculate_prototype``: eval mode, no gradients, ``batches`` loader batches; clips encoded."""
        dim = self.model.fc_out.in_features // 2
        ap = torch.zeros(self.classes, dim).to(self.device)
        vp = torch.zeros(self.classes, dim).to(self.device)
        count = [0] * self.classes
        seen = 0
        self.model.eval()
        with torch.no_grad():
            for spec, image, label in self.batches(batches):
                spec, image, label = self.inputs(spec, image, label)
                a, v, _ = self.model(spec, image)
                for c, lab in enumerate(label):
                    lab = lab.long()
                    count[lab] += 1
                    ap[lab, :] += a[c, :]
                    vp[lab, :] += v[c, :]
                seen += label.size(0)
        for c in range(self.classes):
            ap[c, :] /= max(count[c], 1)  # the release divides by 0 for an absent class (NaN): not timed
            vp[c, :] /= max(count[c], 1)
        self.protos = (ap, vp)
        return seen

    def data_only(self, steps: int) -> None:
        for spec, image, label in self.batches(steps):
            self.inputs(spec, image, label)


# ------------------------------------------------------------------------------------ avel's side


class AvelLoop:
    """``avel train``'s epoch: ``on_epoch_start`` + ``train_one_epoch`` on the preprocessed clips."""

    def __init__(
        self,
        h5: Path,
        args,
        device: torch.device,
        amp: bool,
        balance: str,
        compiled: bool = False,
        channels_last: bool = False,
        cl_option: bool = False,
        **pmr,
    ):
        self.data = load_splits(h5, family="resnet18", device=device, splits=("train",), frames=args.frames)
        self.cfg = TrainConfig(
            model="resnet18", optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=1e-4,
            batch_size=args.batch_size, frames=args.frames, amp=amp, balance=balance,
        )  # fmt: skip
        torch.manual_seed(0)
        kwargs = {"family": "resnet18", "fusion": "concat", "input_mode": "e2e", "width": args.width}
        kwargs["num_classes"] = len(CREMAD_CLASSES)
        self.model = build_model(**kwargs).to(device)
        self.proven: frozenset | None = None  # cpu_conv_layout = "channels_last": the passes proven here
        if cl_option and device.type == "cpu":  # what `avel train --cpu-conv-layout channels_last` does
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            bf16 = amp and bf16_supported(device)
            verdict = conv_probe.verdict_for(kwargs, self.data.train, args.batch_size, bf16)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            print(
                f"# cpu_conv_layout = channels_last ({'bf16' if amp else 'fp32'}): {verdict.layout}, "
                f"{verdict.reason}; the probe {verdict.seconds:.1f} s wall, {cpu:.1f} CPU s (its subprocess)"
                + (" (cached)" if verdict.cached else ""),
                flush=True,
            )
            if verdict.layout == "channels_last":
                self.proven = frozenset(verdict.proven)
        self.channels_last = channels_last
        if channels_last:  # bench only: the layout #24 keeps off CPU convolutions (it segfaults on some)
            self.model = self.model.to(memory_format=torch.channels_last)
        if compiled:  # what `avel train --compile` does (compiled at the first training step)
            compile_encoders(self.model)
        extra = {"batch_size": args.batch_size, **pmr} if balance == "pmr" else {}
        self.balancer = build_balancer(balance, **extra)  # prototype batches: the training batch
        self.opt = build_optimizer(self.cfg, self.model.parameters())
        self.gen = torch.Generator().manual_seed(0)
        if balance != "none":
            self.prototypes()  # PMR needs prototypes before its first step

    def train(self) -> None:
        self.balancer.epoch = 0
        option = cpu_channels_last(self.proven) if self.proven is not None else contextlib.nullcontext()
        with keep_layout() if self.channels_last else option:
            train_one_epoch(self.model, self.balancer, self.data.train, self.opt, self.cfg, self.gen)

    def prototypes(self) -> int:
        """PMR's prototype pass as ``avel train`` runs it (``on_epoch_start``: a tenth of train, fp32 also
        under ``--amp``); clips encoded."""
        self.balancer.on_epoch_start(self.model, self.data, 0)
        return len(self.balancer.indices)

    def data_only(self) -> None:
        buffers: dict[str, Tensor] = {}
        order = torch.randperm(len(self.data.train), generator=self.gen)
        bs = self.cfg.batch_size
        for start in range(0, len(order), bs):
            self.data.train.batch(order[start : start + bs], True, self.gen, buffers)


@contextlib.contextmanager
def keep_layout():
    """Within: avel's encoders hand CPU convolutions channels_last input (``conv_layout``), as on CUDA: the
    path #24 keeps off the CPU (a segfault on some CPUs and shapes); for measurements in a process of
    their own only."""
    saved = encoders.CHANNELS_LAST_DEVICES
    encoders.CHANNELS_LAST_DEVICES = frozenset({"cuda", "cpu"})
    try:
        yield
    finally:
        encoders.CHANNELS_LAST_DEVICES = saved


# ------------------------------------------------------------------------------------ timing


def make_sets(tmp: Path, args) -> tuple[Path, Path, int]:
    """The embedded set, avel's preprocessed file and the released layout of its train clips."""
    synth_clips(tmp / "cd", ClipSynthConfig(clips=args.clips, fps=10.0, frame_size=args.size, seed=0))
    h5 = tmp / "cd.h5"
    clip_list = load_cremad(tmp / "cd", val_fraction=0.0)
    preprocess_clips(clip_list, h5, ClipParams(frame_size=args.size), progress=False)
    with h5py.File(h5) as f:
        rows = np.sort(f["splits/train"][()].astype(np.int64))
    write_released_layout(h5, tmp / "released", rows)
    return h5, tmp / "released", len(rows)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo, as lscpu's 'Model name'), and whether it has AMX / AVX512-BF16."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    bf16 = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return f"{model or platform.processor() or 'cpu'} ({', '.join(bf16) or 'no native bf16'})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--clips", type=int, default=0, help="clips to make (default: enough for --steps)")
    ap.add_argument("--size", type=int, default=224, help="frame size (the release: 224)")
    ap.add_argument("--width", type=int, default=64, help="ResNet18 base width (the release: 64)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--frames", type=int, default=3, help="frames per training sample (CREMA-D: 3)")
    ap.add_argument("--steps", type=int, default=2, help="training steps per timed slice")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads (default: 1 on CPU, torch's on CUDA)"
    )
    ap.add_argument(
        "--variants",
        default="fp32,bf16",
        help="avel variants: fp32, bf16 (--amp), fp32-compile, bf16-compile (--compile); fp32-clopt, "
        "bf16-clopt: --cpu-conv-layout channels_last (its probe, then channels_last where proven); fp32-cl, "
        "bf16-cl: every CPU convolution channels_last, unproven (#24: may segfault; its own process)",
    )
    ap.add_argument("--no-pmr", action="store_true", help="leave PMR out (both sides)")
    ap.add_argument(
        "--released-no-compress", action="store_true", help="the released model without its block"
    )
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    want = args.steps * args.batch_size  # train clips; a tenth of each class (at least one) goes to test
    args.clips = args.clips or (want + 6 if want < 90 else int(np.ceil(want / 0.9)))
    variants = [v for v in args.variants.split(",") if v]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        h5, root, n_train = make_sets(tmp, args)
        steps = -(-n_train // args.batch_size)  # both loops keep the last partial batch
        n = n_train  # samples per slice: one pass over the train clips on each side
        released = ReleasedLoop(root, args, device, len(CREMAD_CLASSES))
        released.prototypes(1)
        loops = {}
        os.environ.setdefault("AVEL_CACHE_DIR", str(tmp / "cache"))  # the probe runs (and is timed)
        for v in variants:  # fp32 | bf16 (--amp), + "-compile" (--compile), "-clopt" (the option) or "-cl"
            amp, compiled, cl = v.startswith("bf16"), "-compile" in v, v.endswith("-cl")
            opt = v.endswith("-clopt")  # fp32-compile-clopt: both (avel train refuses the pair: not proven)
            loops[v] = AvelLoop(h5, args, device, amp, "none", compiled, channels_last=cl, cl_option=opt)
            if not args.no_pmr:
                loops[v + " + PMR"] = AvelLoop(h5, args, device, amp, "pmr", compiled=compiled)
                loops[v + " + PMR frames 3"] = AvelLoop(
                    h5, args, device, amp, "pmr", compiled=compiled, frames=args.frames
                )
        print(
            f"# device {name} | torch {torch.__version__} | threads {torch.get_num_threads()} | width "
            f"{args.width} | {args.size} px | {args.frames} frames | batch {args.batch_size} | {n_train} "
            f"train clips, {steps} steps per slice x {args.rounds} rounds | bf16 {bf16_supported(device)}"
            f" | released compress block {released.compress}",
            flush=True,
        )
        timed: dict[str, list[float]] = {}

        def timeit(key: str, fn) -> float:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = clock()
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            timed.setdefault(key, []).append(clock() - t0)
            return out

        per_clip: dict[str, list[float]] = {}

        def proto(key: str, fn) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = clock()
            clips = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            per_clip.setdefault(key, []).append((clock() - t0) / clips)

        # warm-up: one slice of each (compile happens here)
        released.train(steps, pmr=False)
        for key, loop in loops.items():
            t0 = time.perf_counter()
            loop.train()
            if "-compile" in key.split(" ")[0]:  # gcc runs in child processes: wall time
                print(f"# avel {key}: first slice (the compile) {time.perf_counter() - t0:.1f} s wall")
        for _ in range(args.rounds):
            timeit("released", lambda: released.train(steps, pmr=False))
            timeit("released data path", lambda: released.data_only(steps))
            if not args.no_pmr:
                timeit("released + PMR", lambda: released.train(steps, pmr=True))
                proto("released", lambda: released.prototypes(steps))
            for key, loop in loops.items():
                timeit("avel " + key, loop.train)
                if "PMR" in key:
                    proto("avel " + key, loop.prototypes)
            timeit("avel data path", loops[variants[0]].data_only)
    med = {k: statistics.median(v) for k, v in timed.items()}
    proto_med = {k: statistics.median(v) for k, v in per_clip.items()}
    unit = "CPU s" if device.type == "cpu" else "s"
    print(f"| loop | {unit} per slice of {n} samples | samples/s | x released |")
    print("|---|---|---|---|")
    rows: dict[str, float] = {}
    for key in ["released", *variants]:
        k = "released" if key == "released" else "avel " + key
        rows[k] = n / med[k]
    pmr_rows = ["released + PMR", *(v + " + PMR" for v in variants)]
    pmr_rows += [v + " + PMR frames 3" for v in variants]
    for key in [] if args.no_pmr else pmr_rows:
        k = key if key.startswith("released") else "avel " + key
        proto_key = "released" if key.startswith("released") else k
        epoch = med[k] + 0.1 * n * proto_med[proto_key]  # the prototype pass on a tenth of train
        rows[k] = n / epoch
    for k, sps in rows.items():
        base = rows["released + PMR" if "PMR" in k else "released"]
        print(f"| {k} | {n / sps:.3f} | {sps:.2f} | {sps / base:.2f}x |")
    if proto_med:
        print(f"| loop | prototype pass, {unit} per clip | x released |")
        print("|---|---|---|")
    for k, s in proto_med.items():
        print(f"| {k} | {s:.4f} | {s / proto_med['released']:.2f}x (lower is faster) |")
    best = max(variants, key=lambda v: rows["avel " + v])
    fp32 = rows.get("avel fp32", float("nan")) / rows["released"]
    print(
        f"ratio avel/released samples/s (goal >= 4x best, >= 1.25x fp32): fp32 {fp32:.2f}x, "
        + ", ".join(f"{v} {rows['avel ' + v] / rows['released']:.2f}x" for v in variants)
        + f"; best ({best}) {rows['avel ' + best] / rows['released']:.2f}x"
    )
    share_r = med["released data path"] / med["released"]
    share_a = med["avel data path"] / med["avel " + variants[0]]
    released_data = med["released data path"]
    print(f"# data path alone: released {released_data:.3f} {unit} ({100 * share_r:.1f} % of its step),")
    print(f"#   avel {med['avel data path']:.3f} {unit} ({100 * share_a:.1f} % of its {variants[0]} step)")
    if device.type == "cuda":
        print(f"# peak memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB (CUDA)")
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
        print(f"# peak memory: {rss:.0f} MiB (process peak RSS)")
    if args.no_pmr:
        return
    best_pmr = max((k for k in rows if k.startswith("avel") and "PMR" in k), key=rows.get)
    worst_proto = proto_med.get("avel " + variants[0] + " + PMR frames 3", float("nan"))
    print(
        f"with PMR best ({best_pmr[5:]}) {rows[best_pmr] / rows['released + PMR']:.2f}x; prototype pass "
        f"per clip (goal <= 1x) {variants[0]} frames 3 {worst_proto / proto_med['released']:.2f}x, "
        f"default {proto_med['avel ' + variants[0] + ' + PMR'] / proto_med['released']:.2f}x"
    )


if __name__ == "__main__":
    main()
