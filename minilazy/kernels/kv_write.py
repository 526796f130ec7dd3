"""Writing new keys or values into a preallocated cache at given slots.

`kv_write(cache, new, slots)` stores `new[b, t]` (all G heads of one token) at
`cache[b, slots[b, t]]`. A negative slot marks a padding token of a ragged batch
and is skipped, so one launch serves every sequence of the batch. Slots past the
cache are a ValueError on the host: the cache never grows during generation.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from minilazy.kernels.aot import CompileCase, pointer
from minilazy.kernels.backend import FLOAT_DTYPES
from minilazy.kernels.blocks import ROW_GPU_BLOCKS, row_tiles


@triton.jit
def _kv_write_kernel(
    cache_ptr, new_ptr, slots_ptr,
    n_rows, T, G, d,
    stride_cb, stride_cs, stride_cg,
    stride_nb, stride_nt, stride_ng,
    stride_sb, stride_st,
    BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # One row is one head of one new token: rows enumerate (b, t, g) with g fastest.
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_D)
    g = rows % G
    t = (rows // G) % T
    b = rows // (G * T)
    slot = tl.load(slots_ptr + b * stride_sb + t * stride_st, mask=rows < n_rows, other=-1).to(tl.int64)
    row_mask = (rows < n_rows) & (slot >= 0)  # negative slot: padding, nothing to write
    mask = row_mask[:, None] & (cols < d)[None, :]
    values = tl.load(new_ptr + (b * stride_nb + t * stride_nt + g * stride_ng)[:, None] + cols[None, :], mask=mask)
    # int64 slot makes the cache offset 64-bit: a whole-model cache can exceed 2^31 elements.
    cache_row = cache_ptr + b * stride_cb + slot * stride_cs + g * stride_cg
    tl.store(cache_row[:, None] + cols[None, :], values, mask=mask)


def check_kv_write(cache: torch.Tensor, new: torch.Tensor, slots: torch.Tensor) -> None:
    if cache.dim() != 4 or new.dim() != 4:
        raise ValueError(
            f"kv_write: cache must be [B, S, G, d] and new [B, T, G, d], got {tuple(cache.shape)} and {tuple(new.shape)}"
        )
    B, T, G, d = new.shape
    if cache.shape[0] != B or cache.shape[2:] != new.shape[2:]:
        raise ValueError(f"kv_write: cache {tuple(cache.shape)} does not match new {tuple(new.shape)} in B, G or d")
    if cache.dtype != new.dtype or cache.dtype not in FLOAT_DTYPES:
        raise ValueError(f"kv_write: cache and new must share one of fp32/fp16/bf16, got {cache.dtype} and {new.dtype}")
    if tuple(slots.shape) != (B, T) or slots.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"kv_write: slots must be int32/int64 [{B}, {T}], got {slots.dtype} {tuple(slots.shape)}")


def check_slots(slots: torch.Tensor, n_slots: int) -> None:
    if slots.numel() and int(slots.max()) >= n_slots:
        raise ValueError(f"kv_write: slot {int(slots.max())} is past the cache's {n_slots} slots")


def kv_write(cache: torch.Tensor, new: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """In place `cache[b, slots[b, t]] = new[b, t]` for every slot >= 0; returns `cache`."""
    check_kv_write(cache, new, slots)
    check_slots(slots, cache.shape[1])
    if cache.stride(-1) != 1 or new.stride(-1) != 1:
        raise ValueError(f"kv_write: the last dim of cache and new must be contiguous, got {cache.stride()}, {new.stride()}")
    B, T, G, d = new.shape
    n_rows = B * T * G
    if n_rows == 0:
        return cache
    tiles = row_tiles(n_rows, d)
    _kv_write_kernel[tiles.grid(n_rows)](
        cache, new, slots,
        n_rows, T, G, d,
        cache.stride(0), cache.stride(1), cache.stride(2),
        new.stride(0), new.stride(1), new.stride(2),
        slots.stride(0), slots.stride(1),
        BLOCK_ROWS=tiles.block_rows, BLOCK_D=tiles.block_cols, num_warps=tiles.num_warps,
    )
    return cache


def kv_write_ref(cache: torch.Tensor, new: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Torch reference of `kv_write`: an in-place index_put_, differentiable through `new`."""
    check_kv_write(cache, new, slots)
    check_slots(slots, cache.shape[1])
    keep = slots >= 0  # [B, T]
    batch = torch.arange(slots.shape[0], device=slots.device)[:, None].expand_as(slots)  # [B, T]
    return cache.index_put_((batch[keep], slots[keep].long()), new[keep])  # new[keep]: [M, G, d]


def _compile_cases() -> list[CompileCase]:
    cases = []
    for dtype in FLOAT_DTYPES:
        for slots_dtype in ("*i32", "*i64"):
            # head_dim 64 (SmolVLM), 128 (Llama, LLaVA) and 256.
            for block_d in (64, 128, 256):
                signature = {
                    "cache_ptr": pointer(dtype), "new_ptr": pointer(dtype), "slots_ptr": slots_dtype,
                    **{name: "i32" for name in ("n_rows", "T", "G", "d")},
                    **{f"stride_{s}": "i32" for s in ("cb", "cs", "cg", "nb", "nt", "ng", "sb", "st")},
                }
                constexprs = {"BLOCK_ROWS": ROW_GPU_BLOCKS.block // block_d, "BLOCK_D": block_d}
                cases.append(CompileCase(_kv_write_kernel, signature, constexprs, num_warps=ROW_GPU_BLOCKS.num_warps))
    return cases


COMPILE_CASES = _compile_cases()
