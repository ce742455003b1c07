"""CG-MNIST: the idx reader on written idx files, colouring against hand computations, the HDF5 file and
its splits, the embedded set, the 4-conv encoder, and real training steps with every fusion."""

from __future__ import annotations

import gzip
import json
import struct

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from avel.cli import app
from avel.engine.config import load_config
from avel.engine.train import run_training
from avel.families import build_model, load_splits
from avel.models.encoders import CGConvNet
from avel.synth.cgmnist import MEAN_COLORS, CGMNISTConfig, colorize, make_cgmnist, read_idx, write_cgmnist

runner = CliRunner()


def write_idx(path, array: np.ndarray, compress: bool = False) -> None:
    """An idx file as LeCun specifies it: 0, 0, type 0x08, ndim, big-endian dims, then the bytes."""
    raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    """Tiny MNIST-format folder: 40 train and 20 test 28×28 'digits' (a bar whose position is the class)."""
    folder = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for split, n, gz in (("train", 40, True), ("t10k", 20, False)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 30, (n, 28, 28)).astype(np.uint8)
        for i, y in enumerate(labels):
            images[i, 4:24, 2 + 2 * y : 4 + 2 * y] = 255
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, gz)
    return folder


def test_read_idx_round_trip_raw_and_gzip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", a)
    write_idx(tmp_path / "a.gz", a, compress=True)
    assert np.array_equal(read_idx(tmp_path / "a"), a)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), a)


def test_read_idx_refuses_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "bad")
    a = np.zeros((4, 2), np.uint8)
    write_idx(tmp_path / "short", a)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(ValueError, match=r"\(4, 2\) = 8 bytes, the file holds 5"):
        read_idx(tmp_path / "short")


def test_colorize_multiplies_the_digit_by_the_class_colour():
    gray = np.zeros((2, 28, 28), np.uint8)
    gray[:, 0, 0] = 200
    gray[:, 0, 1] = 100
    out = colorize(gray, np.array([6, 2]), 0.0, np.random.default_rng(0))  # no jitter
    assert out[0, 0, 0].tolist() == [200, 100, 0]  # class 6: (1, 0.5, 0)
    assert out[0, 0, 1].tolist() == [100, 50, 0]
    assert out[1, 0, 0].tolist() == [0, 0, 200]  # class 2: blue
    assert out[:, 1:].max() == 0  # the background stays black


def test_write_cgmnist_splits_and_colour_correlation(tmp_path):
    rng = np.random.default_rng(1)
    n_tr, n_te = 500, 2000
    y_tr, y_te = rng.integers(0, 10, n_tr), rng.integers(0, 10, n_te)
    img_tr = np.full((n_tr, 28, 28), 255, np.uint8)
    img_te = np.full((n_te, 28, 28), 255, np.uint8)
    rows = write_cgmnist(tmp_path / "cg.h5", img_tr, y_tr, img_te, y_te, seed=3, test_color_match=0.5)
    assert rows == {"train": 450, "val": 50, "test": 2000}
    with h5py.File(tmp_path / "cg.h5", "r") as f:
        assert f.attrs["kind"] == "avel-cgmnist"
        assert json.loads(f.attrs["modalities"]) == ["gray", "colored"]
        tr, va, te = (f[f"splits/{k}"][()] for k in ("train", "val", "test"))
        label, cc, colored = f["label"][()], f["color_class"][()], f["colored"][()]
    assert set(tr).isdisjoint(va) and sorted([*tr, *va]) == list(range(n_tr))  # val carved from train
    assert te.tolist() == list(range(n_tr, n_tr + n_te))  # test never touched
    assert (cc[:n_tr] == label[:n_tr]).all()  # train and val: the class's colour
    share = (cc[te] == label[te]).mean()  # 0.5 + 0.5 / 10 expected
    assert 0.5 < share < 0.6
    # the mean colour of a class comes back from its train images (jitter averages out)
    mean_red = colored[:n_tr][label[:n_tr] == 0].reshape(-1, 3).mean(0) / 255
    assert np.allclose(mean_red, np.clip(MEAN_COLORS[0], 0, 1), atol=0.12)


def test_cli_cgmnist_from_idx_folder_and_info(mnist_dir, tmp_path):
    out = tmp_path / "cg.h5"
    res = runner.invoke(app, ["cgmnist", str(out), "--mnist", str(mnist_dir), "--test-color-match", "1"])
    assert res.exit_code == 0, res.output
    assert "train 36, val 4, test 20" in res.output
    info = runner.invoke(app, ["info", str(out)])
    assert info.exit_code == 0, info.output
    assert "kind: avel-cgmnist" in info.output and "modalities: gray, colored" in info.output
    assert "test   20; colour = class 100.0%" in info.output
    assert info.output.index("train") < info.output.index("val ") < info.output.index("test ")
    with h5py.File(out, "r") as f:
        assert f["gray"].shape == (60, 28, 28)
        assert f["colored"].shape == (60, 28, 28, 3)


def test_cli_cgmnist_missing_idx_file_is_one_line(tmp_path):
    res = runner.invoke(app, ["cgmnist", str(tmp_path / "x.h5"), "--mnist", str(tmp_path)])
    assert res.exit_code == 2
    assert "error:" in res.output and "train-images-idx3-ubyte" in res.output
    assert not (tmp_path / "x.h5").exists()


def test_embedded_set_is_deterministic(tmp_path):
    cfg = CGMNISTConfig(train=20, test=10, seed=5)
    make_cgmnist(tmp_path / "a.h5", cfg)
    make_cgmnist(tmp_path / "b.h5", cfg)
    with h5py.File(tmp_path / "a.h5", "r") as a, h5py.File(tmp_path / "b.h5", "r") as b:
        for key in ("gray", "colored", "label", "color_class"):
            assert np.array_equal(a[key][()], b[key][()])
        assert a["gray"][()].max() == 255  # strokes at full intensity, as in MNIST
        assert np.bincount(a["label"][()], minlength=10).tolist() == [3] * 10  # 20 train + 10 test


def test_encoder_shapes():
    net = CGConvNet(3)
    x = torch.randn(2, 3, 28, 28)
    assert net.features(x).shape == (2, 64, 7, 7)
    assert net(x).shape == (2, 512)


@pytest.mark.parametrize("fusion", ["concat", "sum", "film", "gated"])
def test_every_fusion_on_cgmnist(fusion):
    model = build_model("cgmnist", fusion, input_mode="e2e", num_classes=10)
    out = model(torch.randn(3, 1, 28, 28), torch.randn(3, 3, 28, 28))
    assert out.logits.shape == (3, 10) and out.z_audio.shape == out.z_visual.shape == (3, 512)
    assert (out.logits_audio is not None) == (fusion in ("concat", "sum"))


@pytest.fixture(scope="module")
def cg_h5(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cg") / "cg.h5"
    make_cgmnist(out, CGMNISTConfig(seed=0, test_color_match=0.0), mnist_dir=mnist_dir)
    return out


def test_loader_puts_gray_first_and_normalises(cg_h5):
    data = load_splits(cg_h5, family="cgmnist")
    assert data.meta["modalities"] == ["gray", "colored"] and data.meta["num_classes"] == 10
    b = data.test.batch(torch.arange(4))
    assert b.audio.shape == (4, 1, 28, 28) and b.visual.shape == (4, 3, 28, 28)
    with h5py.File(cg_h5, "r") as f:
        raw = f["gray"][int(data.test.rows[0])].astype(np.float32)
    assert torch.allclose(b.audio[0, 0], torch.from_numpy((raw / 255 - 0.1307) / 0.3081), atol=1e-5)
    with pytest.raises(ValueError, match="--model cgmnist"):
        load_splits(cg_h5, family="resnet18")


@pytest.mark.parametrize("balance", ["pmr", "ogm-ge", "ume", "mbsd", "cml"])
def test_training_steps_with_a_balancer(cg_h5, tmp_path, balance):
    cfg = load_config(
        None,
        {
            "data": str(cg_h5),
            "model": "cgmnist",
            "fusion": "concat",
            "balance": balance,
            "epochs": 2,
            "batch_size": 8,
            "device": "cpu",
            "progress": False,
            "out": str(tmp_path / "run"),
        },
    )
    lines: list[str] = []
    res = run_training(cfg, log=lines.append)
    assert res["modalities"] == ["gray", "colored"]
    assert any("gray" in ln and "colored" in ln for ln in lines)  # the epoch line names the modalities
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) for r in rows)
    if balance == "pmr":
        assert {"rho", "beta", "gamma", "pce_audio"} <= rows[0].keys()


def test_uni_modal_gray_by_name(cg_h5, tmp_path):
    cfg = load_config(
        None,
        {
            "data": str(cg_h5),
            "model": "cgmnist",
            "modality": "gray",
            "epochs": 1,
            "batch_size": 8,
            "device": "cpu",
            "progress": False,
            "out": str(tmp_path / "gray"),
        },
    )
    run_training(cfg, log=lambda s: None)
    from avel.engine.checkpoint import model_from_checkpoint

    model, _ = model_from_checkpoint(tmp_path / "gray" / "best.pt")
    assert model.modality == "audio" and isinstance(model.visual_branch, torch.nn.Identity)


@pytest.mark.slow  # evaluate trains BalanceMM's linear probes (seconds)
def test_evaluate_names_gray_and_colored_and_gives_the_runs_figures(cg_h5, tmp_path):
    run = tmp_path / "r"  # trained (and evaluated) under bf16 autocast where the CPU has native bf16
    overrides = {"data": str(cg_h5), "model": "cgmnist", "epochs": 1, "batch_size": 16, "device": "cpu",
                 "progress": False, "measures": False, "amp": True, "out": str(run)}  # fmt: skip
    results = run_training(load_config(None, overrides), log=lambda s: None)
    args = ["evaluate", str(run / "best.pt"), str(cg_h5), "--split", "test", "--out", str(tmp_path / "e")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name in ("gray", "colored"):
        assert any(ln.startswith(f"{name} alone (prototypes)") for ln in lines)
        assert any(ln.startswith(f"{name} alone macro-F1") for ln in lines)
    assert not any(ln.startswith(("audio alone", "visual alone")) for ln in lines)
    rep = json.loads((tmp_path / "e" / "eval.json").read_text())  # the run's own test figures, exactly
    assert (rep["accuracy"], rep["macro_f1"], rep["map"]) == (
        results["test_accuracy"],
        results["test_macro_f1"],
        results["test_map"],
    )
    assert (rep["audio_accuracy"], rep["visual_accuracy"]) == (
        results["test_audio_accuracy"],
        results["test_visual_accuracy"],
    )


def test_ablate_grids_for_cgmnist_name_gray_and_colored():
    from avel.experiments.ablate import build_grid
    from avel.experiments.published import AVE

    cells = build_grid("fusions", model="cgmnist")
    rows = {c.row for c in cells}
    assert {"concat", "sum", "FiLM", "gated", "gray only", "colored only"} == rows
    gray = next(c for c in cells if c.row == "gray only" and c.column == "baseline")
    assert gray.overrides["modality"] == "gray" and gray.na_reason is None
    assert AVE[("fusions", "cgmnist")][("concat", "PMR")] == 77.2
    balancer_rows = {c.row for c in build_grid("balancers", model="cgmnist")}
    assert "OPM" not in balancer_rows and {"naive", "OGM-GE", "PMR w/o PER", "PMR"} <= balancer_rows


def colour_classes_from_pixels(gray: np.ndarray, colored: np.ndarray) -> np.ndarray:
    """Each image's colour read back from its pixels (colored / gray over the stroke), as the class of the
    nearest mean colour."""
    stroke = gray >= 128
    g = np.where(stroke, gray, 0).sum((1, 2)).astype(np.float64)  # (N,)
    c = np.where(stroke[..., None], colored, 0).sum((1, 2)).astype(np.float64)  # (N, 3)
    colour = c / g[:, None]
    return np.linalg.norm(colour[:, None, :] - MEAN_COLORS[None], axis=-1).argmin(1)


@pytest.mark.parametrize("match", [0.0, 0.2])
def test_test_colours_agree_with_the_label_at_the_chosen_rate_and_train_colours_follow_it(tmp_path, match):
    out = tmp_path / "cg.h5"
    make_cgmnist(out, CGMNISTConfig(train=400, test=2000, test_color_match=match, seed=1))
    with h5py.File(out, "r") as f:
        gray, colored, label = f["gray"][()], f["colored"][()], f["label"][()]
        train = np.concatenate([f["splits/train"][()], f["splits/val"][()]])
        test = f["splits/test"][()]
    seen = colour_classes_from_pixels(gray, colored)
    assert (seen[train] == label[train]).mean() > 0.9  # train: the label's colour (jitter var 0.03)
    agree = (seen[test] == label[test]).mean()
    expected = match + (1 - match) / 10  # kept with P = match, else a random class (the label's 1 in 10)
    sigma = np.sqrt(expected * (1 - expected) / len(test))
    assert agree < expected + 4 * sigma + 0.02  # not more than the chosen rate (jitter only lowers it)
    assert agree > expected - 4 * sigma - 0.05


def test_cli_default_is_mnist_size_and_small_is_the_demo_set(tmp_path):
    from avel.synth.cgmnist import SMALL, CGMNISTConfig

    assert (CGMNISTConfig().train, CGMNISTConfig().test, CGMNISTConfig().test_color_match) == (
        60000,
        10000,
        0,
    )
    assert (SMALL.train, SMALL.test, SMALL.test_color_match) == (2000, 1000, 0.6)
    out = tmp_path / "s.h5"
    res = runner.invoke(
        app, ["cgmnist", str(out), "--small", "--train", "30", "--test", "20", "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        assert f.attrs["test_color_match"] == 0.6 and len(f["label"]) == 50


def test_rendered_digits_are_cached_and_a_broken_cache_file_is_rendered_again(tmp_path, monkeypatch):
    from avel.synth import digits

    monkeypatch.setenv("AVEL_CACHE", str(tmp_path))
    labels = np.arange(12) % 10
    counted: list[int] = []
    first = digits.cached_render(labels, 3, 0, counted.append)
    files = list((tmp_path / "digits").glob("*.npy"))
    assert len(files) == 1 and sum(counted) == 12
    assert np.array_equal(np.load(files[0]), first)
    np.save(files[0], np.zeros((12, 28, 28), np.uint8))  # the cache is what is read back
    assert digits.cached_render(labels, 3, 0).max() == 0
    files[0].write_bytes(b"broken")
    assert np.array_equal(digits.cached_render(labels, 3, 0), first)  # rendered again, same images
    assert not np.array_equal(digits.cached_render(labels, 4, 0), first)  # another seed, another key


def test_encoder_computes_as_the_released_order_and_layout():
    """Max-pool before the first ReLU: the released convnet's outputs and gradients (ReLU then max-pool),
    computed here from the same weights."""
    torch.manual_seed(0)
    net = CGConvNet(3).double()
    x = torch.randn(5, 3, 28, 28, dtype=torch.float64)

    def released(x):
        y = torch.relu(net.conv1(net.bn0(x)))
        y = torch.nn.functional.max_pool2d(y, 3, 2, 1)
        y = torch.relu(net.conv4(torch.relu(net.conv3(torch.relu(net.conv2(y))))))
        return net.fc(y.mean((-2, -1)))

    out = net(x)
    grads = torch.autograd.grad(out.square().sum(), list(net.parameters()))
    ref = released(x.contiguous())
    ref_grads = torch.autograd.grad(ref.square().sum(), list(net.parameters()))
    assert torch.allclose(out, ref, atol=1e-10)
    for g, r in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g, r, atol=1e-9)
