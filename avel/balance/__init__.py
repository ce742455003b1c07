"""Modality rebalancing methods behind one interface (``avel.balance.base.Balancer``).

``BALANCERS`` maps each name to its class; ``build_balancer(name, **options)`` checks the name and the
options (every class takes keyword options with its paper's defaults). Each class has ``applies_to(model)``:
None when it can train that model, else the reason it cannot.
"""

from __future__ import annotations

import inspect
from typing import Any

from avel.balance.agm import AGM
from avel.balance.amco import AMCo, AMCoModel
from avel.balance.base import Balancer, NoBalance, StepResult
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

BALANCERS: dict[str, type] = {
    "none": NoBalance,
    "pmr": PMR,
    "ogm-ge": OGMGE,
    "ogm": OGM,
    "opm": OPM,
    "iprm": IPRM,
    "dropout": ModalityDropout,
    "gblend": GradientBlending,
    "mmcosine": MMCosine,
    "umt": UMT,
    "ume": UME,
    "mbsd": MBSD,
    "cml": CML,
    "mmpareto": MMPareto,
    "lfm": LFM,
    "agm": AGM,
    "amco": AMCo,
    "mla": MLA,
    "greedy": Greedy,
    "relearning": ReLearning,
    "valuation": Valuation,
    "reconboost": ReconBoost,
}


def balancer_option_names(name: str) -> list[str]:
    """The keyword options the balancer ``name`` accepts."""
    params = inspect.signature(BALANCERS[name].__init__).parameters.values()
    return sorted(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def build_balancer(name: str, **options: Any) -> Balancer:
    """A balancer by name; unknown names and options raise ValueError listing the valid ones."""
    if name not in BALANCERS:
        raise ValueError(f"unknown balancer {name!r}; valid: {list(BALANCERS)}")
    valid = balancer_option_names(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"balancer {name!r} does not take option(s) {unknown}; valid options: {valid}")
    return BALANCERS[name](**options)


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
    "OGM",
    "MMCosine",
    "MMPareto",
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
]
