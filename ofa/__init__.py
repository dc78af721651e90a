"""Once-for-all supernets trained with attentive sampling: train once, deploy many.

``ofa.load_subnet(DIR)`` rebuilds an exported subnet as a plain PyTorch model (no supernet, no pickle).
"""

from ofa.export import load_subnet

__all__ = ["load_subnet"]
