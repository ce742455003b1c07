"""Every figure avel draws, opened as a PNG: its size, that it is not blank, and that what it names (the
modalities, the classes, the runs) follows the data; drawn from real runs and videos where it takes a
model (the CLI tests' tiny AVEL run, the CG-MNIST demo's runs), from hand-made results files for tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from avel.cli import app
from avel.experiments import ablate
from avel.experiments.ablate import Cell, tabulate


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def png_pixels(path: Path) -> np.ndarray:
    """The PNG as an (H, W, channels) float array in [0, 1]."""
    import matplotlib.image

    return matplotlib.image.imread(path)


def assert_picture(path: Path, min_size: tuple[int, int]) -> np.ndarray:
    """A PNG at least ``min_size`` (width, height) pixels, with drawn content (pixel variance), not blank."""
    img = png_pixels(path)
    h, w = img.shape[:2]
    assert w >= min_size[0] and h >= min_size[1], (w, h)
    gray = img[..., :3].mean(-1)
    assert gray.std() > 0.05, f"{path} looks blank (pixel std {gray.std():.4f})"
    assert (gray < 0.5).mean() > 0.005, f"{path} has almost no dark (drawn) pixels"
    return img


def figure_texts(fig) -> list[str]:
    """Every text of a figure: titles, axis labels, tick labels, legends, annotations."""
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


# ----------------------------------------------------------------------------------------------- ablate


def _grid(tmp_path: Path) -> Path:
    cells = [
        Cell("SGD", "baseline", {"optimizer": "sgd", "balance": "none"}),
        Cell("SGD", "PMR", {"optimizer": "sgd", "balance": "pmr"}),
        Cell("Adam", "baseline", {"optimizer": "adam", "balance": "none"}),
        Cell("Adam", "PMR", {"optimizer": "adam", "balance": "pmr"}, na_reason="not run here"),
    ]
    out = tmp_path / "grid"
    out.mkdir()
    record = ablate._grid_record("optimizers", out, None, 3, "resnet18", {"epochs": 1}, cells)
    (out / "grid.json").write_text(json.dumps(record))
    accs = {"sgd__baseline": [0.60, 0.62, 0.67], "sgd__pmr": [0.70, 0.71]}
    accs["adam__baseline"] = [0.55, 0.56, 0.57]
    for cell, values in accs.items():
        for seed, acc in enumerate(values):
            run = out / cell / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "results.json").write_text(json.dumps({"test_accuracy": acc, "val_accuracy": acc}))
    return out


def test_table_figure_bars_are_the_means_with_seeds_and_paper_markers(tmp_path):
    from avel.tools.grid_figure import table_figure

    fig = table_figure(tabulate(_grid(tmp_path)))
    ax = fig.axes[0]
    bars = sorted((round(p.get_x() + p.get_width() / 2, 3), p.get_y() + p.get_height()) for p in ax.patches)
    assert [h for _, h in bars] == pytest.approx([63.0, 70.5, 56.0])  # SGD base, SGD PMR, Adam base (%)
    from matplotlib.collections import PathCollection

    points = np.concatenate([c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)])[:, 1]
    seeds = [60, 62, 67, 70, 71, 55, 56, 57]
    paper = [65.4, 67.1, 64.4]  # PMR Table 6 (AVE); an n/a cell draws nothing
    assert sorted(points.tolist()) == pytest.approx(sorted(seeds + paper))
    texts = figure_texts(fig)
    assert "test accuracy (%)" in texts and "n/a" in texts and "paper (Fan et al., 2023)" in texts
    assert {"SGD", "Adam", "baseline", "PMR", "each seed (of 3)"} <= set(texts)


def test_ablate_table_plot_cli_writes_the_png(tmp_path):
    out = _grid(tmp_path)
    code, text = invoke("ablate", "table", out, "--plot")
    assert code == 0, text
    assert "| SGD |" in text and f"wrote {out / 'table.png'}" in text
    assert_picture(out / "table.png", (700, 450))


# ----------------------------------------------------------------------------------------------- Fig. 4


def test_cgmnist_demo_draws_fig4_naming_gray_and_colored(tmp_path, capsys):
    from avel.tools.demo import run_cgmnist_demo
    from avel.tools.plot import fig4_figure, plot_runs

    res = run_cgmnist_demo(tmp_path, epochs=2, train=20, test=10)
    assert set(res) == {"none", "pmr"}
    out = capsys.readouterr().out
    assert "naive concat" in out and "concat + PMR" in out and "gray" in out and "colored" in out
    assert out.splitlines()[-1].startswith("At the paper's scale (60,000 digits")  # the large table, one line
    runs = [tmp_path / "concat-none-s0", tmp_path / "concat-pmr-s0"]
    assert "rho" in json.loads((runs[1] / "metrics.jsonl").read_text().splitlines()[0])  # PMR's own ρ
    png = tmp_path / "pmr-fig4-cgmnist.png"
    assert_picture(png, (1200, 400))
    from avel.engine.config import load_config
    from avel.engine.train import run_training

    gray_only = tmp_path / "gray-only"  # the paper's uni-modal trained model, beside the branches
    data = next(tmp_path.glob("cgmnist-*.h5"))
    overrides = {"data": str(data), "modality": "gray", "epochs": 2, "out": str(gray_only), "device": "cpu"}
    run_training(load_config("cgmnist", {**overrides, "progress": False}), log=lambda s: None)
    fig = fig4_figure([*runs, gray_only])
    texts = figure_texts(fig)
    assert len(fig.axes) == 3
    assert {"gray branch", "colored branch", "naive · concat", "PMR · concat", "gray-only model"} <= set(
        texts
    )
    gray_line = next(ln for ln in fig.axes[1].get_lines() if ln.get_label() == "gray-only model")
    rows = [json.loads(x) for x in (gray_only / "metrics.jsonl").read_text().splitlines()]
    assert list(gray_line.get_ydata()) == pytest.approx([100 * r["val_accuracy"] for r in rows])
    assert len(fig.axes[0].get_lines()) == 2  # the uni-modal run is not a fused model
    assert "ρ = score(gray) / score(colored)" in texts and "audio" not in " ".join(texts)
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)
    assert [ax.get_ylabel() for ax in fig.axes[:2]] == ["val accuracy (%)"] * 2
    # the naive run has a ρ too: measured on val with train prototypes (Eq. 8), like the PMR run's
    rho_lines = [ln for ln in fig.axes[2].get_lines() if not ln.get_label().startswith("_")]
    assert len(rho_lines) == 2
    rows = [json.loads(x) for x in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_rho"] for r in rows] == pytest.approx(list(rho_lines[0].get_ydata()))
    keys = plot_runs(runs, tmp_path / "all.png", every_key=True)
    assert {"val_rho", "rho", "pce_audio"} <= set(keys)
    assert_picture(tmp_path / "all.png", (1200, 1200))


# ----------------------------------------------------------------------------------------------- predict


def test_find_videos_from_files_folders_and_list_files(tmp_path):
    from avel.tools.predict import find_videos

    ave = tmp_path / "set" / "AVE"
    ave.mkdir(parents=True)
    for name in ("b.mp4", "a.mkv", "notes.txt"):
        (ave / name).write_text("x")
    lst = tmp_path / "list.txt"
    lst.write_text("# two videos\nset/AVE/b.mp4\n\nother.mp4\n")
    found = find_videos([tmp_path / "set", lst, tmp_path / "c.mp4"])
    assert found == [
        ave / "a.mkv",
        ave / "b.mp4",
        tmp_path / "set/AVE/b.mp4",
        tmp_path / "other.mp4",
        tmp_path / "c.mp4",
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no video files"):
        find_videos([tmp_path / "empty"])


def test_predict_refuses_one_video_options_for_several(tmp_path):
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_text("x")
    code, text = invoke("predict", tmp_path / "none.pt", tmp_path, "--json", tmp_path / "p.json")
    assert code == 2
    assert "error: --json and --plot name one video's files; for several videos use --out DIR" in text
    assert not (tmp_path / "p.json").exists()
