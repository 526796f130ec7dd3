"""SwiGLU gating: silu(gate) * up, the middle of a Llama MLP.

`gate` and `up` may be strided views of one fused [..., 2I] projection; only
their last dimension must be contiguous. Rounding follows transformers:
silu(gate) is rounded to the input dtype before the multiply.
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
def _swiglu_kernel(g_ptr, u_ptr, y_ptr, I, stride_g, stride_u, stride_y, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < I
    g = tl.load(g_ptr + row * stride_g + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + row * stride_u + offs, mask=mask, other=0.0).to(tl.float32)
    dtype = y_ptr.dtype.element_ty
    silu = (g * tl.sigmoid(g)).to(dtype).to(tl.float32)
    tl.store(y_ptr + row * stride_y + offs, (silu * u).to(dtype), mask=mask)


def swiglu(gate, up):
    """silu(gate) * up for gate, up [..., I] -> [..., I] (contiguous)."""
    if gate.shape != up.shape or gate.dtype != up.dtype:
        raise ValueError(
            f"swiglu: gate {tuple(gate.shape)} {gate.dtype} and up {tuple(up.shape)} {up.dtype} must match"
        )
    if gate.dtype not in FLOAT_DTYPES:
        raise ValueError(f"swiglu: dtype {gate.dtype} unsupported; expected one of {FLOAT_DTYPES}")
    if gate.stride(-1) != 1 or up.stride(-1) != 1:
        raise ValueError("swiglu: the last dimension of gate and up must be contiguous")
    width = gate.shape[-1]
    g2 = gate.reshape(-1, width)  # [rows, I], a view for slices of a fused [rows, 2I]
    u2 = up.reshape(-1, width)  # [rows, I]
    y = torch.empty(g2.shape, device=gate.device, dtype=gate.dtype)
    if y.numel() > 0:
        blocks = row_blocks(width)
        grid = (g2.shape[0], triton.cdiv(width, blocks.block))
        _swiglu_kernel[grid](
            g2, u2, y, width, g2.stride(0), u2.stride(0), y.stride(0),
            BLOCK=blocks.block, num_warps=blocks.num_warps,
        )
    return y.view(gate.shape)  # [M, I] -> gate's [..., I]


def swiglu_ref(gate, up):
    """Torch reference of `swiglu`."""
    return F.silu(gate) * up


COMPILE_CASES = [
    CompileCase(
        kernel=_swiglu_kernel,
        signature={
            "g_ptr": pointer(dtype), "u_ptr": pointer(dtype), "y_ptr": pointer(dtype),
            "I": "i32", "stride_g": "i32", "stride_u": "i32", "stride_y": "i32",
        },
        constexprs={"BLOCK": ROW_GPU_BLOCKS.block},
        num_warps=ROW_GPU_BLOCKS.num_warps,
    )
    for dtype in FLOAT_DTYPES
]
