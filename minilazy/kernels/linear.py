"""Linear layer with a fused activation: y = act(x @ weight.T + bias).

One tiled `tl.dot` kernel serves decode (a handful of rows, GEMV-like tiles)
and prefill (large tiles); `kernels.blocks.linear_blocks` picks the tiles. The
bias and activation are applied to the fp32 accumulator before the single
store. Activations follow transformers' definitions: "gelu" (erf), "gelu_tanh"
(gelu_pytorch_tanh), "quick_gelu" (CLIP) and "silu".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from minilazy.kernels.aot import CompileCase, pointer
from minilazy.kernels.backend import FLOAT_DTYPES, interpreting
from minilazy.kernels.blocks import linear_blocks, linear_gpu_blocks

# activation name -> code of the kernel epilogue
ACTIVATIONS = {None: 0, "gelu": 1, "gelu_tanh": 2, "quick_gelu": 3, "silu": 4}


# The activation is a runtime code: a uniform branch in the epilogue costs
# nothing, and keeps the compiled variants to dtype x bias x tile config.
@triton.jit(do_not_specialize=["activation"])
def _linear_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    M, N, K,
    stride_xm, stride_wn, stride_ym,
    activation,
    HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # Grouped order: GROUP_M row tiles x all column tiles per group, so
    # programs running together share rows of x and columns of the weight in L2.
    pid = tl.program_id(0)
    tiles_n = tl.cdiv(N, BLOCK_N)
    group_size = GROUP_M * tiles_n
    first_m = (pid // group_size) * GROUP_M
    group_m = tl.minimum(tl.cdiv(M, BLOCK_M) - first_m, GROUP_M)
    pid_m = first_m + (pid % group_size) % group_m
    pid_n = (pid % group_size) // group_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm  # [BLOCK_M, 1]
    w_cols = w_ptr + offs_n.to(tl.int64)[None, :] * stride_wn  # [1, BLOCK_N]

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs_k
        mask_k = k < K
        x = tl.load(x_rows + k[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        w = tl.load(w_cols + k[:, None], mask=mask_k[:, None] & mask_n[None, :], other=0.0)  # [BLOCK_K, BLOCK_N]
        if UPCAST:  # the interpreter computes bf16 wrongly; only loads and upcasts are exact
            x = x.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(x, w, acc, input_precision="ieee")

    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    if activation == 1:  # gelu, exact
        acc = 0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476))
    elif activation == 2:  # gelu_tanh; tanh(u) = 2 * sigmoid(2u) - 1 (libdevice tanh fails when interpreting)
        u = 0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)
        acc = 0.5 * acc * (1.0 + (2.0 / (1.0 + tl.exp(-2.0 * u)) - 1.0))
    elif activation == 3:  # quick_gelu
        acc = acc * tl.sigmoid(1.702 * acc)
    elif activation == 4:  # silu
        acc = acc * tl.sigmoid(acc)

    y_ptrs = y_ptr + offs_m.to(tl.int64)[:, None] * stride_ym + offs_n[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def _check(x, weight, bias, activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {list(ACTIVATIONS)}")
    if weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: x {tuple(x.shape)} needs weight [N, {x.shape[-1]}], got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"linear: bias must be [{weight.shape[0]}], got {tuple(bias.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"linear: dtype {x.dtype} unsupported; expected one of {FLOAT_DTYPES}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != x.dtype:
            raise ValueError(f"linear: {name} dtype {t.dtype} differs from x dtype {x.dtype}")
    if x.stride(-1) != 1 or weight.stride(-1) != 1 or (bias is not None and bias.stride(0) != 1):
        raise ValueError("linear: the last dimension of x, weight and bias must be contiguous")


def linear(x, weight, bias=None, activation=None):
    """act(x @ weight.T + bias) with the Triton kernel; x [..., K], weight [N, K] -> [..., N]."""
    _check(x, weight, bias, activation)
    n, k = weight.shape
    x2 = x.reshape(-1, k)  # [M, K], a view whenever the leading dims allow
    m = x2.shape[0]
    y = torch.empty((m, n), device=x.device, dtype=x.dtype)
    if m == 0:
        return y.reshape(*x.shape[:-1], n)  # [M, N] -> [..., N]
    blocks = linear_blocks(m, n, k, x.dtype)
    grid = (triton.cdiv(n, blocks.block_n) * triton.cdiv(m, blocks.block_m),)
    _linear_kernel[grid](
        x2, weight, bias if bias is not None else y, y,
        m, n, k,
        x2.stride(0), weight.stride(0), y.stride(0),
        ACTIVATIONS[activation],
        HAS_BIAS=bias is not None,
        UPCAST=interpreting() and x.dtype == torch.bfloat16,
        BLOCK_M=blocks.block_m, BLOCK_N=blocks.block_n, BLOCK_K=blocks.block_k,
        GROUP_M=blocks.group_m, num_warps=blocks.num_warps, num_stages=blocks.num_stages,
    )
    return y.reshape(*x.shape[:-1], n)  # [..., N]


def activation_ref(y, activation):
    """The activations exactly as transformers defines them."""
    if activation is None:
        return y
    if activation == "gelu":
        return F.gelu(y, approximate="none")
    if activation == "gelu_tanh":
        return F.gelu(y, approximate="tanh")
    if activation == "quick_gelu":
        return y * torch.sigmoid(1.702 * y)
    if activation == "silu":
        return F.silu(y)
    raise ValueError(f"unknown activation {activation!r}; expected one of {list(ACTIVATIONS)}")


def linear_ref(x, weight, bias=None, activation=None):
    """Torch reference of `linear`."""
    return activation_ref(F.linear(x, weight, bias), activation)


COMPILE_CASES = [
    CompileCase(
        kernel=_linear_kernel,
        signature={
            "x_ptr": pointer(dtype), "w_ptr": pointer(dtype), "b_ptr": pointer(dtype), "y_ptr": pointer(dtype),
            "M": "i32", "N": "i32", "K": "i32", "stride_xm": "i32", "stride_wn": "i32", "stride_ym": "i32",
            "activation": "i32",
        },
        constexprs={
            "HAS_BIAS": has_bias, "UPCAST": False,
            "BLOCK_M": b.block_m, "BLOCK_N": b.block_n, "BLOCK_K": b.block_k,
            "GROUP_M": b.group_m,
        },
        num_warps=b.num_warps,
        num_stages=b.num_stages,
    )
    for dtype in FLOAT_DTYPES
    for b in linear_gpu_blocks(dtype)
    for has_bias in (False, True)
]
