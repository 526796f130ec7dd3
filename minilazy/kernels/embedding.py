"""Token embedding lookup and the merge of image features into the embedded prompt.

Both are copies of whole rows through an index, so one kernel serves both:
`embedding` gathers (`out[i] = table[ids[i]]`) and `merge_image_features`
scatters (`embeds[rows[i]] = features[i]`). Indices are checked on the host so a
bad token id is a clear ValueError instead of a read out of bounds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from minilazy.kernels.aot import CompileCase, pointer
from minilazy.kernels.backend import FLOAT_DTYPES, interpreting
from minilazy.kernels.blocks import ROW_GPU_BLOCKS, row_blocks

INDEX_DTYPES = (torch.int32, torch.int64)
GPU_BLOCK_D = 256  # columns per tile on a GPU; ROW_GPU_BLOCKS.block // GPU_BLOCK_D rows


@triton.jit
def _copy_rows_kernel(
    src_ptr, dst_ptr, index_ptr,
    n_rows, D, stride_src, stride_dst,
    INDEX_SRC: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # Row i copies src[index[i]] -> dst[i] when INDEX_SRC (gather), else src[i] -> dst[index[i]].
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_mask = rows < n_rows
    mask = row_mask[:, None] & (cols < D)[None, :]
    index = tl.load(index_ptr + rows, mask=row_mask, other=0).to(tl.int64)
    rows = rows.to(tl.int64)
    if INDEX_SRC:
        src_rows, dst_rows = index, rows
    else:
        src_rows, dst_rows = rows, index
    values = tl.load(src_ptr + src_rows[:, None] * stride_src + cols[None, :], mask=mask)
    tl.store(dst_ptr + dst_rows[:, None] * stride_dst + cols[None, :], values, mask=mask)


def _copy_rows(src: torch.Tensor, dst: torch.Tensor, index: torch.Tensor, index_src: bool) -> None:
    n_rows, D = index.numel(), src.shape[1]
    if n_rows == 0:
        return
    # On a GPU one tile shape serves every width; interpreting, a tile spans the whole row.
    blocks = row_blocks(n_rows * triton.next_power_of_2(D))
    block_d = min(triton.next_power_of_2(D), blocks.block) if interpreting() else GPU_BLOCK_D
    block_rows = max(1, blocks.block // block_d)
    grid = (triton.cdiv(n_rows, block_rows), triton.cdiv(D, block_d))
    _copy_rows_kernel[grid](
        src, dst, index, n_rows, D, src.stride(0), dst.stride(0),
        INDEX_SRC=index_src, BLOCK_ROWS=block_rows, BLOCK_D=block_d, num_warps=blocks.num_warps,
    )


def _check_index(what: str, index: torch.Tensor, size: int) -> None:
    """Every entry of `index` must be in [0, size)."""
    if index.dtype not in INDEX_DTYPES:
        raise ValueError(f"{what} must be int32 or int64, got {index.dtype}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= size):
        raise ValueError(f"{what} must lie in [0, {size}), got values in [{int(index.min())}, {int(index.max())}]")


def _check_rows(what: str, t: torch.Tensor) -> None:
    if t.dim() != 2 or t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{what} must be a 2-D fp32/fp16/bf16 tensor, got {tuple(t.shape)} {t.dtype}")


def _check_embedding(ids: torch.Tensor, table: torch.Tensor) -> None:
    _check_rows("embedding: table [V, D]", table)
    _check_index("embedding: ids", ids, table.shape[0])


def embedding(ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rows of `table [V, D]` for `ids [...]`: returns `[..., D]`."""
    _check_embedding(ids, table)
    if table.stride(1) != 1:
        raise ValueError(f"embedding: the last dim of table must be contiguous, got strides {table.stride()}")
    flat_ids = ids.reshape(-1)  # [N]
    out = torch.empty(flat_ids.numel(), table.shape[1], dtype=table.dtype, device=table.device)  # [N, D]
    _copy_rows(table, out, flat_ids, index_src=True)
    return out.view(*ids.shape, table.shape[1])  # [..., D]


def embedding_ref(ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Torch reference of `embedding` (differentiable through `table`)."""
    _check_embedding(ids, table)
    return F.embedding(ids, table)


def _check_merge(embeds: torch.Tensor, features: torch.Tensor, rows: torch.Tensor) -> None:
    if embeds.dim() != 3 or not embeds.is_contiguous():
        raise ValueError(f"merge_image_features: embeds must be a contiguous [B, T, D] tensor, got {tuple(embeds.shape)}")
    _check_rows("merge_image_features: features [N, D]", features)
    if features.shape[1] != embeds.shape[2] or features.dtype != embeds.dtype:
        raise ValueError(
            f"merge_image_features: features must be [N, {embeds.shape[2]}] {embeds.dtype} like embeds, "
            f"got {tuple(features.shape)} {features.dtype}"
        )
    if rows.shape != (features.shape[0],):
        raise ValueError(f"merge_image_features: rows must be [{features.shape[0]}], got {tuple(rows.shape)}")
    _check_index("merge_image_features: rows", rows, embeds.shape[0] * embeds.shape[1])


def merge_image_features(embeds: torch.Tensor, features: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """In place `embeds.view(-1, D)[rows[i]] = features[i]`; returns `embeds`."""
    _check_merge(embeds, features, rows)
    if features.stride(1) != 1:
        raise ValueError(f"merge_image_features: the last dim of features must be contiguous, got {features.stride()}")
    _copy_rows(features, embeds.view(-1, embeds.shape[2]), rows, index_src=False)  # into [B*T, D]
    return embeds


def merge_image_features_ref(embeds: torch.Tensor, features: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Torch reference of `merge_image_features`."""
    _check_merge(embeds, features, rows)
    embeds.view(-1, embeds.shape[2]).index_copy_(0, rows.long(), features)  # into [B*T, D]
    return embeds


def _compile_cases() -> list[CompileCase]:
    cases = []
    for dtype in FLOAT_DTYPES:
        for index_dtype in ("*i32", "*i64"):
            for index_src in (True, False):
                signature = {
                    "src_ptr": pointer(dtype), "dst_ptr": pointer(dtype), "index_ptr": index_dtype,
                    "n_rows": "i32", "D": "i32", "stride_src": "i32", "stride_dst": "i32",
                }
                constexprs = {
                    "INDEX_SRC": index_src,
                    "BLOCK_ROWS": max(1, ROW_GPU_BLOCKS.block // GPU_BLOCK_D),
                    "BLOCK_D": GPU_BLOCK_D,
                }
                cases.append(CompileCase(_copy_rows_kernel, signature, constexprs, num_warps=ROW_GPU_BLOCKS.num_warps))
    return cases


COMPILE_CASES = _compile_cases()
