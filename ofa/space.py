"""Search spaces as data and architectures as values.

A :class:`SearchSpace` is read from YAML (``configs/spaces/*.yaml``) and describes a MobileNetV3-style
network whose resolution, widths, depths, kernel sizes and expand ratios are elastic, as in
once-for-all (Cai et al., ICLR 2020) and AttentiveNAS (Wang et al., CVPR 2021). An :class:`Arch` is one
frozen, hashable point of such a space. This module is pure Python: no torch.

An ``Arch`` holds the kernel size and expand ratio of every *active* block, grouped by stage, so two
archs are equal exactly when they build the same network. A space with ``granularity: per_stage``
(AttentiveNAS) requires all blocks of a stage to share them; ``per_block`` (once-for-all) does not.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import numbers
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ofa.config import read_user_text, yaml_error_line

__all__ = [
    "ACTIVATIONS",
    "Arch",
    "HeadSpec",
    "SearchSpace",
    "StageSpec",
    "StemSpec",
    "load_arch",
    "load_space",
    "make_divisible",
    "read_yaml_or_json",
    "space_fingerprint",
]

ACTIVATIONS = ("relu", "swish", "h_swish")
GRANULARITIES = ("per_stage", "per_block")
SHORTCUTS = ("projected", "identity")


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer (``int``, ``numpy.int64``, ...), not a bool nor a float equal to one."""
    return type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool))


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never going below 90% of it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


# ----------------------------------------------------------------------------------------------------
# strict reading of plain data
# ----------------------------------------------------------------------------------------------------


def _check_keys(data: Any, where: str, required: set[str], optional: set[str] = frozenset()) -> dict:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    unknown = set(data) - required - optional
    if unknown:
        allowed = ", ".join(sorted(required | optional))
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; allowed: {allowed}")
    missing = required - set(data)
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(sorted(missing))}")
    return data


LARGEST_VALUE = 100_000  # sanity bound on any width, resolution, depth, kernel or ratio of a space or arch


def _stem_spec(data: Any, where: str) -> StemSpec:
    """The stem of a space's plain data (``where`` names it in errors)."""
    data = _check_keys(data, where, {"width", "kernel_size", "stride", "activation"})
    return StemSpec(
        width=_choices(data["width"], f"{where}.width"),
        kernel_size=_odd(data["kernel_size"], f"{where}.kernel_size"),
        stride=_stride(data["stride"], f"{where}.stride"),
        activation=_enum(data["activation"], f"{where}.activation", ACTIVATIONS),
    )


def _stage_spec(data: Any, index: int, where: str) -> StageSpec:
    """Stage ``index`` of a space's plain data."""
    data = _check_keys(
        data, where, {"width", "depth", "kernel_size", "expand_ratio", "stride", "se", "activation"}, {"name"}
    )
    kernels = _choices(data["kernel_size"], f"{where}.kernel_size")
    for kernel in kernels:
        _odd(kernel, f"{where}.kernel_size")
    return StageSpec(
        name=_name(data.get("name", f"stage{index + 1}"), f"{where}.name"),
        width=_choices(data["width"], f"{where}.width"),
        depth=_choices(data["depth"], f"{where}.depth"),
        kernel_size=kernels,
        expand_ratio=_choices(data["expand_ratio"], f"{where}.expand_ratio", kind="number"),
        stride=_stride(data["stride"], f"{where}.stride"),
        se=_bool(data["se"], f"{where}.se"),
        activation=_enum(data["activation"], f"{where}.activation", ACTIVATIONS),
    )


def _head_spec(data: Any, where: str) -> HeadSpec:
    """The head of a space's plain data."""
    data = _check_keys(data, where, {"width", "expand_ratio", "bias", "activation"})
    return HeadSpec(
        width=_choices(data["width"], f"{where}.width"),
        expand_ratio=_number(data["expand_ratio"], f"{where}.expand_ratio"),
        bias=_bool(data["bias"], f"{where}.bias"),
        activation=_enum(data["activation"], f"{where}.activation", ACTIVATIONS),
    )


def _int(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: must be >= {minimum}, got {value}")
    if value > LARGEST_VALUE:
        raise ValueError(f"{where}: must be <= {LARGEST_VALUE}, got {value}")
    return value


def _number(value: Any, where: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: expected a positive number, got {value!r}")
    if value > LARGEST_VALUE:
        raise ValueError(f"{where}: must be <= {LARGEST_VALUE}, got {value}")
    return value


def _choices(value: Any, where: str, kind: str = "int") -> tuple:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list of choices, got {type(value).__name__} {value!r}")
    if not value:
        raise ValueError(f"{where}: the list of choices is empty")
    parse = _int if kind == "int" else _number
    items = tuple(parse(item, f"{where}[{index}]") for index, item in enumerate(value))
    if len(set(items)) != len(items):
        raise ValueError(f"{where}: duplicate choices in {list(items)}")
    return tuple(sorted(items))


def _enum(value: Any, where: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{where}: {value!r} is not one of {', '.join(allowed)}")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    return value


# ----------------------------------------------------------------------------------------------------
# space
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StemSpec:
    """First conv: ``kernel_size`` x ``kernel_size``, ``stride``, elastic output ``width``."""

    width: tuple[int, ...]
    kernel_size: int
    stride: int
    activation: str


@dataclass(frozen=True)
class StageSpec:
    """A run of inverted-residual blocks sharing width; only the first block has the stride."""

    name: str
    width: tuple[int, ...]
    depth: tuple[int, ...]
    kernel_size: tuple[int, ...]
    expand_ratio: tuple[int | float, ...]
    stride: int
    se: bool
    activation: str


@dataclass(frozen=True)
class HeadSpec:
    """1x1 conv to ``expand_ratio`` x last width + BN + act, pool, 1x1 conv to ``width`` + act, linear."""

    width: tuple[int, ...]
    expand_ratio: int | float
    bias: bool
    activation: str


@dataclass(frozen=True)
class Arch:
    """One architecture of a space.

    Attributes:
        resolution: input side in pixels.
        width: output channels of the stem, of each stage, and of the head's last conv.
        depth: active blocks per stage.
        kernel_size: per stage, the kernel size of each active block.
        expand_ratio: per stage, the expand ratio of each active block.
    """

    resolution: int
    width: tuple[int, ...]
    depth: tuple[int, ...]
    kernel_size: tuple[tuple[int, ...], ...]
    expand_ratio: tuple[tuple[int | float, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; ``Arch.from_dict`` reverses it."""
        return {
            "resolution": self.resolution,
            "width": list(self.width),
            "depth": list(self.depth),
            "kernel_size": [list(stage) for stage in self.kernel_size],
            "expand_ratio": [list(stage) for stage in self.expand_ratio],
        }

    def to_json(self) -> str:
        """Compact one-line JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any) -> Arch:
        """Read an arch from plain data.

        ``kernel_size`` and ``expand_ratio`` are lists per stage of per-block values; a single number in
        place of a stage's list means that value for every active block of the stage.
        """
        data = _check_keys(data, "arch", {"resolution", "width", "depth", "kernel_size", "expand_ratio"})
        resolution = _int(data["resolution"], "arch.resolution")
        width = _int_list(data["width"], "arch.width")
        depth = _int_list(data["depth"], "arch.depth", minimum=1)
        per_block = []
        for name, kind in (("kernel_size", "int"), ("expand_ratio", "number")):
            stages = data[name]
            if not isinstance(stages, list) or len(stages) != len(depth):
                raise ValueError(
                    f"arch.{name}: expected a list of {len(depth)} stages (one per depth entry), got {stages!r}"
                )
            parsed = []
            for index, (stage, stage_depth) in enumerate(zip(stages, depth)):
                where = f"arch.{name}[{index}]"
                if isinstance(stage, list):
                    if len(stage) != stage_depth:
                        raise ValueError(f"{where}: expected {stage_depth} values (the stage's depth), got {stage!r}")
                    values = tuple(_int(v, where) if kind == "int" else _number(v, where) for v in stage)
                else:
                    single = _int(stage, where) if kind == "int" else _number(stage, where)
                    values = (single,) * stage_depth
                parsed.append(values)
            per_block.append(tuple(parsed))
        return cls(resolution, width, depth, per_block[0], per_block[1])

    @classmethod
    def from_json(cls, text: str) -> Arch:
        """Parse JSON text; malformed JSON raises ``ValueError`` naming the position."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"arch: malformed JSON ({error.msg} at line {error.lineno} column {error.colno})"
            ) from None
        return cls.from_dict(data)

    def short(self) -> str:
        """Compact human-readable form, e.g. ``r24 w8-16-24-32-64 d1-2-2 k3.5|3.3 e1|4.6``."""
        kernel = "|".join(".".join(str(k) for k in stage) for stage in self.kernel_size)
        expand = "|".join(".".join(f"{e:g}" for e in stage) for stage in self.expand_ratio)
        width = "-".join(map(str, self.width))
        depth = "-".join(map(str, self.depth))
        return f"r{self.resolution} w{width} d{depth} k{kernel} e{expand}"


def _int_list(value: Any, where: str, minimum: int = 1) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: expected a non-empty list of integers, got {value!r}")
    return tuple(_int(item, f"{where}[{index}]", minimum) for index, item in enumerate(value))


def _pick(rng: random.Random, choices: tuple, prob: float, current: Any) -> Any:
    return rng.choice(choices) if rng.random() < prob else current


@dataclass(frozen=True)
class SearchSpace:
    """An elastic MobileNetV3-style search space (see ``configs/spaces/*.yaml``)."""

    name: str
    resolution: tuple[int, ...]
    granularity: str
    shortcut: str
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    head: HeadSpec
    input_channels: int = 3
    description: str = field(default="", compare=False)
    kernel_transform: bool = False  # smaller kernels: centre crop (False) or once-for-all's transformed crop

    # --- construction --------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, source: str = "space") -> SearchSpace:
        """Build a space from plain data, rejecting unknown or missing keys and wrong types."""
        top = _check_keys(
            data,
            source,
            {"name", "resolution", "granularity", "shortcut", "stem", "stages", "head"},
            {"input_channels", "description", "kernel_transform"},
        )
        if not isinstance(top["name"], str) or not top["name"]:
            raise ValueError(f"{source}.name: expected a non-empty string, got {top['name']!r}")
        if not isinstance(top["stages"], list) or not top["stages"]:
            raise ValueError(f"{source}.stages: expected a non-empty list of stages, got {top['stages']!r}")
        stem = _stem_spec(top["stem"], f"{source}.stem")
        stages = [_stage_spec(data, index, f"{source}.stages[{index}]") for index, data in enumerate(top["stages"])]
        head = _head_spec(top["head"], f"{source}.head")
        description = top.get("description", "")
        if not isinstance(description, str):
            raise ValueError(f"{source}.description: expected a string, got {description!r}")
        space = cls(
            name=top["name"],
            resolution=_choices(top["resolution"], f"{source}.resolution"),
            granularity=_enum(top["granularity"], f"{source}.granularity", GRANULARITIES),
            shortcut=_enum(top["shortcut"], f"{source}.shortcut", SHORTCUTS),
            stem=stem,
            stages=tuple(stages),
            head=head,
            input_channels=_int(top.get("input_channels", 3), f"{source}.input_channels"),
            description=description,
            kernel_transform=_bool(top.get("kernel_transform", False), f"{source}.kernel_transform"),
        )
        if space.kernel_transform and all(len(stage.kernel_size) == 1 for stage in space.stages):
            raise ValueError(
                f"{source}.kernel_transform is true but every stage has a single kernel size: there is no smaller "
                f"kernel to transform; remove it or give a stage several kernel_size choices"
            )
        return space

    def to_dict(self) -> dict[str, Any]:
        """Plain data that ``SearchSpace.from_dict`` reads back to an equal space (``kernel_transform`` only when
        set, so the fingerprints of centre-crop spaces stay those of files saved before the option existed)."""
        data = {
            "name": self.name,
            "description": self.description,
            "input_channels": self.input_channels,
            "resolution": list(self.resolution),
            "granularity": self.granularity,
            "shortcut": self.shortcut,
            "stem": {
                "width": list(self.stem.width),
                "kernel_size": self.stem.kernel_size,
                "stride": self.stem.stride,
                "activation": self.stem.activation,
            },
            "stages": [
                {
                    "name": stage.name,
                    "width": list(stage.width),
                    "depth": list(stage.depth),
                    "kernel_size": list(stage.kernel_size),
                    "expand_ratio": list(stage.expand_ratio),
                    "stride": stage.stride,
                    "se": stage.se,
                    "activation": stage.activation,
                }
                for stage in self.stages
            ],
            "head": {
                "width": list(self.head.width),
                "expand_ratio": self.head.expand_ratio,
                "bias": self.head.bias,
                "activation": self.head.activation,
            },
        }
        if self.kernel_transform:
            data["kernel_transform"] = True
        return data

    # --- the choices of every field, in arch order ------------------------------------------------------

    @property
    def width_choices(self) -> tuple[tuple[int, ...], ...]:
        """Choices of ``Arch.width``: stem, each stage, head."""
        return (self.stem.width, *(stage.width for stage in self.stages), self.head.width)

    @property
    def max_blocks(self) -> int:
        """Blocks of the deepest subnet."""
        return sum(max(stage.depth) for stage in self.stages)

    # --- validation -----------------------------------------------------------------------------------

    def validate(self, arch: Arch) -> Arch:
        """Return ``arch`` if it belongs to this space, else raise ``ValueError`` naming field and choices."""
        if not isinstance(arch, Arch):
            raise ValueError(f"expected an Arch, got {type(arch).__name__}")
        n_stages = len(self.stages)
        if len(arch.width) != n_stages + 2:
            raise ValueError(
                f"arch.width: expected {n_stages + 2} values (stem, {n_stages} stages, head) for space "
                f"'{self.name}', got {len(arch.width)}: the arch is from another space"
            )
        for name in ("depth", "kernel_size", "expand_ratio"):
            if len(getattr(arch, name)) != n_stages:
                raise ValueError(
                    f"arch.{name}: expected {n_stages} stages for space '{self.name}', "
                    f"got {len(getattr(arch, name))}: the arch is from another space"
                )
        if arch.resolution not in self.resolution:
            raise ValueError(f"arch.resolution: {arch.resolution} is not one of {list(self.resolution)}")
        for index, (value, choices) in enumerate(zip(arch.width, self.width_choices)):
            if value not in choices:
                part = "stem" if index == 0 else "head" if index == n_stages + 1 else self.stages[index - 1].name
                raise ValueError(f"arch.width[{index}] ({part}): {value} is not one of {list(choices)}")
        for index, stage in enumerate(self.stages):
            depth = arch.depth[index]
            if not is_integer(depth):
                raise ValueError(f"arch.depth[{index}] ({stage.name}): {depth!r} is not an integer")
            if depth not in stage.depth:
                raise ValueError(f"arch.depth[{index}] ({stage.name}): {depth} is not one of {list(stage.depth)}")
            for name in ("kernel_size", "expand_ratio"):
                values = getattr(arch, name)[index]
                choices = getattr(stage, name)
                if len(values) != depth:
                    raise ValueError(
                        f"arch.{name}[{index}] ({stage.name}): expected {depth} values (the stage's depth), "
                        f"got {len(values)}"
                    )
                for block, value in enumerate(values):
                    if value not in choices:
                        raise ValueError(
                            f"arch.{name}[{index}][{block}] ({stage.name}): {value} is not one of {list(choices)}"
                        )
                if self.granularity == "per_stage" and len(set(values)) > 1:
                    raise ValueError(
                        f"arch.{name}[{index}] ({stage.name}): space '{self.name}' chooses {name} per stage, "
                        f"but the blocks differ: {list(values)}"
                    )
        return arch

    def arch_from_dict(self, data: Any) -> Arch:
        """Parse and validate an arch of this space."""
        return self.validate(Arch.from_dict(data))

    # --- extremes and size -----------------------------------------------------------------------------

    def min_arch(self) -> Arch:
        """The smallest subnet: every choice at its minimum."""
        return self._extreme(min)

    def max_arch(self) -> Arch:
        """The largest subnet: every choice at its maximum."""
        return self._extreme(max)

    def _extreme(self, pick: Any) -> Arch:
        depth = tuple(pick(stage.depth) for stage in self.stages)
        return Arch(
            resolution=pick(self.resolution),
            width=tuple(pick(choices) for choices in self.width_choices),
            depth=depth,
            kernel_size=tuple((pick(s.kernel_size),) * d for s, d in zip(self.stages, depth)),
            expand_ratio=tuple((pick(s.expand_ratio),) * d for s, d in zip(self.stages, depth)),
        )

    def size(self) -> int:
        """Exact number of distinct architectures."""
        total = len(self.resolution) * len(self.stem.width) * len(self.head.width)
        for stage in self.stages:
            per_block = len(stage.kernel_size) * len(stage.expand_ratio)
            if self.granularity == "per_stage":
                blocks = len(stage.depth) * per_block
            else:
                blocks = sum(per_block**depth for depth in stage.depth)
            total *= len(stage.width) * blocks
        return total

    def enumerate(self) -> list[Arch]:
        """Every architecture of the space (only sensible for very small spaces)."""
        stage_options = []
        for stage in self.stages:
            options = []
            for depth in stage.depth:
                if self.granularity == "per_stage":
                    blocks = [((k,) * depth, (e,) * depth) for k in stage.kernel_size for e in stage.expand_ratio]
                else:
                    pairs = list(itertools.product(stage.kernel_size, stage.expand_ratio))
                    blocks = [
                        (tuple(p[0] for p in combo), tuple(p[1] for p in combo))
                        for combo in itertools.product(pairs, repeat=depth)
                    ]
                options.extend((depth, kernels, expands) for kernels, expands in blocks)
            stage_options.append(options)
        archs = []
        for resolution in self.resolution:
            for width in itertools.product(*self.width_choices):
                for combo in itertools.product(*stage_options):
                    archs.append(
                        Arch(
                            resolution=resolution,
                            width=tuple(width),
                            depth=tuple(option[0] for option in combo),
                            kernel_size=tuple(option[1] for option in combo),
                            expand_ratio=tuple(option[2] for option in combo),
                        )
                    )
        return archs

    # --- random operators ----------------------------------------------------------------------------

    def _blocks(self, stage: StageSpec, depth: int, rng: random.Random) -> tuple[tuple, tuple]:
        if self.granularity == "per_stage":
            kernel, expand = rng.choice(stage.kernel_size), rng.choice(stage.expand_ratio)
            return (kernel,) * depth, (expand,) * depth
        kernels = tuple(rng.choice(stage.kernel_size) for _ in range(depth))
        expands = tuple(rng.choice(stage.expand_ratio) for _ in range(depth))
        return kernels, expands

    def sample(self, rng: random.Random) -> Arch:
        """A uniformly random choice of every field (uniform over depth, not over distinct archs)."""
        depth = tuple(rng.choice(stage.depth) for stage in self.stages)
        blocks = [self._blocks(stage, d, rng) for stage, d in zip(self.stages, depth)]
        return Arch(
            resolution=rng.choice(self.resolution),
            width=tuple(rng.choice(choices) for choices in self.width_choices),
            depth=depth,
            kernel_size=tuple(block[0] for block in blocks),
            expand_ratio=tuple(block[1] for block in blocks),
        )

    def mutate(self, arch: Arch, rng: random.Random, prob: float, resolution_prob: float | None = None) -> Arch:
        """Resample each choice with probability ``prob`` (resolution with ``resolution_prob``, default ``prob``).

        Blocks that become active through a deeper depth get random choices.
        """
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"mutation probability must be in [0, 1], got {prob}")
        self.validate(arch)
        resolution_prob = prob if resolution_prob is None else resolution_prob
        resolution = _pick(rng, self.resolution, resolution_prob, arch.resolution)
        width = tuple(_pick(rng, c, prob, w) for w, c in zip(arch.width, self.width_choices))
        depths, kernel_sizes, expand_ratios = [], [], []
        for index, stage in enumerate(self.stages):
            depth = _pick(rng, stage.depth, prob, arch.depth[index])
            kernels = list(arch.kernel_size[index][:depth])
            expands = list(arch.expand_ratio[index][:depth])
            fresh_kernels, fresh_expands = self._blocks(stage, depth, rng)
            kernels += fresh_kernels[len(kernels) :]
            expands += fresh_expands[len(expands) :]
            if self.granularity == "per_stage":
                kernels = [_pick(rng, stage.kernel_size, prob, kernels[0])] * depth
                expands = [_pick(rng, stage.expand_ratio, prob, expands[0])] * depth
            else:
                kernels = [_pick(rng, stage.kernel_size, prob, k) for k in kernels]
                expands = [_pick(rng, stage.expand_ratio, prob, e) for e in expands]
            depths.append(depth)
            kernel_sizes.append(tuple(kernels))
            expand_ratios.append(tuple(expands))
        return Arch(resolution, width, tuple(depths), tuple(kernel_sizes), tuple(expand_ratios))

    def crossover(self, first: Arch, second: Arch, rng: random.Random) -> Arch:
        """Each choice from either parent with equal chance; per-stage choices travel together."""
        self.validate(first)
        self.validate(second)
        resolution = rng.choice((first.resolution, second.resolution))
        width = tuple(rng.choice(pair) for pair in zip(first.width, second.width))
        depths, kernel_sizes, expand_ratios = [], [], []
        for index in range(len(self.stages)):
            depth = rng.choice((first.depth[index], second.depth[index]))
            kernels, expands = [], []
            if self.granularity == "per_stage":
                parent = rng.choice((first, second))
                kernels = [parent.kernel_size[index][0]] * depth
                parent = rng.choice((first, second))
                expands = [parent.expand_ratio[index][0]] * depth
            else:
                for block in range(depth):
                    donors = [p for p in (first, second) if block < p.depth[index]]
                    kernels.append(rng.choice(donors).kernel_size[index][block])
                    expands.append(rng.choice(donors).expand_ratio[index][block])
            depths.append(depth)
            kernel_sizes.append(tuple(kernels))
            expand_ratios.append(tuple(expands))
        return Arch(resolution, width, tuple(depths), tuple(kernel_sizes), tuple(expand_ratios))


def _odd(value: Any, where: str) -> int:
    value = _int(value, where)
    if value % 2 == 0:
        raise ValueError(f"{where}: kernel sizes must be odd, got {value}")
    return value


def _stride(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in (1, 2):
        raise ValueError(f"{where}: stride must be 1 or 2, got {value!r}")
    return value


def read_yaml_or_json(path: Path, what: str) -> Any:
    """The data of a JSON (``.json``) or YAML file; unreadable or malformed files are one-line errors."""
    text = read_user_text(path, what)
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} file {path}: malformed JSON: {error}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{what} file {path}: malformed YAML: {yaml_error_line(error)}") from None


def default_spaces_dir() -> Path:
    """The ``configs/spaces`` folder shipped with the project."""
    return Path(__file__).resolve().parent.parent / "configs" / "spaces"


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load a space by shipped name (``tiny``, ``attentivenas``, ``ofa_mbv3``) or from a YAML path."""
    path = Path(name_or_path)
    if not path.suffix:
        shipped = default_spaces_dir() / f"{name_or_path}.yaml"
        if not shipped.is_file():
            names = sorted(p.stem for p in default_spaces_dir().glob("*.yaml"))
            raise ValueError(f"unknown space {str(name_or_path)!r}; shipped spaces: {', '.join(names)}, or a YAML path")
        path = shipped
    return SearchSpace.from_dict(read_yaml_or_json(path, "space"), source=f"space {path.name}")


def load_arch(path: str | Path, space: SearchSpace | None = None) -> Arch:
    """Read an arch from a JSON or YAML file; validate it against ``space`` when given.

    The file holds the arch itself or a mapping with an ``arch`` key (as exported subnets do).
    """
    data = read_yaml_or_json(Path(path), "arch")
    declared = []
    if isinstance(data, dict) and "arch" in data and "resolution" not in data:
        if "space" in data:
            declared.append(data["space"])
        data = data["arch"]
    if isinstance(data, dict) and "space" in data:
        data = dict(data)
        declared.append(data.pop("space"))
    for name in declared:
        if space is not None and name != space.name:
            raise ValueError(f"arch file {path} is for space {name!r}, not {space.name!r}")
    arch = Arch.from_dict(data)
    return space.validate(arch) if space is not None else arch


def space_fingerprint(space: SearchSpace) -> str:
    """sha256 (hex) of the space's definition, its description excluded: what saved files (predictors,
    FLOPs tables) record to recognise the space they were made for."""
    data = space.to_dict()
    data.pop("description", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
