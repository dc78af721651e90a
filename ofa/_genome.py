"""Archs as rows of choice indices: vectorised sampling, mutation, crossover, MAC counting and budget repair.

The fast path of ``ofa.search``. A *genome* row holds, for one arch of a space, the index of every
choice: resolution, widths (stem, stages, head), depths, then the kernel size and expand ratio of every
block slot (one slot per stage in a ``per_stage`` space). Slots of inactive blocks hold 0, so rows and
archs correspond one to one. The operators draw from the same distributions as ``SearchSpace.sample``,
``mutate`` and ``crossover`` (the evolutionary operators of once-for-all, Cai et al., ICLR 2020), on a
whole batch at once with a ``numpy.random.Generator``.

MACs come from tables of per-block, stem and head terms built once per space with
``ofa.layer_costs.layout_macs`` over ``ofa.layout.network_layout`` (the project's single MAC formula); a MAC
count is then a few table look-ups per row. The count is exact, since a block's MACs depend only on
the resolution, its input and output widths, its kernel size and its expand ratio (tests compare it
with the layer-by-layer count of the layout and with fvcore). ``ofa.flops`` counts archs with it.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from ofa.layer_costs import block_macs, block_params, layout_macs, layout_params
from ofa.layout import BlockLayout, NetworkLayout, network_layout
from ofa.space import Arch, SearchSpace, StageSpec, is_integer

__all__ = ["AdditiveTables", "Genome", "genome_of"]

MACS_PER_MMAC = 1e6


def _radix(sizes: np.ndarray) -> np.ndarray:
    """Place values of a mixed-radix number whose first digit is the least significant."""
    return np.concatenate(([1], np.cumprod(sizes[:-1]))).astype(np.int64)


def _digits(code: int, sizes: Sequence[int], choices: Sequence[tuple]) -> tuple:
    """The choices a mixed-radix code stands for (first digit least significant)."""
    values = []
    for size, options in zip(sizes, choices):
        code, digit = divmod(code, int(size))
        values.append(options[digit])
    return tuple(values)


@dataclass(frozen=True)
class AdditiveTables:
    """Look-up tables of an additive cost (see ``Genome.additive_tables``): the stem + head terms and one
    flat table of block terms with the offset and the strides of every block position."""

    base: np.ndarray
    flat: np.ndarray
    offsets: np.ndarray
    strides: np.ndarray


class _LazyTuples(dict):
    """code -> tuple, each made on first use."""

    def __init__(self, make: Callable[[int], tuple]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, code: int) -> tuple:
        value = self[code] = self._make(code)
        return value


class Genome:
    """The index-row encoding of a space's archs, its operators, and an exact MAC counter."""

    def __init__(self, space: SearchSpace, num_classes: int) -> None:
        self.space = space
        self.num_classes = num_classes
        stages = space.stages
        n_stages = len(stages)
        self.slots = max(max(stage.depth) for stage in stages) if space.granularity == "per_block" else 1
        self.width_columns = np.arange(1, n_stages + 3)
        self.depth_columns = np.arange(n_stages + 3, 2 * n_stages + 3)
        kernel_start = 2 * n_stages + 3
        expand_start = kernel_start + n_stages * self.slots
        self.kernel_columns = np.arange(kernel_start, expand_start).reshape(n_stages, self.slots)
        self.expand_columns = np.arange(expand_start, expand_start + n_stages * self.slots).reshape(
            n_stages, self.slots
        )
        self.choices: list[tuple] = [space.resolution, *space.width_choices, *(stage.depth for stage in stages)]
        self.choices += [stage.kernel_size for stage in stages for _ in range(self.slots)]
        self.choices += [stage.expand_ratio for stage in stages for _ in range(self.slots)]
        self.columns = len(self.choices)
        self.sizes = np.array([len(choices) for choices in self.choices], dtype=np.int64)
        self._index = [{value: index for index, value in enumerate(choices)} for choices in self.choices]
        self._depth_table = np.zeros((n_stages, max(len(stage.depth) for stage in stages)), dtype=np.int64)
        for s, stage in enumerate(stages):
            self._depth_table[s, : len(stage.depth)] = stage.depth
        self._stage_range = np.arange(n_stages)
        # per_block slots: the stage and block index of every kernel/expand column (for activity)
        slot_stage = np.repeat(np.arange(n_stages), self.slots)
        slot_block = np.tile(np.arange(self.slots), n_stages)
        self._slot_columns = np.concatenate([self.kernel_columns.ravel(), self.expand_columns.ravel()])
        self._slots = slice(kernel_start, self.columns)  # the slot columns are the last ones, in order
        self._slot_stage = np.concatenate([slot_stage, slot_stage])
        self._slot_block = np.concatenate([slot_block, slot_block])
        self._build_decoding()
        self._build_mac_tables()

    # --- encoding ------------------------------------------------------------------------------------

    def encode(self, archs: Sequence[Arch]) -> np.ndarray:
        """Rows of ``archs``; an arch of another space, or with a value the space does not offer, raises the
        ``ValueError`` of ``SearchSpace.validate``."""
        rows = np.zeros((len(archs), self.columns), dtype=np.int64)
        for row, arch in enumerate(archs):
            rows[row] = self._checked_indices(arch)
        return rows

    def _checked_indices(self, arch: Arch) -> list[int]:
        """The choice indices of ``arch``, or the ``ValueError`` of ``SearchSpace.validate``."""
        indices = self._indices(arch)
        return self._refuse(arch) if indices is None else indices

    def _indices(self, arch: Arch) -> list[int] | None:
        """The choice indices of a valid arch; None for anything ``SearchSpace.validate`` would refuse."""
        if not self._well_formed(arch):
            return None
        values = [arch.resolution, *arch.width, *arch.depth]
        for name in ("kernel_size", "expand_ratio"):
            for depth, stage_values in zip(arch.depth, getattr(arch, name)):
                if self.slots == 1:  # per_stage: one value for all blocks of the stage
                    values.append(stage_values[0])
                else:
                    values.extend(stage_values)
                    values.extend([None] * (self.slots - depth))
        try:
            return [0 if value is None else index[value] for value, index in zip(values, self._index)]
        except (KeyError, TypeError):
            return None

    def _well_formed(self, arch: Arch) -> bool:
        """Whether ``arch`` has the space's shape, as ``SearchSpace.validate`` checks it: one width per stem, stage
        and head, per stage an integer depth the stage offers and one kernel size and expand ratio per block (the
        same for all blocks of a stage in a per-stage space). The choice values are left to the look-ups."""
        depths = self._stage_depths
        try:
            if not isinstance(arch, Arch) or len(arch.width) != len(depths) + 2:
                return False
            if not len(arch.depth) == len(arch.kernel_size) == len(arch.expand_ratio) == len(depths):
                return False
            for choices, depth, kernels, expands in zip(depths, arch.depth, arch.kernel_size, arch.expand_ratio):
                if not is_integer(depth) or depth not in choices or len(kernels) != depth or len(expands) != depth:
                    return False
                if self.slots == 1 and (kernels.count(kernels[0]) != depth or expands.count(expands[0]) != depth):
                    return False
        except (TypeError, AttributeError):
            return False
        return True

    def decode(self, rows: np.ndarray) -> list[Arch]:
        """Archs of canonical rows."""
        codes = (rows @ self._code_weights).tolist()
        resolutions, widths, depths = self.space.resolution, self._width_tuples, self._depth_tuples
        kernels, expands = self._kernel_tuples, self._expand_tuples
        middle = 3 + len(self.space.stages)
        lookup = dict.__getitem__  # falls back to _LazyTuples.__missing__
        return [
            Arch(
                resolutions[code[0]],
                widths[code[1]],
                depths[code[2]],
                tuple(map(lookup, kernels, code[3:middle])),
                tuple(map(lookup, expands, code[middle:])),
            )
            for code in codes
        ]

    def _build_decoding(self) -> None:
        """Weights turning a row into codes (resolution, widths, depths, per stage kernels and expands) and
        lazily filled tables from codes to the tuples of an Arch."""
        stages, n_stages = self.space.stages, len(self.space.stages)
        weights = np.zeros((self.columns, 3 + 2 * n_stages), dtype=np.int64)
        weights[0, 0] = 1
        weights[self.width_columns, 1] = _radix(self.sizes[self.width_columns])
        weights[self.depth_columns, 2] = _radix(self.sizes[self.depth_columns])
        kernel_tables, expand_tables = [], []
        for s, stage in enumerate(stages):
            for offset, columns, name, tables in (
                (3, self.kernel_columns[s], "kernel_size", kernel_tables),
                (3 + n_stages, self.expand_columns[s], "expand_ratio", expand_tables),
            ):
                choices = getattr(stage, name)
                radix = _radix(np.full(len(columns), len(choices)))
                weights[columns, offset + s] = radix
                weights[self.depth_columns[s], offset + s] = len(choices) ** len(columns)
                tables.append(_LazyTuples(self._stage_tuple_maker(stage, choices, len(columns))))
        self._code_weights = weights
        width_sizes = self.sizes[self.width_columns]
        self._width_tuples = _LazyTuples(lambda code: _digits(code, width_sizes, self.space.width_choices))
        depth_sizes = self.sizes[self.depth_columns]
        depth_choices = [stage.depth for stage in stages]
        self._depth_tuples = _LazyTuples(lambda code: _digits(code, depth_sizes, depth_choices))
        self._kernel_tuples, self._expand_tuples = kernel_tables, expand_tables

    def _stage_tuple_maker(self, stage: StageSpec, choices: tuple, slots: int) -> Callable[[int], tuple]:
        def make(code: int) -> tuple:
            depth_index, genes = divmod(code, len(choices) ** slots)
            depth = stage.depth[depth_index]
            values = _digits(genes, [len(choices)] * slots, [choices] * slots)
            return values[:depth] if slots > 1 else values * depth

        return make

    @staticmethod
    def keys(rows: np.ndarray) -> list[bytes]:
        """One hashable key per row (equal rows, equal keys)."""
        compact = np.ascontiguousarray(rows, dtype=np.int16)
        return [row.tobytes() for row in compact]

    # --- activity and canonical form -----------------------------------------------------------------

    def depths(self, rows: np.ndarray) -> np.ndarray:
        """Active blocks per stage, shape (rows, stages)."""
        return self._depth_table[self._stage_range, rows[:, self.depth_columns]]

    def _slot_activity(self, rows: np.ndarray) -> np.ndarray:
        return self.depths(rows)[:, self._slot_stage] > self._slot_block

    def active_columns(self, rows: np.ndarray) -> np.ndarray:
        """Which columns of each row are choices of the arch (the slots of inactive blocks are not)."""
        active = np.ones(rows.shape, dtype=bool)
        if self.slots > 1:
            active[:, self._slots] = self._slot_activity(rows)
        return active

    @property
    def depth_values(self) -> np.ndarray:
        """Per stage, its depth choices (padded with 0 to the longest list)."""
        return self._depth_table

    @property
    def mac_tables(self) -> AdditiveTables:
        """The MAC tables ``macs`` adds up."""
        return self._mac_tables

    @property
    def block_positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per block position of the additive tables: its stage, its index in the stage, and the genome columns
        of its kernel size and expand ratio."""
        return self._position_stage, self._position_block, self._position_kernel, self._position_expand

    def canonical(self, rows: np.ndarray) -> np.ndarray:
        """Rows with the slots of inactive blocks set to 0 (in place; returned)."""
        if self.slots > 1:
            rows[:, self._slots] *= self._slot_activity(rows)
        return rows

    # --- operators -----------------------------------------------------------------------------------

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` rows drawn like ``SearchSpace.sample``: every choice uniform."""
        return self.canonical((rng.random((count, self.columns)) * self.sizes).astype(np.int64))

    def mutate(
        self,
        parents: np.ndarray,
        rng: np.random.Generator,
        prob: float,
        resolution_prob: float,
        which: np.ndarray | None = None,
    ) -> np.ndarray:
        """Children drawn like ``SearchSpace.mutate``: each choice resampled with ``prob`` (resolution with
        ``resolution_prob``); blocks that become active get uniform choices. Only the rows where ``which``
        (a boolean per row) is true are mutated; the others are copied."""
        probs = np.full(self.columns, prob)
        probs[0] = resolution_prob
        if which is not None:
            probs = probs * which[:, None]
        children = parents.copy()
        rows, columns = np.nonzero(rng.random(parents.shape, dtype=np.float32) < probs)
        children[rows, columns] = (rng.random(rows.size) * self.sizes[columns]).astype(np.int64)
        if self.slots > 1:
            woken = self._slot_activity(children) & ~self._slot_activity(parents)
            rows, slots = np.nonzero(woken)
            columns = self._slot_columns[slots]
            children[rows, columns] = (rng.random(rows.size) * self.sizes[columns]).astype(np.int64)
        return self.canonical(children)

    def crossover(self, first: np.ndarray, second: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Children drawn like ``SearchSpace.crossover``: each choice from either parent; a block's choices
        from a parent in which the block is active."""
        take_first = rng.integers(0, 2, size=first.shape, dtype=np.bool_)
        if self.slots > 1:  # a block's choices come from a parent where it is active
            slots = self._slots
            take_first[:, slots] &= self._slot_activity(first)
            take_first[:, slots] |= ~self._slot_activity(second)
        return self.canonical(np.where(take_first, first, second))

    # --- additive costs (MACs, table latencies) -------------------------------------------------------

    def _build_mac_tables(self) -> None:
        stages = self.space.stages
        positions = [(s, b) for s in range(len(stages)) for b in range(max(stages[s].depth))]
        self._position_stage = np.array([s for s, _ in positions], dtype=np.int64)
        self._position_block = np.array([b for _, b in positions], dtype=np.int64)
        slot = self._position_block if self.slots > 1 else np.zeros_like(self._position_block)
        self._position_kernel = self.kernel_columns[self._position_stage, slot]
        self._position_expand = self.expand_columns[self._position_stage, slot]
        self._position_input = self.width_columns[self._position_stage]
        self._position_output = self.width_columns[self._position_stage + 1]

        def base(count: Callable[[NetworkLayout], int]) -> Callable[[NetworkLayout], int]:
            return lambda layout: count(dataclasses.replace(layout, blocks=()))

        def block(count: Callable[[BlockLayout], int]) -> Callable[[NetworkLayout, BlockLayout], int]:
            return lambda layout, one: count(one)

        bases, blocks = [base(layout_macs), base(layout_params)], [block(block_macs), block(block_params)]
        tables = self._additive_tables(bases, blocks, np.int64)
        self._mac_tables, self._param_tables = tables
        self._mac_lists, self._param_lists = [(table.base.tolist(), table.flat.tolist()) for table in tables]
        self._stage_terms = self._single_arch_terms()
        self._stage_depths = tuple(frozenset(stage.depth) for stage in self.space.stages)
        self._build_features()

    def _build_features(self) -> None:
        """Value tables and column maps of ``features``: resolution, widths, depths, then per block position
        its kernel and expand columns interleaved."""
        self._values = np.zeros((self.columns, int(self.sizes.max())), dtype=np.float64)
        for column, choices in enumerate(self.choices):
            self._values[column, : len(choices)] = choices
        self._head_columns = np.arange(self.depth_columns[-1] + 1)
        self._feature_slot_columns = np.stack([self._position_kernel, self._position_expand], axis=1).ravel()
        self._feature_slot_stage = np.repeat(self._position_stage, 2)
        self._feature_slot_block = np.repeat(self._position_block, 2)

    def additive_tables(
        self,
        base_value: Callable[[NetworkLayout], float],
        block_value: Callable[[NetworkLayout, BlockLayout], float],
        dtype: type = np.float64,
    ) -> AdditiveTables:
        """Tables of a cost that is a sum over the stem + head and each active block.

        ``base_value(layout)`` is the stem + head term of a layout, ``block_value(layout, block)`` one
        block's term; a block's term may depend only on the resolution, its input and output widths, its
        kernel size, expand ratio and position (what a block's layout is made of). ``cost(rows, tables)``
        then adds them up for many rows at once.
        """
        return self._additive_tables([base_value], [block_value], dtype)[0]

    def _additive_tables(
        self,
        base_values: Sequence[Callable[[NetworkLayout], float]],
        block_values: Sequence[Callable[[NetworkLayout, BlockLayout], float]],
        dtype: type,
    ) -> list[AdditiveTables]:
        """The tables of several additive costs, from one pass over the layouts."""
        n_stages = len(self.space.stages)
        stage_tables = [self._stage_table(s, block_values, dtype) for s in range(n_stages)]
        offsets, strides, flat, start = [], [], [], 0
        for s, b in zip(self._position_stage.tolist(), self._position_block.tolist()):
            part = stage_tables[s][b]  # (*shape, costs)
            shape = part.shape[:-1]
            offsets.append(start)
            strides.append([int(np.prod(shape[i + 1 :])) for i in range(5)])
            flat.append(part.reshape(-1, part.shape[-1]))
            start += flat[-1].shape[0]
        base = self._base_table(base_values, dtype)
        every = np.concatenate(flat)
        offsets_array, strides_array = np.array(offsets, dtype=np.int64), np.array(strides, dtype=np.int64).T
        return [
            AdditiveTables(base=base[..., k], flat=every[:, k].copy(), offsets=offsets_array, strides=strides_array)
            for k in range(len(base_values))
        ]

    def _base_table(self, values: Sequence[Callable[[NetworkLayout], float]], dtype: type) -> np.ndarray:
        """Stem + head terms, indexed by (resolution, stem width, last stage width, head width, cost)."""
        space, stages = self.space, self.space.stages
        smallest = space.min_arch()
        base_shape = (len(space.resolution), len(space.stem.width), len(stages[-1].width), len(space.head.width))
        base = np.zeros((*base_shape, len(values)), dtype=dtype)
        for index in itertools.product(*(range(size) for size in base_shape)):
            width = list(smallest.width)
            width[0], width[-2], width[-1] = (
                space.stem.width[index[1]],
                stages[-1].width[index[2]],
                space.head.width[index[3]],
            )
            arch = dataclasses.replace(smallest, resolution=space.resolution[index[0]], width=tuple(width))
            layout = network_layout(space, arch, self.num_classes)
            base[index] = [value(layout) for value in values]
        return base

    def _stage_table(
        self, s: int, values: Sequence[Callable[[NetworkLayout, BlockLayout], float]], dtype: type
    ) -> np.ndarray:
        """Terms of stage ``s``'s blocks, indexed by (block, resolution, input width, output width, kernel,
        expand, cost); every block slot up to the largest depth of any stage."""
        space, stage = self.space, self.space.stages[s]
        smallest = space.min_arch()
        max_depth = max(max(other.depth) for other in space.stages)
        input_widths = space.width_choices[s]
        shape = (
            len(space.resolution),
            len(input_widths),
            len(stage.width),
            len(stage.kernel_size),
            len(stage.expand_ratio),
        )
        table = np.zeros((max_depth, *shape, len(values)), dtype=dtype)
        for index in itertools.product(*(range(size) for size in shape)):
            width = list(smallest.width)
            width[s], width[s + 1] = input_widths[index[1]], stage.width[index[2]]
            depth = list(smallest.depth)
            depth[s] = max(stage.depth)
            kernels, expands = list(smallest.kernel_size), list(smallest.expand_ratio)
            kernels[s] = (stage.kernel_size[index[3]],) * depth[s]
            expands[s] = (stage.expand_ratio[index[4]],) * depth[s]
            arch = Arch(space.resolution[index[0]], tuple(width), tuple(depth), tuple(kernels), tuple(expands))
            layout = network_layout(space, arch, self.num_classes)
            for block in layout.blocks:
                if block.stage == s:
                    table[(block.index, *index)] = [value(layout, block) for value in values]
        return table

    def cost(self, rows: np.ndarray, tables: AdditiveTables) -> np.ndarray:
        """The additive cost of canonical rows: stem + head term plus the terms of the active blocks."""
        resolution = rows[:, :1]
        width = rows[:, self.width_columns]
        total = tables.base[resolution[:, 0], width[:, 0], width[:, -2], width[:, -1]]
        index = (
            tables.offsets
            + resolution * tables.strides[0]
            + rows[:, self._position_input] * tables.strides[1]
            + rows[:, self._position_output] * tables.strides[2]
            + rows[:, self._position_kernel] * tables.strides[3]
            + rows[:, self._position_expand]
        )
        active = self.depths(rows)[:, self._position_stage] > self._position_block
        return total + (tables.flat[index] * active).sum(axis=1)

    def _single_arch_terms(self) -> tuple:
        """What ``_fast_cost`` needs, as plain Python: the index of every choice value, and per stage the strides
        of its block terms (resolution, input and output width), each block's offset and the offsets
        of its kernel sizes and expand ratios."""
        space, tables = self.space, self._mac_tables
        strides = tables.strides[:4, :].T.tolist()  # per block position; equal within a stage
        offsets = tables.offsets.tolist()
        stages = []
        for s, stage in enumerate(space.stages):
            positions = [p for p, stage_of in enumerate(self._position_stage.tolist()) if stage_of == s]
            kernel_stride = strides[positions[0]][3]
            kernel_terms = {kernel: k * kernel_stride for k, kernel in enumerate(stage.kernel_size)}
            expand_terms = {expand: e for e, expand in enumerate(stage.expand_ratio)}
            stage_offsets = [offsets[p] for p in positions]
            stages.append((strides[positions[0]][:3], stage_offsets, kernel_terms, expand_terms))
        resolution_index = {value: index for index, value in enumerate(space.resolution)}
        width_index = [{value: index for index, value in enumerate(choices)} for choices in space.width_choices]
        return resolution_index, width_index, stages

    def _refuse(self, arch: Arch) -> NoReturn:
        """Raise the ``ValueError`` of ``SearchSpace.validate`` for an arch ``_indices`` or ``_fast_cost`` refused."""
        self.space.validate(arch)  # raises, naming the field and its choices
        raise ValueError(f"arch {arch!r} cannot be counted in space {self.space.name!r}")

    def _fast_cost(self, arch: Arch, tables: tuple[list, list[int]]) -> int | None:
        """The cost of a valid arch; None for anything ``SearchSpace.validate`` would refuse."""
        if not self._well_formed(arch):
            return None
        base, flat = tables
        resolution_index, width_index, stages = self._stage_terms
        try:
            resolution = resolution_index[arch.resolution]
            width = [index[value] for index, value in zip(width_index, arch.width)]
            total = base[resolution][width[0]][width[-2]][width[-1]]
            terms = zip(stages, arch.kernel_size, arch.expand_ratio, width, width[1:])
            for (strides, offsets, kernel_terms, expand_terms), kernels, expands, inputs, outputs in terms:
                start = resolution * strides[0] + inputs * strides[1] + outputs * strides[2]
                for offset, kernel, expand in zip(offsets, kernels, expands):
                    total += flat[offset + start + kernel_terms[kernel] + expand_terms[expand]]
        except (KeyError, TypeError):
            return None
        return total

    def macs_of(self, arch: Arch) -> int:
        """Exact MACs of one arch (validated), as ``macs`` counts its row, in plain Python (a few microseconds;
        numpy's per-call overhead is larger)."""
        total = self._fast_cost(arch, self._mac_lists)
        return self._refuse(arch) if total is None else total

    def params_of(self, arch: Arch) -> int:
        """Exact parameters of one arch (validated), as ``params`` counts its row."""
        total = self._fast_cost(arch, self._param_lists)
        return self._refuse(arch) if total is None else total

    def macs(self, rows: np.ndarray) -> np.ndarray:
        """Exact MACs of canonical rows (int64), as ``ofa.flops.count_macs_many`` counts them."""
        return self.cost(rows, self._mac_tables)

    def params(self, rows: np.ndarray) -> np.ndarray:
        """Exact parameter counts of canonical rows (int64), as ``ofa.flops.count_params_many`` counts them."""
        return self.cost(rows, self._param_tables)

    def features(self, rows: np.ndarray) -> np.ndarray:
        """The accuracy predictors' encoding of canonical rows (``predictors.encoding.encode`` with derived
        costs, float64): the choice values, 0 in the kernel and expand slots of inactive blocks, then MMACs and
        millions of parameters."""
        head = self._values[self._head_columns, rows[:, self._head_columns]]
        slots = self._values[self._feature_slot_columns, rows[:, self._feature_slot_columns]]
        slots *= self.depths(rows)[:, self._feature_slot_stage] > self._feature_slot_block
        macs = self.macs(rows).astype(np.float64) / MACS_PER_MMAC
        params = self.params(rows).astype(np.float64) / MACS_PER_MMAC
        return np.column_stack([head, slots, macs, params])

    def mmacs(self, rows: np.ndarray) -> np.ndarray:
        """MMACs of canonical rows (float64)."""
        return self.macs(rows) / MACS_PER_MMAC

    # --- repair --------------------------------------------------------------------------------------

    def _shrunk(self, start: np.ndarray, steps: np.ndarray) -> np.ndarray:
        cycles, within = np.divmod(steps, self.columns)
        decrement = cycles[:, None] + (np.arange(self.columns) < within[:, None])
        return self.canonical(np.maximum(start - decrement, 0))

    def shrink(
        self,
        rows: np.ndarray,
        budget: float,
        tolerance: float = 1e-9,
        cost: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> np.ndarray:
        """Each row if within the budget, else a smaller row within it (deterministic).

        The budget is in MMACs, or in the unit of ``cost`` (rows -> costs) when given.

        The repair path of a row makes every choice one step smaller per round, column by column
        (resolution, widths, depths, kernel sizes, expand ratios), and ends at the smallest subnet after
        ``max index x columns`` steps. The position is found by doubling the steps until a probe fits,
        then bisecting; all rows are probed together, about ``2 log2(path length)`` rounds. Only probed
        rows within the budget (or the path's end, the smallest subnet) are returned.
        """
        cost = self.mmacs if cost is None else cost
        result = rows.copy()
        over = np.flatnonzero(cost(rows) > budget + tolerance)
        if over.size == 0:
            return result
        start = rows[over]
        length = start.max(axis=1) * self.columns
        low = np.zeros(over.size, dtype=np.int64)  # known over the budget
        high = np.full(over.size, -1, dtype=np.int64)  # known within it (-1: none yet)
        best = start.copy()
        while True:
            doubling = high < 0
            query = np.where(doubling, np.minimum(np.maximum(1, 2 * low), length), (low + high) // 2)
            ask = doubling | (high - low > 1)
            if not ask.any():
                break
            probes = self._shrunk(start[ask], query[ask])
            fits = (cost(probes) <= budget + tolerance) | (query[ask] >= length[ask])
            asked = np.flatnonzero(ask)
            high[asked[fits]] = query[asked[fits]]
            best[asked[fits]] = probes[fits]
            low[asked[~fits]] = query[asked[~fits]]
        result[over] = best
        return result


@functools.lru_cache(maxsize=16)
def _genome_of_equal(space: SearchSpace, num_classes: int) -> Genome:
    return Genome(space, num_classes)


# Genomes are derived, immutable data of a (frozen) space. Hashing a space costs about a microsecond, as much as a
# whole MAC count, so the last spaces asked for are also found by identity; each entry holds its space, so that
# the id cannot be reused while cached. Nothing observable depends on this cache.
_BY_IDENTITY: dict[tuple[int, int], tuple[SearchSpace, Genome]] = {}
_BY_IDENTITY_SIZE = 16


def genome_of(space: SearchSpace, num_classes: int) -> Genome:
    """The genome of ``space`` at ``num_classes``, built once (its MAC and parameter tables take up to a third of
    a second on the ImageNet spaces) and shared by the search, the predictors' encoding, the MAC counts and the
    latency tables."""
    entry = _BY_IDENTITY.get((id(space), num_classes))
    if entry is not None and entry[0] is space:
        return entry[1]
    genome = _genome_of_equal(space, num_classes)
    if len(_BY_IDENTITY) >= _BY_IDENTITY_SIZE:
        _BY_IDENTITY.clear()
    _BY_IDENTITY[id(space), num_classes] = (space, genome)
    return genome
