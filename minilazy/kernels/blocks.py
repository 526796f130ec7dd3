"""Block sizes for every kernel, chosen in one place.

On a GPU the configs are the few tuned ones listed here (and compiled ahead of
time by each module's COMPILE_CASES). In Triton's CPU interpreter every program
and loop step pays for each Triton op it runs while arithmetic is nearly free, so
interpreting picks blocks as large as the problem (few programs, few loop steps) instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from minilazy.kernels.backend import interpreting

# The interpreter rejects tensors above 2^20 elements; keep tiles well under it.
INTERPRETER_MAX_TILE = 256
INTERPRETER_MAX_ROW = 1 << 16


@dataclass(frozen=True)
class MatmulBlocks:
    """Tile of a matmul kernel: [block_m, block_k] x [block_k, block_n] per loop step.

    Programs run in groups of `group_m` row tiles sweeping the column tiles,
    so a wave of programs re-reads the same weight tiles from L2.
    """

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    group_m: int = 8


# Decode (few rows): a GEMV in disguise. The minimum tl.dot tile height (16)
# covers the rows; narrow N tiles give many programs, wide K tiles keep each
# program streaming weights. 32-bit tiles take half the K to fit shared memory.
LINEAR_DECODE_ROWS = 32
_DECODE = {2: MatmulBlocks(16, 32, 256, 4, 4), 4: MatmulBlocks(16, 32, 128, 4, 4)}
# Prefill: large square-ish tiles for tensor-core reuse.
_PREFILL = {2: MatmulBlocks(128, 128, 64, 8, 3), 4: MatmulBlocks(128, 128, 32, 8, 3)}


def linear_gpu_blocks(dtype: torch.dtype) -> list[MatmulBlocks]:
    """Every tile config `linear_blocks` can pick on a GPU for `dtype`."""
    size = torch.empty((), dtype=dtype).element_size()
    return [_DECODE[size], _PREFILL[size]]


def linear_blocks(m: int, n: int, k: int, dtype: torch.dtype) -> MatmulBlocks:
    """Tile config for an [m, k] x [k, n] matmul."""
    if interpreting():
        return MatmulBlocks(
            block_m=_fit(m, INTERPRETER_MAX_TILE),
            block_n=_fit(n, INTERPRETER_MAX_TILE),
            block_k=_fit(k, 128),
            num_warps=4,
            num_stages=1,
        )
    decode, prefill = linear_gpu_blocks(dtype)
    return decode if m <= LINEAR_DECODE_ROWS else prefill


@dataclass(frozen=True)
class RowBlocks:
    """Chunk of a row-wise kernel (norms, elementwise): block elements per loop step."""

    block: int
    num_warps: int


ROW_GPU_BLOCKS = RowBlocks(block=1024, num_warps=4)


def row_blocks(n_cols: int) -> RowBlocks:
    """Chunk size for a kernel that walks rows of `n_cols` elements."""
    if interpreting():
        return RowBlocks(block=_fit(n_cols, INTERPRETER_MAX_ROW), num_warps=4)
    return ROW_GPU_BLOCKS


@dataclass(frozen=True)
class RowTiles:
    """Tile of a kernel that handles several short rows per program: `[block_rows, block_cols]`."""

    block_rows: int
    block_cols: int
    num_warps: int

    def grid(self, n_rows: int) -> tuple[int]:
        return (triton.cdiv(n_rows, self.block_rows),)


def row_tiles(n_rows: int, n_cols: int) -> RowTiles:
    """Tiles for `n_rows` rows of `n_cols` elements: whole rows (padded to a power of two) per tile, as many as
    `row_blocks` puts in one loop step."""
    block_cols = triton.next_power_of_2(n_cols)
    blocks = row_blocks(n_rows * block_cols)
    return RowTiles(max(1, blocks.block // block_cols), block_cols, blocks.num_warps)


def _fit(size: int, largest: int) -> int:
    """The power of two covering `size` (at least 16, the smallest tl.dot tile), capped at `largest`."""
    return min(max(triton.next_power_of_2(size), 16), largest)
