"""The "pmr" and "pmr16" spectrogram presets against scipy.signal.spectrogram, the released PMR code's
transform (at 22.05 kHz, and at 16 kHz: PMR's 257 × 299 for a 3 s CREMA-D window).

scipy is a test dependency only: avel computes the transform in torch.
"""

from __future__ import annotations

import numpy as np
import pytest

from avel.preprocessing.audio import (
    SPECTROGRAMS,
    clip_log_spectrogram,
    load_audio,
    log_spectrogram,
    pmr_log_spectrogram,
    pmr_waveform,
    spectrogram_params,
    tukey_window,
)

signal = pytest.importorskip("scipy.signal")

PMR = SPECTROGRAMS["pmr"]
PMR16 = SPECTROGRAMS["pmr16"]


def released_transform(samples: np.ndarray, samplerate: int = 22050) -> np.ndarray:
    """The released PMR CREMA-D audio preprocessing, step by step, on already loaded samples."""
    resamples = np.tile(samples, 10)[: 16000 * 10]
    resamples[resamples > 1.0] = 1.0
    resamples[resamples < -1.0] = -1.0
    _, _, spectrogram = signal.spectrogram(resamples, samplerate, nperseg=512, noverlap=353)
    spectrogram = np.log(spectrogram + 1e-7)
    return np.divide(spectrogram - np.mean(spectrogram), np.std(spectrogram) + 1e-9)


def test_tukey_window_is_scipys_periodic_window():
    ours = tukey_window(512, 0.25).numpy()
    np.testing.assert_allclose(ours, signal.get_window(("tukey", 0.25), 512), atol=1e-12)
    assert ours[0] == 0.0 and ours[256] == 1.0


def test_pmr_preset_matches_scipy_on_decoded_audio(tiny_ave):
    """Real audio decoded at 22.05 kHz from an `avel synth` video: the whole released pipeline."""
    wave = load_audio(next((tiny_ave / "AVE").glob("*.mp4")), PMR.sample_rate)
    ours = clip_log_spectrogram(wave, PMR)
    reference = released_transform(wave.astype(np.float64))  # scipy in float64: the formula
    assert ours.shape == reference.shape == (257, 1004)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    # on float32 samples (librosa's dtype) scipy computes in float32: agreement to its rounding
    np.testing.assert_allclose(ours, released_transform(wave.copy()), atol=1e-3)


def test_pmr16_preset_matches_scipy_on_the_same_audio_at_16k(tiny_ave):
    """The same video's audio decoded at 16 kHz: the released pipeline with fs = 16000 (257 × 1004)."""
    wave = load_audio(next((tiny_ave / "AVE").glob("*.mp4")), PMR16.sample_rate)
    assert PMR16.sample_rate == 16000 and PMR16.transform == "pmr" and PMR16.n_fft == 512
    ours = clip_log_spectrogram(wave, PMR16)
    reference = released_transform(wave.astype(np.float64), samplerate=16000)
    assert ours.shape == reference.shape == (257, 1004)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(ours, released_transform(wave.copy(), samplerate=16000), atol=1e-3)


def scipy_log_psd(x: np.ndarray, samplerate: int) -> np.ndarray:
    """log(PSD + 1e-7) of scipy.signal.spectrogram's defaults, standardised as the released code does."""
    _, _, psd = signal.spectrogram(np.clip(x, -1.0, 1.0), samplerate, nperseg=512, noverlap=353)
    logp = np.log(psd + 1e-7)
    return (logp - logp.mean()) / (logp.std() + 1e-9)


def test_pmr16_gives_257_by_299_for_a_cremad_clip(tmp_path):
    """`avel synth --layout crema-d` → `avel preprocess --spectrogram pmr16`: 3 s at 16 kHz, 257 × 299
    (PMR §5.2), each row scipy's transform of the wav's first 3 s (a shorter clip tiled); pmr: 257 × 413."""
    import h5py
    from typer.testing import CliRunner

    from avel.cli import app
    from avel.preprocessing.audio import fit_length

    runner = CliRunner()
    r = runner.invoke(app, ["synth", str(tmp_path / "cd"), "--layout", "crema-d", "--videos", "6",
                            "--frame-size", "32", "--fps", "10"])  # fmt: skip
    assert r.exit_code == 0, r.output
    shapes = {}
    for name in ("pmr16", "pmr"):
        out = tmp_path / f"{name}.h5"
        args = ["preprocess", str(tmp_path / "cd"), str(out), "--spectrogram", name, "--frame-size", "32",
                "--frames", "2", "--no-progress"]  # fmt: skip
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
        with h5py.File(out, "r") as f:
            shapes[name] = (f["spectrogram"].shape, f.attrs["sample_rate"], f.attrs["transform"])
            assert f.attrs["spectrogram"] == name and f.attrs["hop_length"] == 159
    assert shapes == {"pmr16": ((6, 257, 299), 16000, "pmr"), "pmr": ((6, 257, 413), 22050, "pmr")}
    with h5py.File(tmp_path / "pmr16.h5", "r") as f:
        ids, stored = f["clip_id"].asstr()[()], f["spectrogram"][()]
    for i, cid in enumerate(ids):
        wave = load_audio(tmp_path / "cd" / "AudioWAV" / f"{cid}.wav", 16000)
        window = fit_length(wave, 3 * 16000, "tile").astype(np.float64)
        np.testing.assert_allclose(stored[i], scipy_log_psd(window, 16000), atol=1e-5, err_msg=cid)


@pytest.mark.parametrize("amplitude", [1.5, 1e-3])
def test_pmr_preset_matches_scipy_loud_and_quiet(amplitude):
    """A clipped loud tone and a quiet one (1e-7 on the PSD scale floors many bins of the quiet one)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(2.5 * 22050)) / 22050
    wave = (amplitude * np.sin(2 * np.pi * 440 * t) + 0.1 * amplitude * rng.normal(size=t.shape)).astype(
        np.float32
    )
    ours = clip_log_spectrogram(wave, PMR)
    np.testing.assert_allclose(ours, released_transform(wave.astype(np.float64)), atol=1e-5)
    np.testing.assert_allclose(ours, released_transform(wave.copy()), atol=1e-3)


def test_pmr_spectrogram_formula_on_one_frame():
    """Hand computation for one 512-sample frame: detrend, window, |rfft|^2 / (fs Σw²), ×2 off DC/Nyquist."""
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.9, 0.9, size=512)
    w = signal.get_window(("tukey", 0.25), 512)
    psd = np.abs(np.fft.rfft((x - x.mean()) * w)) ** 2 / (22050 * (w**2).sum())
    psd[1:-1] *= 2
    logp = np.log(psd + 1e-7)
    expected = (logp - logp.mean()) / (logp.std() + 1e-9)
    ours = pmr_log_spectrogram(x, PMR)
    assert ours.shape == (257, 1)
    np.testing.assert_allclose(ours[:, 0], expected, atol=1e-5)


def test_pmr_waveform_tiles_ten_times_cuts_and_clips():
    wave = np.array([0.5, 2.0, -3.0], np.float32)
    out = pmr_waveform(wave, samples=25)
    np.testing.assert_array_equal(out, np.tile([0.5, 1.0, -1.0], 10)[:25])
    with pytest.raises(ValueError, match="tiled 10 times gives 30 < 31 samples"):
        pmr_waveform(wave, samples=31)


def test_the_two_transforms_differ_and_are_named():
    assert spectrogram_params("avel") == SPECTROGRAMS["avel"] and spectrogram_params("pmr") == PMR
    with pytest.raises(ValueError, match="unknown spectrogram 'mel'; valid: \\['avel', 'pmr', 'pmr16'\\]"):
        spectrogram_params("mel")
    rng = np.random.default_rng(2)
    wave = rng.normal(size=22050).astype(np.float32) * 0.1
    a, p = log_spectrogram(wave, SPECTROGRAMS["avel"]), log_spectrogram(wave, PMR)
    assert a.shape == p.shape
    assert np.corrcoef(a.ravel(), p.ravel())[0, 1] < 0.999  # hann magnitude vs Tukey PSD


def test_preprocess_with_the_pmr_spectrogram_and_pmr_clip_samples(tiny_ave, tmp_path):
    """`avel preprocess --spectrogram pmr`: 10 s at 22.05 kHz per video; clip samples get 1004 columns of
    the event span, standardised after tiling with ``audio_norm="tiled"`` (PMR's order)."""
    import h5py
    from typer.testing import CliRunner

    from avel.cli import app
    from avel.families import load_splits
    from avel.preprocessing.audio import fit_length, segment_columns

    out = tmp_path / "pmr.h5"
    r = CliRunner().invoke(
        app,
        [
            "preprocess",
            str(tiny_ave),
            str(out),
            "--frame-size",
            "16",
            "--spectrogram",
            "pmr",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    with h5py.File(out, "r") as f:
        assert f.attrs["transform"] == "pmr" and f.attrs["sample_rate"] == 22050 and f.attrs["power"] == 2
        vid = f["video_id"][0].decode()
        stored = f["spectrogram"][0]
        np.testing.assert_array_equal(f["segment_columns"][()], segment_columns(10, PMR))
    wave = load_audio(tiny_ave / "AVE" / f"{vid}.mp4", 22050)
    assert stored.shape == (257, (22050 * 10 - 512) // 159 + 1)
    np.testing.assert_allclose(stored, pmr_log_spectrogram(fit_length(wave, 22050 * 10), PMR), atol=1e-6)
    for norm in ("clip", "tiled"):
        audio = load_splits(
            out, family="resnet18", augment=False, splits=("train",), audio_norm=norm
        ).train.audio
        assert audio.shape[1:] == (257, 1004)
        std = audio.flatten(1).std(1, correction=0)
        assert (std - 1).abs().max() < 1e-4 if norm == "tiled" else (std - 1).abs().max() > 1e-3
    bad = CliRunner().invoke(
        app, ["preprocess", str(tiny_ave), str(tmp_path / "x.h5"), "--spectrogram", "mel"]
    )
    assert bad.exit_code == 2 and "unknown spectrogram 'mel'; valid: ['avel', 'pmr', 'pmr16']" in bad.output


def test_clip_sets_choose_the_transform():
    from avel.preprocessing.clip_pipeline import clip_params

    assert clip_params("crema-d", spectrogram="pmr").spectrogram == "pmr"
    assert clip_params("crema-d", spectrogram="pmr16").spectrogram == "pmr16"
    assert clip_params("crema-d").spectrogram == "avel"
    with pytest.raises(ValueError, match="unknown spectrogram 'mel'"):
        clip_params("crema-d", spectrogram="mel")
