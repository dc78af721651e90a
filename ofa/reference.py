"""The published supernets this toolkit reads: their state-dict key layout and their arch naming.

Two families: AttentiveNAS (Wang et al., CVPR 2021; its ``AttentiveNasDynamicModel``, keys prefixed
``module.`` in the published checkpoints) and once-for-all's MobileNetV3 supernet (Cai et al., ICLR 2020;
``OFAMobileNetV3`` with kernel 3/5/7, expand 3/4/6, depth 2/3/4, width 1.0, kernel transformation matrices
included). Each maps onto a shipped space of the same name. Pure Python, no torch: key renaming and arch
translation only (:mod:`ofa.importer` reads the checkpoints).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ofa.space import Arch, SearchSpace

__all__ = ["FAMILIES", "ReferenceFamily", "arch_from_reference", "arch_to_reference", "reference_family"]

_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")


@dataclass(frozen=True)
class ReferenceFamily:
    """How one published supernet names its weights and archs.

    Attributes:
        name: the family, also the name of the shipped space it imports into.
        source: the reference implementation.
        key_prefix: a prefix of every key in published checkpoints (stripped when present).
        block_rules: (pattern, replacement) on a key inside ``blocks.<i>.``, giving the key inside our block.
        other_rules: (pattern, replacement) on every other key.
        dropped: pattern of keys the toolkit does not use (left out of the import, counted in provenance).
    """

    name: str
    source: str
    key_prefix: str
    block_rules: tuple[tuple[str, str], ...]
    other_rules: tuple[tuple[str, str], ...]
    dropped: str = r"(?!)"  # matches nothing

    def strip_prefix(self, keys: Iterable[str]) -> dict[str, str]:
        """Each key without :attr:`key_prefix` (only when every key carries it)."""
        keys = list(keys)
        prefix = self.key_prefix
        if prefix and keys and all(key.startswith(prefix) for key in keys):
            return {key: key[len(prefix) :] for key in keys}
        return {key: key for key in keys}

    def is_dropped(self, key: str) -> bool:
        """Whether the toolkit leaves this (prefix-stripped) key out."""
        return re.fullmatch(self.dropped, key) is not None

    def translate(self, key: str, block_positions: list[tuple[int, int]]) -> str | None:
        """Our supernet's key for a prefix-stripped reference key (None: no rule matches it).

        ``block_positions[i]`` is (stage, block) of the reference's ``blocks.<i>`` in our supernet.
        """
        match = _BLOCK.fullmatch(key)
        if match is not None:
            index = int(match.group(1))
            if index >= len(block_positions):
                return None
            local = _apply(self.block_rules, match.group(2))
            if local is None:
                return None
            stage, block = block_positions[index]
            return f"stages.{stage}.{block}.{local}"
        return _apply(self.other_rules, key)


def _apply(rules: tuple[tuple[str, str], ...], key: str) -> str | None:
    for pattern, replacement in rules:
        match = re.fullmatch(pattern, key)
        if match is not None:
            return match.expand(replacement)
    return None


ATTENTIVENAS = ReferenceFamily(
    name="attentivenas",
    source="facebookresearch/AttentiveNAS (AttentiveNasDynamicModel)",
    key_prefix="module.",
    block_rules=(
        (r"mobile_inverted_conv\.inverted_bottleneck\.conv\.conv\.weight", "conv_pw.weight"),
        (r"mobile_inverted_conv\.inverted_bottleneck\.bn\.bn\.(\w+)", r"bn1.\1"),
        (r"mobile_inverted_conv\.depth_conv\.conv\.conv\.weight", "conv_dw.weight"),
        (r"mobile_inverted_conv\.depth_conv\.bn\.bn\.(\w+)", r"bn2.\1"),
        (r"mobile_inverted_conv\.depth_conv\.se\.fc\.reduce\.(weight|bias)", r"se.conv_reduce.\1"),
        (r"mobile_inverted_conv\.depth_conv\.se\.fc\.expand\.(weight|bias)", r"se.conv_expand.\1"),
        (r"mobile_inverted_conv\.point_linear\.conv\.conv\.weight", "conv_pwl.weight"),
        (r"mobile_inverted_conv\.point_linear\.bn\.bn\.(\w+)", r"bn3.\1"),
        (r"shortcut\.conv\.conv\.weight", "shortcut.conv.weight"),
    ),
    other_rules=(
        (r"first_conv\.conv\.conv\.weight", "stem.conv.weight"),
        (r"first_conv\.bn\.bn\.(\w+)", r"stem.bn.\1"),
        (r"last_conv\.final_expand_layer\.conv\.conv\.weight", "head.conv.weight"),
        (r"last_conv\.final_expand_layer\.bn\.bn\.(\w+)", r"head.bn.\1"),
        (r"last_conv\.feature_mix_layer\.conv\.conv\.(weight|bias)", r"head.conv_final.\1"),
        (r"classifier\.linear\.linear\.(weight|bias)", r"head.classifier.\1"),
    ),
    # running statistics AttentiveNAS keeps for monitoring the largest and smallest subnets; unused in forward
    dropped=r".*\.bn_tracking\.\d+\.(running_mean|running_var|num_batches_tracked)",
)

OFA_MBV3 = ReferenceFamily(
    name="ofa_mbv3",
    source="mit-han-lab/once-for-all (OFAMobileNetV3, ofa_mbv3_d234_e346_k357_w1.0)",
    key_prefix="module.",
    block_rules=(
        (r"conv\.inverted_bottleneck\.conv\.conv\.weight", "conv_pw.weight"),
        (r"conv\.inverted_bottleneck\.bn\.bn\.(\w+)", r"bn1.\1"),
        (r"conv\.depth_conv\.conv\.(?:conv\.)?weight", "conv_dw.weight"),  # the first block is static
        (r"conv\.depth_conv\.conv\.(\d+)to(\d+)_matrix", r"conv_dw.transform_\1to\2"),
        (r"conv\.depth_conv\.bn\.(?:bn\.)?(\w+)", r"bn2.\1"),
        (r"conv\.depth_conv\.se\.fc\.reduce\.(weight|bias)", r"se.conv_reduce.\1"),
        (r"conv\.depth_conv\.se\.fc\.expand\.(weight|bias)", r"se.conv_expand.\1"),
        (r"conv\.point_linear\.conv\.(?:conv\.)?weight", "conv_pwl.weight"),
        (r"conv\.point_linear\.bn\.(?:bn\.)?(\w+)", r"bn3.\1"),
    ),
    other_rules=(
        (r"first_conv\.conv\.weight", "stem.conv.weight"),
        (r"first_conv\.bn\.(\w+)", r"stem.bn.\1"),
        (r"final_expand_layer\.conv\.weight", "head.conv.weight"),
        (r"final_expand_layer\.bn\.(\w+)", r"head.bn.\1"),
        (r"feature_mix_layer\.conv\.(weight|bias)", r"head.conv_final.\1"),
        (r"classifier\.linear\.(weight|bias)", r"head.classifier.\1"),
    ),
)

FAMILIES: Mapping[str, ReferenceFamily] = {family.name: family for family in (ATTENTIVENAS, OFA_MBV3)}


def reference_family(name: str) -> ReferenceFamily:
    """The family called ``name``; an unknown name is a ``ValueError`` listing the known ones."""
    if name not in FAMILIES:
        raise ValueError(f"unknown supernet family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


# ----------------------------------------------------------------------------------------------------
# arch naming
# ----------------------------------------------------------------------------------------------------

OFA_SLOTS_PER_STAGE = 4  # once-for-all names kernel and expand for 4 block slots per elastic stage


def arch_to_reference(family: str, space: SearchSpace, arch: Arch) -> dict[str, Any]:
    """``arch`` (of ``space``, the family's space) in the reference implementation's own naming.

    AttentiveNAS: ``resolution``, ``width`` (first conv, mb1..mb7, last conv), and ``depth``, ``kernel_size``,
    ``expand_ratio`` per stage. once-for-all: ``ks`` and ``e`` for its 20 block slots (slots beyond a stage's
    depth repeat the stage's last block), ``d`` per stage, ``image_size``; our fixed first block is left out.
    """
    space.validate(arch)
    reference_family(family)
    if family == "attentivenas":
        return {
            "resolution": arch.resolution,
            "width": list(arch.width),
            "depth": list(arch.depth),
            "kernel_size": [stage[0] for stage in arch.kernel_size],
            "expand_ratio": [_plain(stage[0]) for stage in arch.expand_ratio],
        }
    kernels, expands = [], []
    for kernel_stage, expand_stage in zip(arch.kernel_size[1:], arch.expand_ratio[1:]):
        padding = OFA_SLOTS_PER_STAGE - len(kernel_stage)
        kernels += list(kernel_stage) + [kernel_stage[-1]] * padding
        expands += [_plain(e) for e in expand_stage] + [_plain(expand_stage[-1])] * padding
    return {"ks": kernels, "e": expands, "d": list(arch.depth[1:]), "image_size": arch.resolution}


def arch_from_reference(family: str, space: SearchSpace, data: Any) -> Arch:
    """The arch of ``space`` that the reference naming ``data`` describes (see :func:`arch_to_reference`)."""
    reference_family(family)
    if family == "attentivenas":
        return space.validate(Arch.from_dict(data))
    keys = {"ks", "e", "d", "image_size"}
    if not isinstance(data, dict) or set(data) != keys:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"once-for-all arch: expected the keys {', '.join(sorted(keys))}, got {got}")
    elastic = space.stages[1:]
    slots = OFA_SLOTS_PER_STAGE * len(elastic)
    for name in ("ks", "e"):
        if not isinstance(data[name], list) or len(data[name]) != slots:
            raise ValueError(f"once-for-all arch: {name} must list {slots} block slots, got {data[name]!r}")
    depths = data["d"]
    if not isinstance(depths, list) or len(depths) != len(elastic) or not all(type(d) is int for d in depths):
        raise ValueError(f"once-for-all arch: d must list {len(elastic)} stage depths, got {data['d']!r}")
    first = space.stages[0]
    kernels, expands = [[first.kernel_size[0]]], [[first.expand_ratio[0]]]
    for index, depth in enumerate(depths):
        start = OFA_SLOTS_PER_STAGE * index
        kernels.append(data["ks"][start : start + depth])
        expands.append(data["e"][start : start + depth])
    arch = {
        "resolution": data["image_size"],
        "width": [space.stem.width[0], *(stage.width[0] for stage in space.stages), space.head.width[0]],
        "depth": [first.depth[0], *depths],
        "kernel_size": kernels,
        "expand_ratio": expands,
    }
    return space.validate(Arch.from_dict(arch))


def _plain(value: int | float) -> int | float:
    """An integral ratio as an int (the references write 4, not 4.0)."""
    return int(value) if float(value).is_integer() else value
