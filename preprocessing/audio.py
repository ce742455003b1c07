"""Audio decoding with decord (16 kHz mono) and the log-spectrogram with torchaudio.

Spectrogram: n_fft 512, hann window 512, hop 159, magnitude (power 1), no centring; log(|X| + 1e-7);
per-clip standardisation (mean and std over the whole clip). 10 s at 16 kHz gives 257 × 1004.
Column c covers samples [159c, 159c + 512) and belongs to the second that contains its centre.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import av
import decord
import numpy as np
import torch
import torchaudio

from preprocessing.quiet import quiet_stderr


@dataclass(frozen=True)
class SpecParams:
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 512
    hop_length: int = 159
    eps: float = 1e-7


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """(S,) float32 mono waveform resampled to ``sample_rate`` by decord (stereo is mixed to mono)."""
    try:
        with quiet_stderr():
            reader = decord.AudioReader(str(path), sample_rate=sample_rate, mono=True)
    except decord.DECORDError as e:
        if "audio stream" in str(e):
            raise ValueError(f"{path}: no audio stream") from None
        raise
    return decoded_samples(reader)


def decoded_samples(reader: decord.AudioReader) -> np.ndarray:
    """(S,) float32 samples of a mono reader. decord 0.6 decodes the whole stream on open and keeps it in
    ``_array``; ``reader[:]`` would rebuild and validate an index per sample (about 20 ms per 10 s clip)."""
    array = getattr(reader, "_array", None)
    if not isinstance(array, np.ndarray):
        array = reader[:].asnumpy()
    return array.reshape(-1).astype(np.float32, copy=False)


def source_sample_rate(path: str | Path) -> int:
    """Sample rate of the first audio stream as stored in the file (0 if none). Read from the container
    header (a tiny probe: mp4 and mkv store it there), with a full probe when the header lacks it."""
    for options in ({"probesize": "4096", "analyzeduration": "0"}, None):
        with av.open(str(path), options=options) as c:
            if not c.streams.audio:
                return 0
            if c.streams.audio[0].rate:
                return int(c.streams.audio[0].rate)
    return 0


def fit_length(wave: np.ndarray, length: int, pad: str = "zero") -> np.ndarray:
    """Cut to ``length`` samples, or pad: "zero" appends zeros, "tile" repeats the clip (PMR reference)."""
    if len(wave) >= length:
        return wave[:length]
    if pad == "zero":
        return np.concatenate([wave, np.zeros(length - len(wave), np.float32)])
    if pad == "tile":
        if len(wave) == 0:
            return np.zeros(length, np.float32)
        return np.tile(wave, -(-length // len(wave)))[:length]
    raise ValueError(f"unknown audio_pad {pad!r}; valid: ['zero', 'tile']")


@functools.cache
def _spectrogram(p: SpecParams) -> torchaudio.transforms.Spectrogram:
    return torchaudio.transforms.Spectrogram(
        n_fft=p.n_fft, win_length=p.win_length, hop_length=p.hop_length, power=1, center=False
    )  # hann window


def log_spectrogram(wave: np.ndarray, p: SpecParams = SpecParams()) -> np.ndarray:
    """(F=257, L) float32 standardised log-magnitude spectrogram of a mono waveform."""
    spec = _spectrogram(p)(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))  # (F, L)
    x = torch.log(spec + p.eps).numpy()  # log(|X| + eps)
    # per-clip standardisation; NumPy's float64 sums give the same bits whatever torch's thread count
    mean, std = x.mean(dtype=np.float64), x.std(dtype=np.float64, ddof=1)
    return ((x - mean) / max(std, 1e-8)).astype(np.float32)


def num_columns(samples: int, p: SpecParams = SpecParams()) -> int:
    return max(0, (samples - p.n_fft) // p.hop_length + 1)


def segment_columns(segments: int, p: SpecParams = SpecParams()) -> np.ndarray:
    """(T+1,) int64 boundaries: second t owns columns [b[t], b[t+1]) (column centre 159c + 256 in it)."""
    total = num_columns(segments * p.sample_rate, p)
    centre = np.arange(total) * p.hop_length + p.n_fft // 2
    second = centre // p.sample_rate
    bounds = np.searchsorted(second, np.arange(segments + 1), side="left")
    return bounds.astype(np.int64)
