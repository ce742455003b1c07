"""The command line end to end on the tiny embedded set: train → evaluate → predict → extract → plot."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import h5py
import pytest
from test_figures import assert_picture, figure_texts
from typer.testing import CliRunner

from avel.cli import app

# The full suite only: processes, grids, kills and CLI round trips (the fast tier: -m 'not slow').
pytestmark = pytest.mark.slow

runner = CliRunner()
TINY = ["--width", "8", "--batch-size", "8", "--device", "cpu", "--no-progress"]


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def e2e_run(tiny_h5, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    code, text = invoke("train", tiny_h5, "--model", "avel", "--fusion", "concat", "--epochs", "2",
                        "--optimizer", "adam", "--out", out, *TINY)  # fmt: skip
    assert code == 0, text
    assert "test accuracy" in text
    return out


def test_help_lists_every_command():
    code, text = invoke("--help")
    assert code == 0
    for name in ("synth", "preprocess", "import-features", "info", "train", "evaluate", "predict", "extract",
                 "plot", "demo", "ablate"):  # fmt: skip
        assert re.search(rf"│ {name} ", text), name


def test_evaluate_writes_report_and_confusion(e2e_run, tiny_h5):
    code, text = invoke("evaluate", e2e_run / "best.pt", tiny_h5, "--split", "test")
    assert code == 0, text
    rep = json.loads((e2e_run / "eval.json").read_text())
    results = json.loads((e2e_run / "results.json").read_text())
    assert rep["accuracy"] == pytest.approx(results["test_accuracy"])  # the same selected checkpoint
    assert (e2e_run / "confusion.png").stat().st_size > 1000
    assert "accuracy" in text


def test_predict_on_a_generated_mp4(e2e_run, tiny_ave, tmp_path):
    video = sorted((tiny_ave / "AVE").glob("*.mp4"))[0]
    annotations = tiny_ave / "Annotations.txt"
    code, text = invoke("predict", e2e_run / "best.pt", video, "--json", tmp_path / "p.json", "--annotations",
                        annotations)  # fmt: skip
    assert code == 0, text
    pred = json.loads((tmp_path / "p.json").read_text())
    assert len(pred["segments"]) == 10
    line = next(ln for ln in annotations.read_text().splitlines() if f"&{video.stem}&" in ln)
    category, _, _, start, end = line.split("&")
    assert pred["annotated"] == [category if int(start) <= t < int(end) else "background" for t in range(10)]
    assert pred["modalities"] == {} and pred["prototypes"] == "none"  # a naive model, no --data
    assert all(0 < s["confidence"] <= 1 for s in pred["segments"])
    ranges, timeline = text.strip().splitlines()[:-1], text.strip().splitlines()[-1]
    for line in ranges:
        assert re.fullmatch(r"\d\d:\d\d–\d\d:\d\d .+ \d\.\d\d", line), line
    covered = sum(r["end"] - r["start"] for r in pred["ranges"])
    events = sum(s["label"] != "background" for s in pred["segments"])
    assert covered == events
    assert timeline == f"timeline: {tmp_path / 'p.png'}"  # on stderr, beside the JSON
    assert_picture(tmp_path / "p.png", (1200, 350))


def test_predict_a_folder_writes_a_timeline_per_video_and_one_table(e2e_run, tiny_ave, tiny_h5, tmp_path):
    import shutil

    from avel.tools.timeline import timeline_figure

    folder = tmp_path / "videos"
    folder.mkdir()
    videos = sorted((tiny_ave / "AVE").glob("*.mp4"))[:3]
    for v in videos:
        shutil.copy(v, folder / v.name)
    (folder / "broken.mp4").write_text("not a video")
    out = tmp_path / "pred"
    code, text = invoke("predict", e2e_run / "best.pt", folder, "--out", out, "--annotations", tiny_h5,
                        "--no-progress")  # fmt: skip
    assert code == 1, text  # one video could not be read: reported, the others written
    assert "broken.mp4" in text
    assert f"wrote 3 timelines and predictions.csv / predictions.json to {out}" in text
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{v.stem}.png" for v in videos)
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 30 and {"audio_label", "visual_label", "annotated"} <= set(rows[0])
    with h5py.File(tiny_h5, "r") as f:  # the annotated column is the file's segment labels, by video id
        classes = json.loads(f.attrs["classes"])
        truth = {v.decode(): seg for v, seg in zip(f["video_id"][()], f["segment_labels"][()], strict=True)}
    for v in videos:
        got = [r["annotated"] for r in rows if r["video"] == v.name]
        assert got == [classes[k] for k in truth[v.stem]]
    assert all(r["audio_label"] != "background" and r["visual_label"] != "background" for r in rows)
    results = json.loads((out / "predictions.json").read_text())
    assert [Path(r["video"]).name for r in results] == [v.name for v in videos]
    for res in results:
        assert_picture(out / f"{Path(res['video']).stem}.png", (1200, 450))
        probs = res["modalities"]["audio"]["probabilities"]  # each second's prototype softmax (Eq. 7)
        assert all(sum(p) == pytest.approx(1, abs=1e-3) for p in probs)
    texts = figure_texts(timeline_figure(results[0]))
    assert {"annotated", "fused model", "audio alone", "visual alone", "time (s)"} <= set(texts)


def test_predict_unreadable_file_is_a_clear_error(e2e_run, tmp_path):
    bad = tmp_path / "notavideo.mp4"
    bad.write_text("hello")
    code, text = invoke("predict", e2e_run / "best.pt", bad)
    assert code == 2 and "notavideo.mp4" in text


def test_extract_then_train_on_features(e2e_run, tiny_h5, tmp_path):
    feats = tmp_path / "feats.h5"
    code, text = invoke("extract", e2e_run / "best.pt", tiny_h5, feats, "--device", "cpu")
    assert code == 0, text
    with h5py.File(feats, "r") as f, h5py.File(tiny_h5, "r") as src:
        assert f.attrs["kind"] == "avel-features"
        assert f["audio"].shape == (len(src["video_id"]), 10, 64)  # width 8 → 64 channels
        assert f["visual"].shape == (len(src["video_id"]), 10, 1, 1, 64)  # 32 px frames → 1×1 grid
        assert (f["segment_labels"][()] == src["segment_labels"][()]).all()
    code, text = invoke("train", feats, "--model", "avel", "--fusion", "dmrn", "--epochs", "1",
                        "--out", tmp_path / "f", *TINY)  # fmt: skip
    assert code == 0, text


def test_plot(e2e_run, tmp_path):
    from avel.tools.plot import fig4_figure

    code, text = invoke("plot", e2e_run, "--out", tmp_path / "p.png")
    assert code == 0, text
    assert_picture(tmp_path / "p.png", (1200, 400))
    texts = figure_texts(fig4_figure([e2e_run]))
    assert {"audio branch", "visual branch", "naive · concat", "ρ = score(audio) / score(visual)"} <= set(
        texts
    )
    code, text = invoke("plot", e2e_run, "--all", "--out", tmp_path / "all.png")
    assert code == 0 and "loss" in text, text
    assert_picture(tmp_path / "all.png", (1200, 400))


def test_synth_and_info(tmp_path):
    code, text = invoke("synth", tmp_path / "s", "--videos", "3", "--classes", "2", "--frame-size", "32")
    assert code == 0, text
    assert json.loads(text)["videos"] == 3
    code, text = invoke("info", tmp_path / "missing.h5")
    assert code != 0


def test_two_balancers_are_refused(tiny_h5):
    code, text = invoke("train", tiny_h5, "--pmr", "--balance", "ogm-ge")
    assert code == 2
    assert "--pmr and --balance ogm-ge cannot be combined" in text


def test_extract_pairs_two_unimodal_models(tiny_h5, tmp_path):
    runs = {}
    for modality in ("audio", "visual"):
        runs[modality] = tmp_path / modality
        code, text = invoke("train", tiny_h5, "--model", "avel", "--modality", modality, "--epochs", "1",
                            "--out", runs[modality], *TINY)  # fmt: skip
        assert code == 0, text
    code, text = invoke("extract", runs["visual"] / "best.pt", tiny_h5, tmp_path / "x.h5")
    assert code == 2 and "a visual-only model has no audio encoder" in text
    feats = tmp_path / "pair.h5"
    code, text = invoke("extract", runs["audio"] / "best.pt", tiny_h5, feats,
                        "--visual-from", runs["visual"] / "best.pt")  # fmt: skip
    assert code == 0, text
    with h5py.File(feats, "r") as f:
        assert f["audio"].shape[-1] == 64 and f["visual"].shape[2:] == (1, 1, 64)
        assert f["audio"][()].std() > 0 and f["visual"][()].std() > 0
        assert "--visual-from" in f.attrs["source"]
