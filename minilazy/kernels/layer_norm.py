"""LayerNorm over the last dimension (the vision encoders' norm).

fp32 statistics whatever the input dtype, as torch's LayerNorm computes them;
the output is cast to x's dtype once at the end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from minilazy.kernels.aot import CompileCase, pointer
from minilazy.kernels.backend import FLOAT_DTYPES
from minilazy.kernels.blocks import ROW_GPU_BLOCKS, row_blocks


@triton.jit
def _layer_norm_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    D, stride_x, stride_y, eps,
    HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_x
    # Mean, then variance around it (two passes: no cancellation from E[x^2] - E[x]^2).
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK):
        offs = d0 + tl.arange(0, BLOCK)
        total += tl.load(x_row + offs, mask=offs < D, other=0.0).to(tl.float32)
    mean = tl.sum(total, axis=0) / D
    total_sq = tl.zeros((BLOCK,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK):
        offs = d0 + tl.arange(0, BLOCK)
        mask = offs < D
        centred = tl.where(mask, tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32) - mean, 0.0)
        total_sq += centred * centred
    rstd = tl.rsqrt(tl.sum(total_sq, axis=0) / D + eps)
    for d0 in range(0, D, BLOCK):
        offs = d0 + tl.arange(0, BLOCK)
        mask = offs < D
        x = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
        y = (x - mean) * rstd * tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            y += tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + row * stride_y + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def _check(x, weight, bias):
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"layer_norm: dtype {x.dtype} unsupported; expected one of {FLOAT_DTYPES}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if tuple(t.shape) != (x.shape[-1],) or t.dtype != x.dtype:
            raise ValueError(f"layer_norm: {name} must be [{x.shape[-1]}] {x.dtype}, got {tuple(t.shape)} {t.dtype}")
        if t.stride(0) != 1:
            raise ValueError(f"layer_norm: {name} must be contiguous")
    if x.stride(-1) != 1:
        raise ValueError("layer_norm: the last dimension of x must be contiguous")


def layer_norm(x, weight, bias, eps):
    """LayerNorm of x [..., D] with weight [D] and bias [D] (or None)."""
    _check(x, weight, bias)
    d = x.shape[-1]
    x2 = x.reshape(-1, d)  # [rows, D]
    y = torch.empty_like(x2)
    if x2.shape[0] > 0:
        blocks = row_blocks(d)
        _layer_norm_kernel[(x2.shape[0],)](
            x2, weight, bias if bias is not None else weight, y,
            d, x2.stride(0), y.stride(0), eps,
            HAS_BIAS=bias is not None, BLOCK=blocks.block, num_warps=blocks.num_warps,
        )
    return y.view(x.shape)  # [M, D] -> x's [..., D]


def layer_norm_ref(x, weight, bias, eps):
    """Torch reference of `layer_norm`."""
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


COMPILE_CASES = [
    CompileCase(
        kernel=_layer_norm_kernel,
        signature={
            "x_ptr": pointer(dtype), "w_ptr": pointer(dtype), "b_ptr": pointer(dtype), "y_ptr": pointer(dtype),
            "D": "i32", "stride_x": "i32", "stride_y": "i32", "eps": "fp32",
        },
        constexprs={"HAS_BIAS": has_bias, "BLOCK": ROW_GPU_BLOCKS.block},
        num_warps=ROW_GPU_BLOCKS.num_warps,
    )
    for dtype in FLOAT_DTYPES
    for has_bias in (False, True)
]
