"""Once-for-all supernets trained with attentive sampling: train once, deploy many.

``ofa.load_subnet(DIR)`` rebuilds an exported subnet as a plain PyTorch model (no supernet, no pickle).
"""

from ofa.export import load_subnet
from ofa.flops import count_macs, count_params
from ofa.space import Arch, SearchSpace, load_arch, load_space
from ofa.supernet import Supernet

__all__ = ["Arch", "SearchSpace", "Supernet", "count_macs", "count_params", "load_arch", "load_space", "load_subnet"]
