"""Audio decoding with decord (mono, resampled) and the log-spectrogram presets (``SPECTROGRAMS``).

"avel" (the default): 16 kHz, n_fft 512, hann window 512, hop 159, magnitude (power 1), no
centring; log(|X| + 1e-7); per-clip standardisation (mean and unbiased std over the whole clip). 10 s at
16 kHz gives 257 × 1004.

"pmr": the transform of the released PMR code (Fan et al., CVPR 2023; its CREMA-D audio preprocessing),
computed in torch: audio at 22.05 kHz (librosa's default rate), ``scipy.signal.spectrogram`` with its
defaults (periodic Tukey(0.25) window of 512, hop 159, each frame's mean removed, density-scaled one-sided
power spectral density), log(PSD + 1e-7), standardised with the population std + 1e-9. The released code
first tiles the waveform 10 times, cuts it at 16000 × 10 samples (7.26 s at 22.05 kHz) and clips it to
[-1, 1]: ``pmr_waveform``; ``clip_log_spectrogram`` runs both steps (257 × 1004 per clip).

"pmr16": the same released transform on audio at 16 kHz, the rate of the paper's CREMA-D spectrogram: 3 s
give 257 × 299 (PMR §5.2: window 512, hop 159), where "pmr" gives 257 × 413.

Column c covers samples [159c, 159c + 512) and belongs to the second that contains its centre.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from pathlib import Path

import av
import decord
import numpy as np
import torch
import torchaudio

from avel.preprocessing.decoders import DECORD, Decoder, torchcodec_audio
from avel.preprocessing.quiet import quiet_stderr


@dataclass(frozen=True)
class SpecParams:
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 512
    hop_length: int = 159
    eps: float = 1e-7
    transform: str = "avel"  # "avel": log(|STFT| + eps); "pmr": log(PSD + eps) as scipy.signal.spectrogram
    clip_samples: int = 0  # "pmr": a clip sample's waveform is tiled and cut to this many samples


SPECTROGRAMS: dict[str, SpecParams] = {
    "avel": SpecParams(),
    "pmr": SpecParams(sample_rate=22050, transform="pmr", clip_samples=16000 * 10),
    "pmr16": SpecParams(sample_rate=16000, transform="pmr", clip_samples=16000 * 10),  # 3 s: 257 x 299
}
SPECTROGRAM_ATTRS: dict[str, dict[str, object]] = {  # what each transform computes, for `avel info`
    "avel": {"window": "hann", "power": 1, "normalisation": "per-clip mean/std of the log-spectrogram"},
    "pmr": {
        "window": "tukey 0.25 (periodic), frame mean removed",
        "power": 2,
        "normalisation": "log(PSD + eps), density scaling; per-clip mean/std (population)",
    },
}

PMR_TILES = 10  # the released code tiles every clip 10 times before cutting it


def spec_from_params(params: dict) -> SpecParams:
    """SpecParams from a file's attributes or a checkpoint's data parameters; absent keys take the
    defaults (files written before the "pmr" transform existed are "avel")."""
    names = {f.name for f in fields(SpecParams)}
    return SpecParams(**{k: type(getattr(SpecParams(), k))(v) for k, v in params.items() if k in names})


def spectrogram_params(name: str) -> SpecParams:
    """The parameters of a named transform; unknown names raise ValueError listing the valid ones."""
    if name not in SPECTROGRAMS:
        raise ValueError(f"unknown spectrogram {name!r}; valid: {list(SPECTROGRAMS)}")
    return SPECTROGRAMS[name]


def load_audio_and_rate(
    path: str | Path, sample_rate: int, decoder: Decoder = DECORD
) -> tuple[np.ndarray, int]:
    """``load_audio``'s waveform and the file's own sample rate (``source_sample_rate``): torchcodec reads
    it from the stream it decodes, decord's path probes the file with PyAV."""
    if decoder.name == "torchcodec":
        with quiet_stderr():
            return torchcodec_audio(path, sample_rate)
    return load_audio(path, sample_rate), source_sample_rate(path)


def load_audio(path: str | Path, sample_rate: int = 16000, decoder: Decoder = DECORD) -> np.ndarray:
    """(S,) float32 mono waveform resampled to ``sample_rate`` by decord (stereo is mixed to mono), or by
    torchcodec (``decoder``)."""
    if decoder.name == "torchcodec":
        return load_audio_and_rate(path, sample_rate, decoder)[0]
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
    """(F=257, L) float32 standardised log spectrogram of a mono waveform, by ``p.transform``; a waveform
    holding NaN or Inf is refused (its video fails, named in the report), never written."""
    bad = np.flatnonzero(~np.isfinite(wave))
    if len(bad):
        at = bad[0] / p.sample_rate
        raise ValueError(f"the audio holds {len(bad)} NaN / Inf sample(s), the first at {at:.3f} s")
    if p.transform == "pmr":
        return pmr_log_spectrogram(wave, p)
    if p.transform != "avel":
        raise ValueError(f"unknown spectrogram transform {p.transform!r}; valid: {list(SPECTROGRAMS)}")
    spec = _spectrogram(p)(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))  # (F, L)
    x = torch.log(spec + p.eps).numpy()  # log(|X| + eps)
    # per-clip standardisation; NumPy's float64 sums give the same bits whatever torch's thread count
    mean, std = x.mean(dtype=np.float64), x.std(dtype=np.float64, ddof=1)
    return ((x - mean) / max(std, 1e-8)).astype(np.float32)


@functools.cache
def tukey_window(length: int, alpha: float = 0.25) -> torch.Tensor:
    """Periodic Tukey window (float64), as ``scipy.signal.get_window(("tukey", alpha), length)``:
    the symmetric window of ``length + 1`` points without its last point."""
    m = length + 1
    n = torch.arange(m, dtype=torch.float64)
    width = int(np.floor(alpha * (m - 1) / 2.0))
    w = torch.ones(m, dtype=torch.float64)
    rise, fall = n[: width + 1], n[m - width - 1 :]
    w[: width + 1] = 0.5 * (1 + torch.cos(np.pi * (-1 + 2.0 * rise / alpha / (m - 1))))  # cosine taper
    w[m - width - 1 :] = 0.5 * (1 + torch.cos(np.pi * (-2.0 / alpha + 1 + 2.0 * fall / alpha / (m - 1))))
    return w[:-1]


def pmr_log_spectrogram(wave: np.ndarray, p: SpecParams = SPECTROGRAMS["pmr"]) -> np.ndarray:
    """(F=257, L) float32: log(PSD + eps) of ``scipy.signal.spectrogram(clip(wave, -1, 1), fs, nperseg=512,
    noverlap=353)`` with its defaults, standardised as the released PMR code does (population std + 1e-9)."""
    x = torch.from_numpy(np.ascontiguousarray(wave)).to(torch.float64).clamp(-1.0, 1.0)  # as released
    if len(x) < p.n_fft:
        raise ValueError(f"{len(x)} samples: the pmr spectrogram needs at least {p.n_fft}")
    frames = x.unfold(0, p.n_fft, p.hop_length)  # (L, n_fft): frame c = samples [159c, 159c + 512)
    frames = frames - frames.mean(-1, keepdim=True)  # detrend="constant"
    w = tukey_window(p.n_fft)
    psd = torch.fft.rfft(frames * w, n=p.n_fft).abs().square() / (p.sample_rate * w.square().sum())
    psd[:, 1:-1] *= 2  # one-sided density: every bin but DC and Nyquist counts twice
    x = torch.log(psd.T + p.eps)  # log(PSD + 1e-7)
    x = (x - x.mean()) / (x.std(correction=0) + 1e-9)  # np.std, + 1e-9 as the released code
    return x.to(torch.float32).numpy()


def pmr_waveform(wave: np.ndarray, samples: int = 16000 * 10) -> np.ndarray:
    """The released PMR code's clip waveform: tiled 10 times, cut at ``samples``, clipped to [-1, 1]
    (``pmr_log_spectrogram`` clips again: a no-op here, the clip for waveforms cut another way)."""
    tiled = np.tile(np.asarray(wave, dtype=np.float32), PMR_TILES)[:samples]
    if len(tiled) < samples:
        raise ValueError(
            f"a {len(wave)}-sample clip tiled {PMR_TILES} times gives {len(tiled)} < {samples} samples"
        )
    return np.clip(tiled, -1.0, 1.0)


def clip_log_spectrogram(wave: np.ndarray, p: SpecParams = SPECTROGRAMS["pmr"]) -> np.ndarray:
    """One clip sample's spectrogram: the waveform tiled and cut to ``p.clip_samples`` first when set
    (the released PMR preprocessing of a CREMA-D clip: 257 × 1004), else the waveform as it is."""
    if p.clip_samples:
        wave = pmr_waveform(wave, p.clip_samples)
    return log_spectrogram(wave, p)


def num_columns(samples: int, p: SpecParams = SpecParams()) -> int:
    return max(0, (samples - p.n_fft) // p.hop_length + 1)


def segment_columns(segments: int, p: SpecParams = SpecParams()) -> np.ndarray:
    """(T+1,) int64 boundaries: second t owns columns [b[t], b[t+1]) (column centre 159c + 256 in it)."""
    total = num_columns(segments * p.sample_rate, p)
    centre = np.arange(total) * p.hop_length + p.n_fft // 2
    second = centre // p.sample_rate
    bounds = np.searchsorted(second, np.arange(segments + 1), side="left")
    return bounds.astype(np.int64)
