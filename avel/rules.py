"""Allowed values, written once: a ``Rule`` is (test, the allowed values in words), and every refusal has
one form, ``NAME: "value" is not allowed: must be WORDS`` (``check``). The config's keys
(``avel.engine.config.RULES``), each balancer's options (``avel.balance.base.option``) and the few
constructors callable from Python with a choice (the audio encoder's pool, MMTM's gate, PMR's
coefficients) all take their rule from here, so a choice has one list of values and one message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Rule = tuple[Callable[[Any], bool], str]  # (test, the allowed values in words, for the message)

POSITIVE: Rule = (lambda v: v > 0, "> 0")
AT_LEAST_1: Rule = (lambda v: v >= 1, ">= 1")
NON_NEGATIVE: Rule = (lambda v: v >= 0, ">= 0")
UNIT: Rule = (lambda v: 0 <= v <= 1, "in [0, 1]")
UNIT_OPEN: Rule = (lambda v: 0 <= v < 1, "in [0, 1)")
WINDOW: Rule = (lambda v: len(v) == 2 and 0 <= v[0] <= v[1], "two epochs [start, end] with 0 <= start <= end")


def one_of(*choices: str | int) -> Rule:
    """A choice among ``choices`` (``must be one of a, b``)."""
    return (lambda v: v in choices, "one of " + ", ".join(map(str, choices)))


def refusal(value: Any, rule: Rule) -> str:
    """``"value" is not allowed: must be WORDS`` (the message without the name)."""
    return f"{json.dumps(value, default=str)} is not allowed: must be {rule[1]}"


def check(name: str, value: Any, rule: Rule) -> None:
    """ValueError ``NAME: "value" is not allowed: must be WORDS`` when ``value`` is outside ``rule``."""
    if not rule[0](value):
        raise ValueError(f"{name}: {refusal(value, rule)}")
