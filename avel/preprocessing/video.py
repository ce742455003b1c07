"""Frame decoding with decord: K frames per one-second segment, resized and center-cropped to S×S uint8 RGB.

Frame k of segment t is taken at time t + (k + 0.5) / K seconds (K = 1: the middle of the second), i.e.
frame index floor(time · fps); times past the end of the video take the last frame (a clip shorter than
its segments repeats its last decoded frame).
"""

from __future__ import annotations

from pathlib import Path

import decord
import numpy as np
import torch
import torch.nn.functional as F

from avel.preprocessing.decoders import DECORD, Decoder, TorchcodecVideo
from avel.preprocessing.quiet import quiet_stderr

decord.logging.set_level(decord.logging.QUIET)  # FFmpeg's log lines; errors reach the caller as exceptions


def frame_times(segments: int, frames_per_segment: int) -> np.ndarray:
    """(T, K) sample times in seconds: K evenly spaced times inside each second."""
    k = (np.arange(frames_per_segment) + 0.5) / frames_per_segment
    return np.arange(segments)[:, None] + k[None, :]


def frame_indices(times: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    """Frame index shown at each time (floor(time · fps)), clamped to the last frame."""
    idx = np.floor(times * fps + 1e-6).astype(np.int64)
    return np.clip(idx, 0, num_frames - 1)


def resize_center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size, size, 3) uint8: the central square, resized (bilinear, antialiased).

    Same as resizing the shorter side to ``size`` then center-cropping, but computed on uint8 pixels of the
    square only (no float copy of the whole frame).
    """
    n, h, w, _ = frames.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = np.ascontiguousarray(frames[:, top : top + side, left : left + side])  # (N, side, side, 3)
    x = torch.from_numpy(square).permute(0, 3, 1, 2)  # (N, 3, side, side), channels_last strides
    if side != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def open_video(path: str | Path, decoder: Decoder = DECORD) -> decord.VideoReader | TorchcodecVideo:
    """A decord reader (or torchcodec's, with decord's calls); the decoders' and FFmpeg's own error lines
    are kept off the terminal (the caller reports the problem in one line)."""
    with quiet_stderr():
        if decoder.name == "torchcodec":
            return TorchcodecVideo(path, decoder.device)
        return decord.VideoReader(str(path), num_threads=1)


def open_checked(
    path: Path, decoder: Decoder = DECORD
) -> tuple[decord.VideoReader | TorchcodecVideo, int, float]:
    """(reader, number of frames, fps) of a video that exists, is not empty and has frames; else one
    ``FileNotFoundError`` / ``ValueError`` naming the file and what is wrong with it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: zero length (empty file)")
    try:
        reader = open_video(path, decoder)
    except Exception as e:  # decord raises its own error type for unreadable containers
        why = "truncated or not a video" if "Error reading" in str(e) else first_line(e)
        raise ValueError(f"{path}: undecodable video ({why})") from None
    num_frames, fps = video_info(reader)
    if num_frames == 0 or not fps > 0:
        raise ValueError(f"{path}: zero length (no video frames)")
    return reader, num_frames, fps


def first_line(e: BaseException) -> str:
    """The last non-empty line of an error (decord puts a C++ stack above it), at most 300 characters."""
    lines = [s for s in str(e).splitlines() if s.strip()]
    return (lines[-1] if lines else type(e).__name__)[:300]


def video_info(reader: decord.VideoReader) -> tuple[int, float]:
    """(number of frames, average fps)."""
    return len(reader), float(reader.get_avg_fps())


def read_frames(
    reader: decord.VideoReader, segments: int, frames_per_segment: int, frame_size: int
) -> np.ndarray:
    """(T, K, S, S, 3) uint8 frames of ``segments`` seconds from an open reader (one get_batch call)."""
    num_frames, fps = video_info(reader)
    idx = frame_indices(frame_times(segments, frames_per_segment), fps, num_frames)  # (T, K)
    unique, inverse = np.unique(idx.ravel(), return_inverse=True)
    batch = reader.get_batch(unique.tolist()).asnumpy()  # (U, H, W, 3)
    frames = resize_center_crop(batch, frame_size)[inverse]
    return frames.reshape(segments, frames_per_segment, frame_size, frame_size, 3)
