"""`avel demo`: the default set, both encoders, AVEL concat on their features without and with PMR, one
table beside the floor."""

from __future__ import annotations

import json

import pytest

from avel.tools.demo import run_demo

# The full suite only: processes, grids, kills and CLI round trips (the fast tier: -m 'not slow').
pytestmark = pytest.mark.slow


def test_demo_trains_both_runs_and_prints_each_modality_beside_the_floor(tmp_path, capsys):
    res = run_demo(tmp_path, videos=12, classes=3, epochs=1, encoder_epochs={"audio": 1, "visual": 1})
    assert set(res) == {"none", "pmr"}
    out = capsys.readouterr().out
    table = out[out.index("[6/6]") :].splitlines()[1:]
    assert table[0].split() == ["fused", "audio", "visual", "always-background"]
    floor = 100 * res["none"]["test_always_background"]
    for line, balance in zip(table[1:3], ("none", "pmr"), strict=True):
        r = res[balance]
        assert line.endswith(f"{floor:.1f}%")
        cells = [float(c.rstrip("%")) for c in line.split()[-4:-1]]
        assert cells == [round(100 * r[k], 1) for k in ("test_accuracy", "test_audio_accuracy",
                                                          "test_visual_accuracy")]  # fmt: skip
    config = json.loads((tmp_path / "run-avel-concat-pmr-s0" / "config.json").read_text())
    assert config["balance"] == "pmr" and config["pmr_window"] == [0, 1]
    assert config["data"] == str(tmp_path / "ave-synth-s0-pair.h5")  # features of the seed-0 encoders
    encoder = json.loads((tmp_path / "ave-synth-s0-audio" / "config.json").read_text())
    assert encoder["modality"] == "audio" and encoder["audio_pool"] == "freq_bn" and encoder["epochs"] == 1
    metrics = (tmp_path / "run-avel-concat-pmr-s0" / "metrics.jsonl").read_text().splitlines()
    assert "rho" in json.loads(metrics[-1])  # PMR's ρ, logged per epoch
