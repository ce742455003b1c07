"""The decoders ``avel preprocess`` can read media with: decord (the default) or torchcodec (PyTorch's
maintained decoder: FFmpeg on CPU, NVDEC with ``device="cuda"``; the optional extra ``avel[torchcodec]``,
which needs FFmpeg 4-8 shared libraries on the machine).

A torchcodec reader offers the three calls preprocess makes of decord's (``len``, ``get_avg_fps``,
``get_batch(indices).asnumpy()``), so frame sampling, resizing, shards, resume and locks are the same code
for both. Frames come back as (N, H, W, 3) uint8 RGB on the CPU, audio as (S,) float32 mono at the asked
rate; how close torchcodec's are to decord's is tested (``tests/test_decoders.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avel.rules import check, one_of

DECODERS = ("decord", "torchcodec")
DECODER_DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Decoder:
    """Which library decodes (``name``) and where torchcodec decodes video (``device``; decord: CPU)."""

    name: str = "decord"
    device: str = "cpu"

    def check(self) -> Decoder:
        """Itself, or a one-line ValueError: an unknown name or device, or torchcodec not loadable here."""
        check("decoder", self.name, one_of(*DECODERS))
        check("decoder_device", self.device, one_of(*DECODER_DEVICES))
        if self.name == "decord" and self.device != "cpu":
            raise ValueError("decoder_device: cuda needs decoder torchcodec (decord decodes on the CPU)")
        if self.name == "torchcodec":
            why = torchcodec_unavailable()
            if why:
                raise ValueError(f"torchcodec cannot load here: {why}")
        return self

    def stamp(self) -> dict[str, str]:
        """What a run's shards and file record of the decoder: nothing for decord (files and shards of
        earlier runs stay valid), the name and device otherwise (a resume never mixes decoders)."""
        return {} if self == Decoder() else {"decoder": self.name, "decoder_device": self.device}


DECORD = Decoder()


def torchcodec_unavailable() -> str:
    """Why torchcodec cannot decode here ('' when it can): not installed, or no FFmpeg 4-8 shared libraries
    found (with the way to use PyAV's bundled ones when PyAV has them: ``scripts/pyav_ffmpeg_env.py``)."""
    try:
        import torchcodec.decoders  # noqa: F401 (loads libtorchcodec and the FFmpeg libraries)
    except ImportError:
        return "torchcodec is not installed (pip install 'avel[torchcodec]')"
    except (OSError, RuntimeError):
        hint = (
            "; PyAV's bundled FFmpeg works: eval $(python scripts/pyav_ffmpeg_env.py)"
            if pyav_ffmpeg_libs()
            else ""
        )
        return f"no FFmpeg 4-8 shared libraries on the library path (ldconfig -p | grep avcodec){hint}"
    return ""


def pyav_ffmpeg_libs() -> Path | None:
    """PyAV's wheel-bundled FFmpeg folder (``av.libs``; its files carry hashed names), if PyAV has one."""
    try:
        import av
    except ImportError:
        return None
    for name in ("av.libs", "pyav.libs"):
        folder = Path(av.__file__).parent.parent / name
        if any(folder.glob("libavcodec-*.so*")):
            return folder
    return None


class _Frames:
    """decord's NDArray interface for a tensor of frames: ``asnumpy()``."""

    def __init__(self, data: Any):
        self.data = data

    def asnumpy(self) -> np.ndarray:
        return self.data.cpu().numpy()


class TorchcodecVideo:
    """A torchcodec ``VideoDecoder`` behind decord's ``VideoReader`` calls (exact seeking: frame i is the
    i-th frame in presentation order, as decord's index)."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        from torchcodec.decoders import VideoDecoder

        self.decoder = VideoDecoder(
            str(path), dimension_order="NHWC", num_ffmpeg_threads=1, device=device, seek_mode="exact"
        )
        meta = self.decoder.metadata
        # the container's frame rate, as decord's get_avg_fps (torchcodec's average_fps is frames over the
        # scanned duration: 30.24 for a 30 fps FLV1 clip of 126 frames with millisecond timestamps)
        fps = meta.average_fps_from_header or meta.average_fps or 0.0
        self.num_frames, self.fps = int(meta.num_frames or 0), float(fps)

    def __len__(self) -> int:
        return self.num_frames

    def get_avg_fps(self) -> float:
        return self.fps

    def get_batch(self, indices: list[int]) -> _Frames:
        return _Frames(self.decoder.get_frames_at(indices).data)  # (N, H, W, 3) uint8


def torchcodec_audio(path: str | Path, sample_rate: int) -> tuple[np.ndarray, int]:
    """(S,) float32 mono samples at ``sample_rate`` (FFmpeg's resampler and channel mix) and the stream's own
    sample rate (no second probe of the file); a ValueError naming the file when it has no audio stream."""
    from torchcodec.decoders import AudioDecoder

    try:
        decoder = AudioDecoder(str(path), sample_rate=sample_rate, num_channels=1)
    except (RuntimeError, ValueError) as e:
        if "audio" in str(e).lower() and "stream" in str(e).lower():
            raise ValueError(f"{path}: no audio stream") from None
        raise
    wave = decoder.get_all_samples().data.reshape(-1).numpy().astype(np.float32, copy=False)
    return wave, int(decoder.metadata.sample_rate or 0)
