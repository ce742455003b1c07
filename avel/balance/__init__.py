"""Modality rebalancing methods behind one interface (``avel.balance.base.Balancer``).

``BALANCERS`` maps each name to its class (a plain dict; its order is the order of ``avel ablate
balancers``' rows). ``build_balancer(name, **options)`` checks the name and the options. Each class has
``applies_to(model)``: None when it can train that model, else the reason it cannot.

Adding a method: one file in this folder with its class (``BalancerHooks`` subclass: ``name``, ``method``,
``Options`` (a frozen dataclass of ``option(default, help, rule)`` fields), ``__init__(self, options=None,
*, seed=0, **values)`` calling ``super().__init__``, and the hooks where it acts), then
``register(TheClass)`` (here, or from any module before the config is read). Its options are then the
config keys ``[table] name`` / ``table_name`` (``table`` defaults to ``name``), checked by their rules,
listed by ``avel train --help``'s ``--set`` and saved in every run's config; its ``grid_rows`` are its rows
of the balancers grid.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from avel.balance.agm import AGM
from avel.balance.amco import AMCo, AMCoModel
from avel.balance.base import Balancer, BalancerHooks, NoBalance, StepResult
from avel.balance.cml import CML
from avel.balance.dropout import ModalityDropout
from avel.balance.gblend import GBlendModel, GradientBlending
from avel.balance.greedy import Greedy, GreedyModel
from avel.balance.iprm import IPRM, IPRMModel
from avel.balance.lfm import LFM
from avel.balance.mbsd import MBSD
from avel.balance.mla import MLA, MLAModel
from avel.balance.mmcosine import MMCosine
from avel.balance.mmpareto import MMPareto
from avel.balance.ogm import OGM, OGMGE
from avel.balance.opm import OPM
from avel.balance.pmr import PMR
from avel.balance.reconboost import ReconBoost, ReconBoostModel
from avel.balance.relearning import ReLearning
from avel.balance.umt import UME, UMT
from avel.balance.valuation import Valuation

BALANCERS: dict[str, type[BalancerHooks]] = {}


def table_of(cls: type[BalancerHooks]) -> str:
    """The TOML table (and flat-key prefix) of a balancer's options: ``[pmr]`` / ``pmr_``."""
    return (cls.table or cls.name).replace("-", "_")


def option_tables() -> dict[str, type]:
    """Each options table of the registered balancers and its options type (OGM-GE and OGM share one)."""
    return {table_of(cls): cls.Options for cls in BALANCERS.values() if dataclasses.fields(cls.Options)}


def register(cls: type[BalancerHooks]) -> type[BalancerHooks]:
    """Add a balancer class to ``BALANCERS``; a name taken, or a table holding other options, is refused."""
    if cls.name in BALANCERS and BALANCERS[cls.name] is not cls:
        raise ValueError(f"balancer name {cls.name!r} is taken by {BALANCERS[cls.name].__name__}")
    table = table_of(cls)
    other = option_tables().get(table)
    if other is not None and other is not cls.Options and dataclasses.fields(cls.Options):
        raise ValueError(f"balancer {cls.name!r}: table [{table}] holds {other.__name__} already")
    BALANCERS[cls.name] = cls
    return cls


# the order of the balancers grid's rows: PMR's Table 2, BalanceBenchmark's objective-level methods (their
# rows: avel.experiments.ablate), then its other methods
for _cls in (NoBalance, ModalityDropout, GradientBlending, OGMGE, OGM, OPM, IPRM, PMR):
    register(_cls)
for _cls in (MMCosine, UMT, UME, MBSD, CML, MMPareto, LFM):
    register(_cls)
for _cls in (AGM, AMCo, MLA, Greedy, ReLearning, Valuation, ReconBoost):
    register(_cls)


def balancer_option_names(name: str) -> list[str]:
    """The options the balancer ``name`` takes."""
    return sorted(f.name for f in dataclasses.fields(BALANCERS[name].Options))


def build_balancer(name: str, options: Any = None, **values: Any) -> Balancer:
    """A balancer by name, from its ``Options`` (or none: the defaults) and/or keyword values (and
    ``seed``); unknown names and options raise ValueError listing the valid ones."""
    if name not in BALANCERS:
        raise ValueError(f"unknown balancer {name!r}; valid: {list(BALANCERS)}")
    return BALANCERS[name](options, **values)


def describe_balancers() -> str:
    """Each balancer (``--balance NAME``), what it is, and its options: ``[table] option = default``, the
    flat key, the help and the allowed values (``avel balancers``)."""
    lines = []
    for name, cls in BALANCERS.items():
        doc = (cls.__doc__ or "").strip().splitlines()
        lines.append(f"{name} ({cls.method or name}): {doc[0] if doc else ''}")
        table = table_of(cls)
        for f in dataclasses.fields(cls.Options):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rule = f.metadata.get("rule")
            about = f.metadata["help"] + (f"; {rule[1]}" if rule else "")
            lines.append(f"  [{table}] {f.name} = {json.dumps(default)}  ({table}_{f.name}): {about}")
    return "\n".join(lines)


__all__ = [
    "AGM",
    "BALANCERS",
    "CML",
    "MLA",
    "AMCo",
    "AMCoModel",
    "Greedy",
    "GreedyModel",
    "MLAModel",
    "IPRM",
    "LFM",
    "MBSD",
    "MMCosine",
    "MMPareto",
    "OGM",
    "OGMGE",
    "OPM",
    "PMR",
    "ReLearning",
    "ReconBoost",
    "ReconBoostModel",
    "Valuation",
    "Balancer",
    "GBlendModel",
    "GradientBlending",
    "IPRMModel",
    "ModalityDropout",
    "NoBalance",
    "StepResult",
    "UME",
    "UMT",
    "balancer_option_names",
    "build_balancer",
    "describe_balancers",
    "option_tables",
    "register",
    "table_of",
]
