"""Config loading: defaults < TOML file < command line; unknown keys are errors."""

import tomllib
from pathlib import Path

import pytest

from avel.balance import build_balancer
from avel.engine.config import TrainConfig, balancer_options, load_config, validate


def test_precedence_defaults_file_cli(tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('model = "avel"\nfusion = "dmrn"\nlr = 0.01\nepochs = 7\n[pmr]\nalpha = 1\n')
    cfg = load_config(cfg_file, {"lr": "0.5", "epochs": None})
    assert cfg.fusion == "dmrn"  # from the file
    assert cfg.lr == 0.5  # the command line wins
    assert cfg.epochs == 7  # None on the command line means "not given"
    assert cfg.balancers["pmr"].alpha == 1.0 and isinstance(cfg.balancers["pmr"].alpha, float)  # [pmr] alpha
    assert cfg.batch_size == TrainConfig().batch_size  # untouched default


def test_unknown_key_in_file_is_an_error_naming_it(tmp_path):
    cfg_file = tmp_path / "bad.toml"
    cfg_file.write_text("learning_rate = 0.1\n")
    with pytest.raises(ValueError, match=r"bad.toml: unknown config key\(s\) \['learning_rate'\]"):
        load_config(cfg_file)


def test_cli_strings_are_coerced_to_field_types():
    cfg = load_config(None, {"pmr_window": "0,30", "amp": "true", "milestones": "10,20", "pmr-subset": "val"})
    assert cfg.balancers["pmr"].window == [0, 30]
    assert cfg.amp is True
    assert cfg.milestones == [10, 20]
    assert cfg.balancers["pmr"].subset == "val"


def test_balancer_options_come_from_their_table_or_the_flat_key(tmp_path):
    # the one mapping: option NAME of table T is `[T] NAME` in a file and `T_NAME` as a flat key (the form of
    # the command line, grids and of configs saved before the tables)
    tables, flat = tmp_path / "tables.toml", tmp_path / "flat.toml"
    tables.write_text('balance = "pmr"\n[pmr]\nalpha = 1\nsubset = "0.5"\n[ogm]\nwarmup = 3\n')
    flat.write_text('balance = "pmr"\npmr_alpha = 1.0\npmr_subset = "0.5"\nogm_warmup = 3\n')
    cfg = load_config(tables)
    cli = {"balance": "pmr", "pmr_alpha": 1, "pmr_subset": "0.5", "ogm_warmup": 3}
    assert cfg == load_config(flat) == load_config(None, cli)
    opts = balancer_options(cfg)
    assert opts["options"].alpha == 1.0 and opts["seed"] == cfg.seed
    pmr = build_balancer(cfg.balance, **opts)
    assert (pmr.alpha, pmr.subset, pmr.window) == (1.0, 0.5, (0, 70))
    ogm = load_config(tables, {"balance": "ogm"})
    assert build_balancer("ogm", **balancer_options(ogm)).warmup == 3  # [ogm] is OGM-GE's and OGM's table
    assert balancer_options(load_config(None, {"balance": "none"})) == {"seed": 0}


def test_balancer_option_errors_name_the_key_and_the_rule(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[pmr]\nalpha = 1\ncoef = "code"\n')
    with pytest.raises(
        ValueError, match=r'bad.toml:3: pmr_coef: "code" is not allowed: must be one of paper, step'
    ):
        load_config(bad)
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['pmr_beta'\]"):
        load_config(None, {"pmr_beta": 1})
    with pytest.raises(ValueError, match=r"--ogm-window: expected a list like \[0, 50\]"):
        load_config(None, {"ogm_window": 3})


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="config file not found: nope.toml"):
        load_config("nope.toml")


CONFIGS = sorted(Path(__file__).parents[1].glob("avel/configs/*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)  # an unknown or mistyped key raises, naming the file
    assert cfg.model in ("avel", "resnet18", "cgmnist") and cfg.epochs >= 1


# one seed of each committed grid cell (the other seeds differ in seed and out only), the encoders' runs
GRIDS = Path(__file__).parents[1] / "docs" / "grids"
SAVED = sorted(p for p in GRIDS.rglob("config.toml")
               if p.parent.name == "seed0" or p.parent.parent.name == "encoders")  # fmt: skip


def test_every_saved_run_config_of_the_committed_grids_loads():
    # docs/grids: runs saved before the balancer tables (flat pmr_alpha = ..., w25's AVE-form grids) and after
    forms = {"pmr_alpha" in tomllib.loads(p.read_text()) for p in SAVED}
    assert len(SAVED) > 50 and forms == {True, False}  # both forms among them
    for path in SAVED:
        validate(load_config(path))  # an unknown, mistyped or refused value raises, naming the file
    flat = load_config(GRIDS / "features-ave10-a6g8v40/concat__pmr/seed0/config.toml")
    pmr = flat.balancers["pmr"]
    assert (pmr.alpha, pmr.reg_epochs, pmr.window, pmr.subset) == (2.0, 5, [0, 30], "0.1")  # its flat values


def test_avel_balancers_lists_each_method_and_its_options_from_the_registry():
    from typer.testing import CliRunner

    from avel.balance import BALANCERS
    from avel.cli import app

    result = CliRunner().invoke(app, ["balancers"])
    assert result.exit_code == 0, result.output
    listed = [line.split(" ")[0] for line in result.output.splitlines() if not line.startswith(" ")]
    assert listed == list(BALANCERS)
    assert "  [pmr] alpha = 2.0  (pmr_alpha): α of Eq. 10 (PCE weight); >= 0\n" in result.output
    assert "  [ogm] warmup = -1  (ogm_warmup): " in result.output  # OGM-GE's and OGM's table


@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        ("optimizer", "sgd, adam, adagrad"),
        ("schedule", "none, step, multistep, cosine"),
        ("lr_step_unit", "epoch, iteration"),
        ("init", "default, reference"),
        ("protocol", "clean, released"),
        ("audio_pool", "mean, freq, freq_bn"),
        ("audio_norm", "clip, tiled"),
        ("mmtm_gate", "paper, code"),
        ("mmtm_head", "concat, mean"),
        ("mla_fusion", "sample, batch"),
        ("valuation_level", "sample, modality"),
        ("pmr_coef", "paper, step"),
    ],
)
def test_every_choice_is_refused_in_one_form(key, allowed):
    option = "--" + key.replace("_", "-")
    with pytest.raises(ValueError) as e:
        load_config(None, {key: "nope"})
    assert str(e.value) == f'{option}: "nope" is not allowed: must be one of {allowed}'


def test_no_choice_is_written_by_hand():
    """Choices go through avel.rules.one_of (one list of values, one message), never a lambda of their own."""
    root = Path(__file__).resolve().parents[1] / "avel"
    hand = [str(p.relative_to(root)) for p in root.rglob("*.py") if "lambda v: v in (" in p.read_text()]
    assert hand == []
