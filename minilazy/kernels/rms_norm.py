"""RMSNorm as Llama defines it, optionally fused with the residual add before it.

`rms_norm(x, weight, eps)` = weight * (x * rsqrt(mean(x^2) + eps)) with fp32
statistics, the normalised row cast back to x's dtype before the weight
multiply (transformers' LlamaRMSNorm). With `residual`, h = x + residual is
rounded to x's dtype, stored, and normalised: one pass over memory instead of
an add kernel plus a norm kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from minilazy.kernels.aot import CompileCase, pointer
from minilazy.kernels.backend import FLOAT_DTYPES
from minilazy.kernels.blocks import ROW_GPU_BLOCKS, row_blocks


@triton.jit
def _summed_chunk(x_ptr, r_ptr, row, stride_x, stride_r, offs, mask, dtype, HAS_RESIDUAL: tl.constexpr):
    """One chunk of h = x (+ residual, rounded to x's dtype), in fp32."""
    h = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        r = tl.load(r_ptr + row * stride_r + offs, mask=mask, other=0.0).to(tl.float32)
        h = (h + r).to(dtype).to(tl.float32)
    return h


@triton.jit
def _rms_norm_kernel(
    x_ptr, r_ptr, w_ptr, y_ptr, h_ptr,
    D, stride_x, stride_r, stride_y, stride_h, eps,
    HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    dtype = y_ptr.dtype.element_ty
    # Pass 1: sum of squares (and h = x + residual, rounded and stored).
    sum_sq = tl.zeros((BLOCK,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK):
        offs = d0 + tl.arange(0, BLOCK)
        mask = offs < D
        h = _summed_chunk(x_ptr, r_ptr, row, stride_x, stride_r, offs, mask, dtype, HAS_RESIDUAL)
        if HAS_RESIDUAL:
            tl.store(h_ptr + row * stride_h + offs, h.to(dtype), mask=mask)
        sum_sq += h * h
    rstd = tl.rsqrt(tl.sum(sum_sq, axis=0) / D + eps)
    # Pass 2: normalise. h is recomputed from the inputs (cached reads) rather
    # than read back from h_ptr, so no ordering between the two passes is needed.
    for d0 in range(0, D, BLOCK):
        offs = d0 + tl.arange(0, BLOCK)
        mask = offs < D
        h = _summed_chunk(x_ptr, r_ptr, row, stride_x, stride_r, offs, mask, dtype, HAS_RESIDUAL)
        w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        normed = (h * rstd).to(dtype).to(tl.float32)
        tl.store(y_ptr + row * stride_y + offs, (w * normed).to(dtype), mask=mask)


def _check(x, weight, residual):
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"rms_norm: dtype {x.dtype} unsupported; expected one of {FLOAT_DTYPES}")
    if tuple(weight.shape) != (x.shape[-1],) or weight.dtype != x.dtype:
        raise ValueError(
            f"rms_norm: weight must be [{x.shape[-1]}] {x.dtype}, got {tuple(weight.shape)} {weight.dtype}"
        )
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype):
        raise ValueError(
            f"rms_norm: residual must match x {tuple(x.shape)} {x.dtype}, "
            f"got {tuple(residual.shape)} {residual.dtype}"
        )
    for t in (x, weight, residual):
        if t is not None and t.stride(-1) != 1:
            raise ValueError("rms_norm: the last dimension of x, weight and residual must be contiguous")


def rms_norm(x, weight, eps, residual=None):
    """Llama RMSNorm over the last dim; with `residual` returns (rms_norm(x + residual), x + residual)."""
    _check(x, weight, residual)
    d = x.shape[-1]
    x2 = x.reshape(-1, d)  # [rows, D]
    r2 = residual.reshape(-1, d) if residual is not None else x2  # [rows, D]
    y = torch.empty_like(x2)
    h = torch.empty_like(x2) if residual is not None else y
    if x2.shape[0] > 0:
        blocks = row_blocks(d)
        _rms_norm_kernel[(x2.shape[0],)](
            x2, r2, weight, y, h,
            d, x2.stride(0), r2.stride(0), y.stride(0), h.stride(0), eps,
            HAS_RESIDUAL=residual is not None, BLOCK=blocks.block, num_warps=blocks.num_warps,
        )
    if residual is None:
        return y.view(x.shape)  # [M, D] -> x's [..., D]
    return y.view(x.shape), h.view(x.shape)  # [M, D] -> x's [..., D] each


def rms_norm_ref(x, weight, eps, residual=None):
    """Torch reference of `rms_norm`: transformers' LlamaRMSNorm.forward, of `x + residual` when given."""
    h = x if residual is None else x + residual
    variance = h.float().pow(2).mean(-1, keepdim=True)
    y = weight * (h.float() * torch.rsqrt(variance + eps)).to(h.dtype)
    return y if residual is None else (y, h)


COMPILE_CASES = [
    CompileCase(
        kernel=_rms_norm_kernel,
        signature={
            "x_ptr": pointer(dtype), "r_ptr": pointer(dtype), "w_ptr": pointer(dtype),
            "y_ptr": pointer(dtype), "h_ptr": pointer(dtype),
            "D": "i32", "stride_x": "i32", "stride_r": "i32", "stride_y": "i32", "stride_h": "i32", "eps": "fp32",
        },
        constexprs={"HAS_RESIDUAL": has_residual, "BLOCK": ROW_GPU_BLOCKS.block},
        num_warps=ROW_GPU_BLOCKS.num_warps,
    )
    for dtype in FLOAT_DTYPES
    for has_residual in (False, True)
]
