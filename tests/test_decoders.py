"""``avel preprocess --decoder``: decord (default) and torchcodec (optional extra). The equal-output tests
decode the embedded sets (AVE-form mp4: H.264 + AAC; CREMA-D form: FLV1 + wav) with both and compare frames
and audio within the stated tolerances; they are skipped when torchcodec cannot decode here (not installed,
or its FFmpeg shared libraries absent). The option's checks and the unchanged decord stamps run everywhere."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from avel.cli import app
from avel.preprocessing.annotations import load_ave
from avel.preprocessing.audio import SpecParams, load_audio
from avel.preprocessing.decoders import DECORD, Decoder, torchcodec_unavailable
from avel.preprocessing.pipeline import DecodeParams, ave_decoding, preprocess
from avel.preprocessing.video import open_checked

WHY_NOT = torchcodec_unavailable()
needs_torchcodec = pytest.mark.skipif(bool(WHY_NOT), reason=f"torchcodec cannot load here: {WHY_NOT}")
TORCHCODEC = Decoder("torchcodec")
# Tolerances, from what is measured on the embedded sets (torchcodec 0.13 on PyAV 18's FFmpeg 8 against
# decord 0.6): the same frames to the bit (both convert FFmpeg's YUV to RGB with swscale; a different FFmpeg
# or swscale flags could move a pixel, hence a tolerance of a few levels), the same number of audio samples,
# the samples within 1e-7 (float rounding of the resampler); the stated tolerances leave margin for that.
FRAME_MEAN_TOL, FRAME_MAX_TOL = 0.5, 8  # uint8 levels: mean |diff| over a frame, any single pixel
AUDIO_TOL = 1e-4  # max |diff| of float samples in [-1, 1]


def test_decoder_option_checks():
    assert Decoder().check() == DECORD and DECORD.stamp() == {}  # decord runs stamp shards as before
    assert TORCHCODEC.stamp() == {"decoder": "torchcodec", "decoder_device": "cpu"}
    with pytest.raises(ValueError) as e:
        Decoder("ffmpeg").check()
    assert str(e.value) == 'decoder: "ffmpeg" is not allowed: must be one of decord, torchcodec'
    with pytest.raises(ValueError) as e:
        Decoder("torchcodec", "tpu").check()
    assert str(e.value) == 'decoder_device: "tpu" is not allowed: must be one of cpu, cuda'
    with pytest.raises(ValueError, match="^decoder_device: cuda needs decoder torchcodec"):
        Decoder("decord", "cuda").check()


@pytest.mark.skipif(not WHY_NOT, reason="torchcodec decodes here")
def test_unavailable_torchcodec_is_one_line_exit_2(tiny_ave, tmp_path):
    res = CliRunner().invoke(
        app, ["preprocess", str(tiny_ave), str(tmp_path / "o.h5"), "--decoder", "torchcodec"]
    )
    assert res.exit_code == 2 and res.output.strip().startswith("error: torchcodec cannot load here: ")
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "o.h5").exists()


def _frames_close(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.reshape(len(a), -1).mean(1).max() <= FRAME_MEAN_TOL, diff.mean()
    assert diff.max() <= FRAME_MAX_TOL, diff.max()


def _audio_close(a: np.ndarray, b: np.ndarray) -> None:
    n = min(len(a), len(b))
    assert len(a) == len(b) and np.abs(a[:n] - b[:n]).max() <= AUDIO_TOL, (len(a), len(b))


@needs_torchcodec
def test_torchcodec_frames_and_audio_equal_decords_on_the_embedded_sets(tiny_ave, tmp_path):
    from avel.synth.clips import ClipSynthConfig, synth_clips

    synth_clips(tmp_path / "cd", ClipSynthConfig(clips=6, fps=30.0, frame_size=64, seed=0))
    videos = sorted((tiny_ave / "AVE").glob("*.mp4"))[:6] + sorted(
        (tmp_path / "cd" / "VideoFlash").glob("*.flv")
    )
    for path in videos:
        (d, n, fps), (t, m, tfps) = open_checked(path), open_checked(path, TORCHCODEC)
        assert (n, round(fps, 3)) == (m, round(tfps, 3)), path
        idx = sorted({0, n // 3, n // 2, n - 1})
        _frames_close(d.get_batch(idx).asnumpy(), t.get_batch(idx).asnumpy())
    audio = (
        sorted((tiny_ave / "AVE").glob("*.mp4"))[:3]
        + sorted((tmp_path / "cd" / "AudioWAV").glob("*.wav"))[:3]
    )
    for path in audio:
        _audio_close(load_audio(path), load_audio(path, decoder=TORCHCODEC))


@pytest.mark.slow  # worker processes
@needs_torchcodec
def test_torchcodec_preprocess_file_matches_decords(tiny_ave, tiny_h5, tmp_path):
    """The whole file: the same rows, frames and spectrograms within the tolerances, the decoder recorded;
    two --shard runs in worker processes + --merge give the same file; the parts folder of a decord run
    refuses a torchcodec resume (no mixed decoders)."""
    out = tmp_path / "tc.h5"
    report = preprocess(tiny_ave, out, frame_size=32, progress=False, decoder=TORCHCODEC)
    assert not report.failed
    with h5py.File(tiny_h5) as a, h5py.File(out) as b:
        assert b.attrs["decoder"] == "torchcodec" and "decoder" not in a.attrs
        for key in (
            "label",
            "source_sample_rate",
            "fps",
        ):  # the rate: torchcodec's stream, decord's PyAV probe
            assert np.array_equal(a[key][()], b[key][()]), key
        fa, fb = a["frames"][()], b["frames"][()]
        _frames_close(fa.reshape(-1, *fa.shape[-3:]), fb.reshape(-1, *fb.shape[-3:]))
        log_diff = np.abs(a["spectrogram"][()] - b["spectrogram"][()])  # log magnitudes: a 1e-7 change of
        assert log_diff.mean() < 1e-3 and np.quantile(log_diff, 0.999) < 0.05  # a near-silent bin moves ~1
    merged = tmp_path / "merged.h5"
    for i in range(2):
        run = preprocess(
            tiny_ave, merged, frame_size=32, workers=2, progress=False, shard=(i, 2), decoder=TORCHCODEC
        )
        assert not run.failed
    preprocess(tiny_ave, merged, frame_size=32, progress=False, merge=True, decoder=TORCHCODEC)
    with h5py.File(out) as a, h5py.File(merged) as b:
        assert b.attrs["decoder"] == "torchcodec"
        for key in ("frames", "spectrogram", "label"):
            assert np.array_equal(a[key][()], b[key][()]), key
    decord_run = ave_decoding(tiny_ave, load_ave(tiny_ave), DecodeParams(32, 1, 10, "zero"), SpecParams())
    parts = tmp_path / "mixed.h5.parts"  # a decord run's unfinished shards
    parts.mkdir()
    (parts / "params.json").write_text(json.dumps(decord_run.params))
    with pytest.raises(ValueError, match="different parameters"):
        preprocess(tiny_ave, tmp_path / "mixed.h5", frame_size=32, progress=False, decoder=TORCHCODEC)
    preprocess(tiny_ave, tmp_path / "mixed.h5", frame_size=32, progress=False)  # decord resumes them
