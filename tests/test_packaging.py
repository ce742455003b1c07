"""``pip install`` puts one top-level package into site-packages, ``avel`` (#26: no ``preprocessing`` or
other folder of the repository beside it), and every folder of avel's modules ships: setuptools' own
package discovery, configured as pyproject.toml configures it, run over this checkout."""

from __future__ import annotations

import tomllib
from pathlib import Path

import setuptools

ROOT = Path(__file__).resolve().parents[1]


def discovered(find: dict) -> list[str]:
    """The packages ``[tool.setuptools.packages.find]`` finds (its defaults: namespaces on, where ".")."""
    finder = setuptools.find_namespace_packages if find.get("namespaces", True) else setuptools.find_packages
    where = ROOT / find.get("where", ["."])[0]
    return finder(where=str(where), include=find.get("include", ["*"]), exclude=find.get("exclude", ()))


def pyproject_find() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]


def test_avel_is_the_only_top_level_package():
    packages = discovered(pyproject_find())
    assert {p.split(".")[0] for p in packages} == {"avel"}, sorted(packages)
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "avel").rglob("*.py")}
    assert "avel.preprocessing" in folders and folders <= set(packages), sorted(folders - set(packages))


def test_without_the_include_the_repository_folders_would_be_installed():
    # the check above can fail: discovery without pyproject's include finds tests, scripts, ... at the top
    find = {k: v for k, v in pyproject_find().items() if k != "include"}
    assert {"avel", "tests", "scripts"} <= {p.split(".")[0] for p in discovered(find)}
