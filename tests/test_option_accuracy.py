"""scripts/option_accuracy.py's variant list and its readout of a run's channels_last verdict: a run whose
probe refused channels_last trained NCHW, so its row must say the comparison is vacuous."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "option_accuracy.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("option_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variants_always_start_with_fp32_each_once_in_order(script):
    assert script.parse_variants("bf16+channels_last, bf16,bf16") == ["fp32", "bf16+channels_last", "bf16"]
    assert script.parse_variants("fp32") == ["fp32"]
    assert script.VARIANTS["bf16+channels_last"] == {"amp": True, "cpu_conv_layout": "channels_last"}


def test_an_unknown_variant_is_refused_by_name(script):
    with pytest.raises(argparse.ArgumentTypeError, match=r"unknown variant 'fp16'; known: fp32, bf16, chan"):
        script.parse_variants("bf16,fp16")


def test_a_refused_or_missing_probe_verdict_makes_the_row_vacuous(script):
    refused = {"cpu_conv_layout": {"layout": "nchw", "reason": "the probe died with SIGSEGV at x"}}
    used = {"cpu_conv_layout": {"layout": "channels_last", "reason": "proven: 2 batch shape(s)"}}
    note = script.layout_note("channels_last", refused)
    assert "PROBE REFUSED" in note and "VACUOUS" in note and note.endswith("SIGSEGV at x")
    assert "VACUOUS" in script.layout_note("bf16+channels_last", {})
    assert script.layout_note("channels_last", used).endswith(
        "(proven: 2 batch shape(s); encoder passes: not recorded)"
    )
    used["cpu_conv_layout"]["encoder_passes"] = {"channels_last": 304, "nchw": 32}
    assert script.layout_note("channels_last", used).endswith("encoder passes: 304 channels_last, 32 nchw)")
    assert script.layout_note("bf16", refused) == ""  # bf16 alone asks for no layout
