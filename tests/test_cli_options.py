"""``avel train``'s options -> a config, without a process: the steps the command is a thin layer over."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from avel.cli import set_values, train, train_overrides
from avel.engine.config import load_config


def _options(**given) -> dict:
    """Every option of ``avel train`` as typer passes it: not given = None (``--pmr``: False)."""
    names = inspect.signature(train).parameters
    return {name: None for name in names} | {"pmr": False} | given


def test_given_options_become_overrides_and_set_has_the_last_word():
    options = _options(data=Path("d.h5"), out=Path("runs/x"), lr=0.5, pmr=True,
                       set_=["lr=0.25", "pmr_alpha=2", "lr=0.125"])  # fmt: skip
    overrides = train_overrides(options)
    assert overrides == {"data": "d.h5", "out": "runs/x", "lr": "0.125", "balance": "pmr", "pmr_alpha": "2"}
    cfg = load_config(None, overrides)
    assert (cfg.lr, cfg.balance, cfg.balancers["pmr"].alpha, cfg.data) == (0.125, "pmr", 2.0, "d.h5")


def test_pmr_with_another_balancer_is_refused():
    with pytest.raises(ValueError, match="^--pmr and --balance ogm-ge cannot be combined: choose one"):
        train_overrides(_options(pmr=True, balance="ogm-ge"))
    assert train_overrides(_options(pmr=True, balance="pmr")) == {"balance": "pmr"}


@pytest.mark.parametrize("item", ["lr", "=1", " =1"])
def test_a_set_item_without_key_and_equals_is_refused(item):
    with pytest.raises(ValueError, match=f"^--set {item}: expected KEY=VALUE, e.g. --set lr=1e-3$"):
        set_values([item])
    assert set_values(["fusion=dmrn", "milestones=10,20", "out="]) == {
        "fusion": "dmrn", "milestones": "10,20", "out": ""
    }  # fmt: skip


def test_commands_handle_no_error_themselves():
    """One error path: no command catches an exception (avel.cli.OneLineErrors maps each to its exit code)."""
    import ast

    import typer

    from avel import cli

    tree = ast.parse(Path(cli.__file__).read_text(encoding="utf-8"))
    functions = {node.name: node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    root = typer.main.get_command(cli.app)
    groups = [root, *(c for c in root.commands.values() if hasattr(c, "commands"))]
    callbacks = [c.callback for g in groups for c in g.commands.values() if c.callback is not None]
    assert len(callbacks) >= 18  # every command and every ablate grid
    catching = sorted(
        f.__name__ for f in callbacks
        if any(isinstance(n, ast.Try) for n in ast.walk(functions[f.__name__]))
    )  # fmt: skip
    assert catching == []
