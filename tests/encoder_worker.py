"""Forward + backward of avel's encoders at one (encoder, width, frame size) per case, run in a subprocess by
tests/test_encoder_shapes.py so that a native crash (SIGSEGV in a CPU convolution kernel) ends this process,
not the suite: ``python tests/encoder_worker.py CASE ...`` prints ``start CASE`` before a case and
``ok CASE`` or ``fail CASE: why`` after it, flushed, so the parent names the case a signal interrupted.

A case is ``ENCODER-wWIDTH-SIZEpx`` (``ENCODER-SIZEpx`` for the fixed-width CG-MNIST encoders): ENCODER one
of ``ENCODERS``, SIZE the side of the square frames (and of the spectrogram for the audio encoder);
``visual-w8-224px-x48`` is issue #24's reproducer (one clip of 48 frames of 224 px: layer2's 1x1 stride-2
downsample backward on (48, 8, 56, 56)).
"""

from __future__ import annotations

import os
import re
import signal
import sys

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

# the encoders and the intermediate-fusion assemblies that run them stage by stage
ENCODERS = ("audio", "visual", "cgconvnet", "cgfused", "mmtm", "centralnet", "cg-mmtm", "cg-centralnet")
WIDE = ("audio", "visual", "mmtm", "centralnet")  # the ResNet18 ones: a base width
BATCH, FRAMES = 2, 2  # cheap: two clips of two frames


CASE = re.compile(r"(?P<encoder>[a-z-]+?)(-w(?P<width>\d+))?-(?P<size>\d+)px(-x(?P<frames>\d+))?")


def case_name(encoder: str, width: int, size: int, frames: int = FRAMES) -> str:
    name = f"{encoder}-w{width}-{size}px" if encoder in WIDE else f"{encoder}-{size}px"
    return name if frames == FRAMES else f"{name}-x{frames}"


def parse(case: str) -> tuple[str, int, int, int]:
    """``visual-w8-224px`` -> ("visual", 8, 224, FRAMES); ``visual-w8-224px-x48`` -> 48 frames, one clip."""
    m = CASE.fullmatch(case)
    if m is None or m["encoder"] not in ENCODERS:
        raise ValueError(f"not an encoder case: {case!r}")
    return m["encoder"], int(m["width"] or 0), int(m["size"]), int(m["frames"] or FRAMES)


def inputs(encoder: str, size: int, frames: int) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    batch = 1 if frames != FRAMES else BATCH
    spectrogram = torch.randn(batch, 1, size, size, generator=g)
    clip = torch.rand(batch, frames, 3, size, size, generator=g)
    gray = torch.rand(batch, 1, size, size, generator=g)
    colored = torch.rand(batch, size, size, 3, generator=g).permute(0, 3, 1, 2)  # as load_splits gives it
    return {
        "audio": (spectrogram,),
        "visual": (clip,),
        "cgconvnet": (colored,),
        "cgfused": (colored,),  # CGConvNet with the fused stem (cg_stem = "fused": F.conv2d, no module)
        "mmtm": (spectrogram, clip),
        "centralnet": (spectrogram, clip),
        "cg-mmtm": (gray, colored),
        "cg-centralnet": (gray, colored),
    }[encoder]


def module(encoder: str, width: int) -> nn.Module:
    from avel.families import build_model
    from avel.models.encoders import AudioEncoder, CGConvNet, VisualEncoder

    if encoder == "audio":
        return AudioEncoder(width)
    if encoder == "visual":
        return VisualEncoder(width, pooled=True)
    if encoder == "cgconvnet":
        return CGConvNet(3)
    if encoder == "cgfused":
        return CGConvNet(3, stem="fused")
    family, fusion = ("cgmnist", encoder[3:]) if encoder.startswith("cg-") else ("resnet18", encoder)
    return build_model(family, fusion, input_mode="e2e", num_classes=6, width=width)


def layout_check(model: nn.Module, seen: list[str]) -> None:
    """Record every CPU convolution that gets a channels_last input (the path issue #24 crashes in)."""

    def hook(conv: nn.Module, args: tuple[Tensor, ...]) -> None:
        x = args[0]
        if x.device.type == "cpu" and not x.is_contiguous():  # channels_last (or permuted) strides
            seen.append(f"{type(conv).__name__}{tuple(x.shape)} strides {x.stride()}")

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_pre_hook(hook)


class ConvLayout(TorchFunctionMode):
    """The same check for every ``F.conv2d`` call, a module's or not (the fused CG-MNIST stem calls it
    with its own product weights)."""

    def __init__(self, seen: list[str]) -> None:
        super().__init__()
        self.seen = seen

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.conv2d:
            from avel.models.encoders import stem_channels_last  # the one proven (tests/test_cpu_layouts.py)

            x = args[0]
            if x.device.type == "cpu" and not x.is_contiguous() and not stem_channels_last(x, args[1]):
                self.seen.append(f"conv2d{tuple(x.shape)} strides {x.stride()}")
        return func(*args, **(kwargs or {}))


def run(case: str) -> None:
    """One forward + backward; raises when the loss or a gradient is not finite, or a CPU convolution got a
    channels_last input."""
    if case == "crash-sigsegv":  # the parent's own test: a native crash, as issue #24's kernel gives
        os.kill(os.getpid(), signal.SIGSEGV)
    encoder, width, size, frames = parse(case)
    torch.manual_seed(0)
    model = module(encoder, width).train()
    seen: list[str] = []
    layout_check(model, seen)
    with ConvLayout(seen):
        out = model(*inputs(encoder, size, frames))
    out = out.logits if hasattr(out, "logits") else out
    out.float().square().mean().backward()
    if seen:
        raise AssertionError(f"channels_last input to a CPU convolution: {seen[0]}")
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()]
    if bad or not any(p.grad is not None for p in model.parameters()):
        raise AssertionError(f"no finite gradient: {bad[:3] or 'none at all'}")


def main(cases: list[str]) -> None:
    torch.set_num_threads(1)
    for case in cases:
        print(f"start {case}", flush=True)
        try:
            run(case)
        except Exception as e:  # a Python-level failure: reported, the next case runs
            print(f"fail {case}: {type(e).__name__}: {' '.join(str(e).split())}", flush=True)
            continue
        print(f"ok {case}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
