"""Config loading: defaults < TOML file < command line; unknown keys are errors."""

from pathlib import Path

import pytest

from avel.engine.config import TrainConfig, balancer_options, load_config


def test_precedence_defaults_file_cli(tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('model = "avel"\nfusion = "dmrn"\nlr = 0.01\nepochs = 7\n[pmr]\nalpha = 1\n')
    cfg = load_config(cfg_file, {"lr": "0.5", "epochs": None})
    assert cfg.fusion == "dmrn"  # from the file
    assert cfg.lr == 0.5  # the command line wins
    assert cfg.epochs == 7  # None on the command line means "not given"
    assert cfg.pmr_alpha == 1.0 and isinstance(cfg.pmr_alpha, float)  # [pmr] alpha -> pmr_alpha
    assert cfg.batch_size == TrainConfig().batch_size  # untouched default


def test_unknown_key_in_file_is_an_error_naming_it(tmp_path):
    cfg_file = tmp_path / "bad.toml"
    cfg_file.write_text("learning_rate = 0.1\n")
    with pytest.raises(ValueError, match=r"bad.toml: unknown config key\(s\) \['learning_rate'\]"):
        load_config(cfg_file)


def test_cli_strings_are_coerced_to_field_types():
    cfg = load_config(None, {"pmr_window": "0,30", "amp": "true", "milestones": "10,20", "pmr-subset": "val"})
    assert cfg.pmr_window == [0, 30]
    assert cfg.amp is True
    assert cfg.milestones == [10, 20]
    assert cfg.pmr_subset == "val"


def test_balancer_options_strip_their_prefix():
    cfg = load_config(None, {"balance": "pmr", "pmr_alpha": 1.0, "pmr_subset": "0.5"})
    opts = balancer_options(cfg)
    assert opts["alpha"] == 1.0 and opts["subset"] == 0.5 and opts["window"] == (0, 70)
    assert "q_base" not in opts
    assert balancer_options(load_config(None, {"balance": "none"})) == {}


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="config file not found: nope.toml"):
        load_config("nope.toml")


CONFIGS = sorted(Path(__file__).parents[1].glob("avel/configs/*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)  # an unknown or mistyped key raises, naming the file
    assert cfg.model in ("avel", "resnet18", "cgmnist") and cfg.epochs >= 1
