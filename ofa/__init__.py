"""Once-for-all supernets trained with attentive sampling: train once, deploy many.

``ofa.load_subnet(DIR)`` rebuilds an exported subnet as a plain PyTorch model (no supernet, no pickle).
The names below are imported on first use, so ``import ofa`` (and the ``ofa`` command) starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Arch", "SearchSpace", "Supernet", "count_macs", "count_params", "load_arch", "load_space", "load_subnet"]

_HOMES = {
    "Arch": "ofa.space",
    "SearchSpace": "ofa.space",
    "load_arch": "ofa.space",
    "load_space": "ofa.space",
    "count_macs": "ofa.flops",
    "count_params": "ofa.flops",
    "Supernet": "ofa.supernet",
    "load_subnet": "ofa.export",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'ofa' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
