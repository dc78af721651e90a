"""MAC budgets: parsing ("5M", "1.2G", "800K") and the check against the smallest subnet.

Budgets are in MMACs (10^6 multiply-accumulates, the once-for-all / AttentiveNAS "FLOPs" counted by
``ofa.flops``). A budget below the smallest subnet (every choice at its minimum) can never be met, so
it is refused at once with the smallest subnet's MMACs in the message.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import TYPE_CHECKING

from ofa.flops import DEFAULT_NUM_CLASSES, count_macs_many
from ofa.space import SearchSpace

if TYPE_CHECKING:
    from ofa.latency_models import LatencyEstimator

__all__ = [
    "BUDGET_FORMS",
    "LATENCY_FORMS",
    "MACS_PER_MMAC",
    "check_budget",
    "check_latency_budget",
    "parse_budget",
    "parse_budgets",
    "parse_latency",
    "smallest_mmacs",
]

MACS_PER_MMAC = 1e6
TOLERANCE = 1e-9  # MMACs; costs are exact integers / 10^6
BUDGET_FORMS = (
    "a positive number of MACs with an optional suffix K, M or G (e.g. 800K, 5M, 5.5M, 1.2G); "
    "a plain number means MMACs"
)
LATENCY_FORMS = "a positive latency with an optional unit us, ms or s (e.g. 5ms, 800us, 0.2s); a plain number means ms"
_LATENCY_PATTERN = re.compile(r"^\s*((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(us|ms|s)?\s*$")
_MS_PER_UNIT = {None: 1.0, "us": 1e-3, "ms": 1.0, "s": 1e3}
_BUDGET_PATTERN = re.compile(r"^\s*((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([kKmMgG]?)\s*$")
_MMACS_PER_SUFFIX = {"": 1.0, "k": 1e-3, "m": 1.0, "g": 1e3}


def parse_budget(text: str | float) -> float:
    """MMACs from ``"5M"``, ``"5.5M"``, ``"120M"``, ``"1.2G"``, ``"800K"`` or ``"5"`` (plain = MMACs).

    A number (int, float or a numpy scalar) is taken as MMACs.

    Raises:
        ValueError: naming the value and the accepted forms when it is malformed, zero or negative.
    """
    if isinstance(text, numbers.Real) and not isinstance(text, bool):
        value = float(text)
    elif isinstance(text, str):
        match = _BUDGET_PATTERN.match(text)
        if match is None:
            hint = " (budgets must be positive)" if text.strip().startswith("-") else ""
            raise ValueError(f"malformed budget {text!r}{hint}; expected {BUDGET_FORMS}")
        value = float(match.group(1)) * _MMACS_PER_SUFFIX[match.group(2).lower()]
    else:
        raise ValueError(f"malformed budget {text!r} of type {type(text).__name__}; expected {BUDGET_FORMS}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"budget {text!r} must be positive and finite; expected {BUDGET_FORMS}")
    return value


def parse_budgets(text: str) -> list[float]:
    """MMACs of a comma-separated list such as ``"2M,4M,8M"``, in the given order."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"malformed budget list {text!r}: expected comma-separated budgets, each {BUDGET_FORMS}")
    return [parse_budget(item) for item in text.split(",")]


def smallest_mmacs(space: SearchSpace, num_classes: int = DEFAULT_NUM_CLASSES) -> float:
    """MMACs of the smallest subnet (``space.min_arch()``): the lowest feasible budget."""
    return float(count_macs_many(space, [space.min_arch()], num_classes)[0]) / MACS_PER_MMAC


def check_budget(space: SearchSpace, budget: float | str, num_classes: int = DEFAULT_NUM_CLASSES) -> float:
    """The budget in MMACs, if it is well formed and at least the smallest subnet's MMACs.

    Raises:
        ValueError: for a malformed budget, or one below the smallest subnet (whose MMACs it names).
    """
    value = parse_budget(budget)
    smallest = smallest_mmacs(space, num_classes)
    if value < smallest - TOLERANCE:
        raise ValueError(
            f"budget {value:.6g} MMACs is below the smallest subnet of space {space.name!r}, "
            f"which needs {smallest:.6g} MMACs ({num_classes} classes); choose a budget >= {smallest:.6g}M"
        )
    return value


def parse_latency(text: str | float) -> float:
    """Milliseconds from ``"5ms"``, ``"800us"``, ``"0.2s"`` or ``"5"`` (plain = ms); a number is ms.

    Raises:
        ValueError: naming the value and the accepted forms when it is malformed, zero, negative or not finite.
    """
    if isinstance(text, numbers.Real) and not isinstance(text, bool):
        value = float(text)
    elif isinstance(text, str):
        match = _LATENCY_PATTERN.match(text.lower())
        if match is None:
            raise ValueError(f"malformed latency budget {text!r}; expected {LATENCY_FORMS}")
        value = float(match.group(1)) * _MS_PER_UNIT[match.group(2)]
    else:
        raise ValueError(f"malformed latency budget {text!r} of type {type(text).__name__}; expected {LATENCY_FORMS}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"latency budget {text!r} must be positive and finite; expected {LATENCY_FORMS}")
    return value


def check_latency_budget(estimator: LatencyEstimator, budget: float | str) -> float:
    """The latency budget in ms, if well formed and not below the fastest subnet's estimated latency.

    Raises:
        ValueError: for a malformed budget, or one below the fastest subnet (whose latency it names).
    """
    value = parse_latency(budget)
    fastest = estimator.fastest_ms
    if value < fastest:
        raise ValueError(
            f"latency budget {value:.4g} ms is below the fastest subnet of space {estimator.space.name!r} on "
            f"{estimator.fingerprint.describe()}, estimated at {fastest:.4g} ms; choose a budget >= {fastest:.4g}ms"
        )
    return value
