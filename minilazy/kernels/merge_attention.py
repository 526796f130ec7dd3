"""Merge two partial attentions over disjoint key sets by their log-sum-exp.

With m = max(lse1, lse2): o = (e^(lse1-m) o1 + e^(lse2-m) o2) / (e^(lse1-m) + e^(lse2-m)).
A part with lse = -inf contributes nothing; when both are -inf the output is 0.
A lazy layer uses this to join its two passes (anchor queries over image keys,
own queries over text keys) into one softmax over all keys. `offset1 [H]`, when
given, is added to part 1's lse of every row of head h first (the lazy layer's
per-head mass correction of the inherited part; docs/lazy_attention.md).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from minilazy.kernels.aot import CompileCase, pointer
from minilazy.kernels.attention import head_block
from minilazy.kernels.backend import interpreting


@triton.jit
def _merge_attention_kernel(
    o1_ptr, lse1_ptr, o2_ptr, lse2_ptr, out_ptr, offset1_ptr,
    n_rows, head_dim, n_heads,
    stride_o1, stride_o2, stride_out,
    HAS_OFFSET: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_valid = rows < n_rows
    offs_d = tl.arange(0, BLOCK_D)
    mask = row_valid[:, None] & (offs_d[None, :] < head_dim)
    lse1 = tl.load(lse1_ptr + rows, mask=row_valid, other=float("-inf"))
    if HAS_OFFSET:  # rows are [..., H] flattened: row r is head r % H; -inf stays -inf
        lse1 += tl.load(offset1_ptr + rows % n_heads, mask=row_valid, other=0.0)
    lse2 = tl.load(lse2_ptr + rows, mask=row_valid, other=float("-inf"))
    m = tl.maximum(lse1, lse2)
    m = tl.where(m == float("-inf"), 0.0, m)  # both empty: weights exp(-inf) = 0, not NaN
    w1 = tl.exp(lse1 - m)
    w2 = tl.exp(lse2 - m)
    total = w1 + w2
    total = tl.where(total > 0.0, total, 1.0)
    o1 = tl.load(o1_ptr + rows[:, None] * stride_o1 + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    o2 = tl.load(o2_ptr + rows[:, None] * stride_o2 + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    out = (o1 * (w1 / total)[:, None]) + (o2 * (w2 / total)[:, None])
    tl.store(out_ptr + rows[:, None] * stride_out + offs_d[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


def gpu_merge_rows(block_d: int) -> int:
    """Rows per program on a GPU: 2048 elements (8 KB of fp32) per operand tile."""
    return max(1, 2048 // block_d)


def merge_blocks(block_d: int) -> int:
    """Rows per program: a big block when interpreting (few programs), GPU rows else."""
    return 128 if interpreting() else gpu_merge_rows(block_d)


def _check(o1, lse1, o2, lse2, offset1):
    if o1.shape != o2.shape or lse1.shape != lse2.shape or o1.shape[:-1] != lse1.shape:
        raise ValueError(f"expected o1, o2 of one shape [..., d] and lse1, lse2 of shape [...]; got "
                         f"{tuple(o1.shape)}, {tuple(lse1.shape)}, {tuple(o2.shape)}, {tuple(lse2.shape)}")
    if offset1 is not None and (offset1.shape != lse1.shape[-1:] or offset1.dtype != torch.float32):
        raise ValueError(f"offset1 must be fp32 of shape [H] = {tuple(lse1.shape[-1:])} (one per head, the last "
                         f"axis of lse1); got {offset1.dtype} {tuple(offset1.shape)}")
    if o1.dtype != o2.dtype:
        raise ValueError(f"o1 and o2 must share a dtype; got {o1.dtype}, {o2.dtype}")
    if lse1.dtype != torch.float32 or lse2.dtype != torch.float32:
        raise ValueError(f"lse1 and lse2 must be fp32; got {lse1.dtype}, {lse2.dtype}")


def merge_attention(o1, lse1, o2, lse2, offset1=None):
    """Triton merge of two partial attentions, part 1's lse shifted by `offset1 [H]` when given; returns o
    with o1's shape and dtype."""
    _check(o1, lse1, o2, lse2, offset1)
    head_dim = o1.shape[-1]
    # reshape (not view) so any strides work; a copy is made only when rows are not evenly strided
    o1_rows, o2_rows = o1.reshape(-1, head_dim), o2.reshape(-1, head_dim)  # [rows, d]
    lse1_rows, lse2_rows = lse1.reshape(-1).contiguous(), lse2.reshape(-1).contiguous()  # [rows]
    if o1_rows.stride(-1) != 1 or o2_rows.stride(-1) != 1:
        raise ValueError("the last dimension of o1 and o2 must be contiguous")
    out = torch.empty(o1_rows.shape, device=o1.device, dtype=o1.dtype)  # [rows, d]
    n_rows = out.shape[0]
    block_d = head_block(head_dim)
    block_r = merge_blocks(block_d)
    offsets = lse1_rows if offset1 is None else offset1.contiguous()  # a placeholder pointer without offsets
    _merge_attention_kernel[(triton.cdiv(n_rows, block_r),)](
        o1_rows, lse1_rows, o2_rows, lse2_rows, out, offsets, n_rows, head_dim, offsets.shape[0],
        o1_rows.stride(0), o2_rows.stride(0), out.stride(0),
        HAS_OFFSET=offset1 is not None, BLOCK_R=block_r, BLOCK_D=block_d,
    )
    return out.view(o1.shape)  # [M, d] -> o1's [..., d]


def merge_attention_ref(o1, lse1, o2, lse2, offset1=None):
    """Torch reference of `merge_attention`: the same formula in fp32, differentiable, 0 where both parts are empty."""
    if offset1 is not None:
        lse1 = lse1 + offset1  # [..., H] + [H]
    m = torch.maximum(lse1, lse2)
    m = torch.where(torch.isneginf(m), 0.0, m)  # both empty: weights exp(-inf) = 0, not NaN
    w1, w2 = torch.exp(lse1 - m)[..., None], torch.exp(lse2 - m)[..., None]  # [..., 1]
    total = torch.where(w1 + w2 > 0, w1 + w2, 1.0)
    return ((w1 * o1.float() + w2 * o2.float()) / total).to(o1.dtype)


def _compile_cases():
    cases = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        ptr = pointer(dtype)
        signature = {
            "o1_ptr": ptr, "lse1_ptr": "*fp32", "o2_ptr": ptr, "lse2_ptr": "*fp32", "out_ptr": ptr,
            "offset1_ptr": "*fp32", "n_rows": "i32", "head_dim": "i32", "n_heads": "i32",
            "stride_o1": "i32", "stride_o2": "i32", "stride_out": "i32",
        }
        for block_d in (64, 128, 256):
            for has_offset in (False, True):
                cases.append(CompileCase(_merge_attention_kernel, signature, dict(
                    HAS_OFFSET=has_offset, BLOCK_R=gpu_merge_rows(block_d), BLOCK_D=block_d)))
    return cases


COMPILE_CASES = _compile_cases()
