"""Rotary position embedding (Hugging Face "rotate half" form), in place or into a view.

`rope(x, positions, theta, out)` rotates every head of `x [B, T, nh, d]` by its
token's position: with `inv_freq[i] = 1 / theta^(2i/d)` and
`freqs = positions * inv_freq`, the first half of the head becomes
`x1 cos - x2 sin` and the second `x2 cos + x1 sin` (Llama's `apply_rotary_pos_emb`).
`out` may be any view with the same shape, e.g. one slot of the Q Cache ring
buffer, so a layer's post-RoPE queries land there without a copy.

Positions on several axes: with `positions [B, T, A]` and `sections` (A column
counts summing to d/2), column i of each half rotates by the position on the
axis whose section holds i. Qwen2-VL's multimodal RoPE (t, h, w; its config's
`mrope_section`) keeps the one frequency ladder over all columns; `axial=True`
gives each axis its own ladder over its columns, `1 / theta^(2j / (2 n_a))`,
as Qwen2-VL's vision tower rotates by (h, w).

Matching Hugging Face to ~1e-6 needs the same fp32 `freqs`: one ulp of an angle
near 2000 rad is already 1e-4. So `inv_freq` is computed by exactly Hugging
Face's torch expression (for the kernel once per layout and device), the kernel rounds
`positions * inv_freq` to fp32 like it does, takes cos/sin with libdevice's
full-range `cosf`/`sinf` (what `tl.cos`/`tl.sin` compile to on NVIDIA GPUs),
and casts them to x's dtype before multiplying, as Hugging Face does.
"""

from __future__ import annotations

import functools
import itertools

import torch
import triton
import triton.language as tl

from minilazy.kernels.aot import CompileCase, pointer
from minilazy.kernels.backend import FLOAT_DTYPES
from minilazy.kernels.blocks import ROW_GPU_BLOCKS, row_tiles


@triton.jit
def _rope_kernel(
    x_ptr, out_ptr, pos_ptr, inv_freq_ptr, axis_ptr,
    n_rows, T, H, half,
    stride_xb, stride_xt, stride_xh,
    stride_ob, stride_ot, stride_oh,
    stride_pb, stride_pt, stride_pa,
    BLOCK_ROWS: tl.constexpr, BLOCK_HALF: tl.constexpr, ONE_AXIS: tl.constexpr,
):
    # One row is one head of one token: rows enumerate (b, t, h) with h fastest.
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_HALF)
    row_mask = rows < n_rows
    col_mask = cols < half
    mask = row_mask[:, None] & col_mask[None, :]
    h = rows % H
    t = (rows // H) % T
    b = rows // (H * T)

    inv_freq = tl.load(inv_freq_ptr + cols, mask=col_mask, other=0.0)
    pos_row = pos_ptr + b * stride_pb + t * stride_pt
    if ONE_AXIS:  # plain RoPE: one position per row
        pos = tl.load(pos_row, mask=row_mask, other=0).to(tl.float32)[:, None]  # [BLOCK_ROWS, 1]
    else:  # each column rotates by the position on its axis
        axis = tl.load(axis_ptr + cols, mask=col_mask, other=0)
        pos = tl.load(pos_row[:, None] + axis[None, :] * stride_pa, mask=mask, other=0).to(tl.float32)
    freqs = pos * inv_freq[None, :]  # [BLOCK_ROWS, BLOCK_HALF], rounded to fp32 like HF
    # HF casts cos and sin to x's dtype before multiplying.
    cos = tl.cos(freqs).to(x_ptr.dtype.element_ty).to(tl.float32)
    sin = tl.sin(freqs).to(x_ptr.dtype.element_ty).to(tl.float32)

    x_row = x_ptr + b * stride_xb + t * stride_xt + h * stride_xh
    x1 = tl.load(x_row[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_row[:, None] + half + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    out_row = out_ptr + b * stride_ob + t * stride_ot + h * stride_oh
    out_ty = out_ptr.dtype.element_ty
    tl.store(out_row[:, None] + cols[None, :], (x1 * cos - x2 * sin).to(out_ty), mask=mask)
    tl.store(out_row[:, None] + half + cols[None, :], (x2 * cos + x1 * sin).to(out_ty), mask=mask)


def inv_freq(theta: float, d: int, device: torch.device) -> torch.Tensor:
    """`1 / theta^(arange(0, d, 2) / d)` in fp32, computed on the CPU exactly as transformers does."""
    return (1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float) / d))).to(device)


def rope_columns(theta: float, d: int, sections: tuple[int, ...] | None, axial: bool,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column of a half head: its inverse frequency `[d/2]` fp32 and its position axis `[d/2]` int32."""
    if sections is None:
        return inv_freq(theta, d, device), torch.zeros(d // 2, dtype=torch.int32, device=device)
    if axial:
        freqs = torch.cat([inv_freq(theta, 2 * n, torch.device("cpu")) for n in sections])  # [d/2]
    else:
        freqs = inv_freq(theta, d, torch.device("cpu"))  # [d/2]
    axis = torch.repeat_interleave(torch.arange(len(sections), dtype=torch.int32), torch.tensor(sections))  # [d/2]
    return freqs.to(device), axis.to(device)


cached_rope_columns = functools.lru_cache(maxsize=None)(rope_columns)  # no host-to-device copy per launch


def check_rope(x: torch.Tensor, positions: torch.Tensor, theta: float, out: torch.Tensor | None,
               sections: tuple[int, ...] | None = None) -> None:
    if x.dim() != 4:
        raise ValueError(f"rope: x must be [B, T, heads, head_dim], got shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"rope: x must be fp32, fp16 or bf16, got {x.dtype}")
    if x.shape[-1] % 2:
        raise ValueError(f"rope: head_dim must be even, got {x.shape[-1]}")
    if sections is None:
        if tuple(positions.shape) != tuple(x.shape[:2]):
            raise ValueError(f"rope: positions must be [B, T] = {tuple(x.shape[:2])}, got {tuple(positions.shape)}")
    else:
        if sum(sections) != x.shape[-1] // 2 or min(sections) < 1:
            raise ValueError(f"rope: sections {tuple(sections)} must be positive and sum to head_dim/2 = "
                             f"{x.shape[-1] // 2}")
        expected = (*x.shape[:2], len(sections))
        if tuple(positions.shape) != expected:
            raise ValueError(f"rope: positions must be [B, T, axes] = {expected}, got {tuple(positions.shape)}")
    if positions.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"rope: positions must be int32 or int64, got {positions.dtype}")
    if not theta > 0:
        raise ValueError(f"rope: theta must be positive, got {theta}")
    if out is not None and (out.shape != x.shape or out.dtype != x.dtype or out.device != x.device):
        raise ValueError(
            f"rope: out must match x ({tuple(x.shape)}, {x.dtype}, {x.device}), "
            f"got ({tuple(out.shape)}, {out.dtype}, {out.device})"
        )


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float, out: torch.Tensor | None = None,
         sections: tuple[int, ...] | None = None, axial: bool = False) -> torch.Tensor:
    """Rotary embedding of `x [B, T, nh, d]` at `positions [B, T]` (or `[B, T, A]` with `sections`),
    written into `out` (returned)."""
    check_rope(x, positions, theta, out, sections)
    if out is None:
        out = torch.empty_like(x)
    if x.stride(-1) != 1 or out.stride(-1) != 1:
        raise ValueError(f"rope: the last dim of x and out must be contiguous, got strides {x.stride()}, {out.stride()}")
    B, T, H, d = x.shape
    n_rows = B * T * H
    if n_rows == 0:
        return out
    sections = None if sections is None else tuple(sections)
    freqs, axis = cached_rope_columns(float(theta), d, sections, axial, x.device)
    tiles = row_tiles(n_rows, d // 2)
    _rope_kernel[tiles.grid(n_rows)](
        x, out, positions, freqs, axis,
        n_rows, T, H, d // 2,
        x.stride(0), x.stride(1), x.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        positions.stride(0), positions.stride(1), 0 if sections is None else positions.stride(2),
        BLOCK_ROWS=tiles.block_rows, BLOCK_HALF=tiles.block_cols, ONE_AXIS=sections is None, num_warps=tiles.num_warps,
    )
    return out


def rope_ref(x: torch.Tensor, positions: torch.Tensor, theta: float, out: torch.Tensor | None = None,
             sections: tuple[int, ...] | None = None, axial: bool = False) -> torch.Tensor:
    """Torch reference of `rope`: transformers' Llama rotary embedding, `x * cos + rotate_half(x) * sin`."""
    check_rope(x, positions, theta, out, sections)
    half = x.shape[-1] // 2
    freqs, axis = rope_columns(float(theta), 2 * half, sections, axial, positions.device)
    if sections is None:
        angles = positions[..., None].float() * freqs  # [B, T, d/2]
    else:
        angles = positions[..., axis.long()].float() * freqs  # [B, T, d/2]: each column's axis
    emb = torch.cat((angles, angles), dim=-1)[:, :, None, :]  # [B, T, 1, d]
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    rotate_half = torch.cat((-x[..., half:], x[..., :half]), dim=-1)  # [B, T, nh, d]
    rotated = x * cos + rotate_half * sin
    if out is None:
        return rotated
    return out.copy_(rotated)


def _compile_cases() -> list[CompileCase]:
    cases = []
    for dtype in FLOAT_DTYPES:
        for pos_dtype in ("*i32", "*i64"):
            # head_dim up to 64 (SmolVLM), 128 (Llama, LLaVA, Qwen2-VL's decoder and vision tower) and 256.
            for block_half, one_axis in itertools.product((32, 64, 128), (True, False)):
                ptr = pointer(dtype)
                signature = {
                    "x_ptr": ptr, "out_ptr": ptr, "pos_ptr": pos_dtype, "inv_freq_ptr": "*fp32", "axis_ptr": "*i32",
                    **{name: "i32" for name in ("n_rows", "T", "H", "half")},
                    **{f"stride_{s}": "i32" for s in ("xb", "xt", "xh", "ob", "ot", "oh", "pb", "pt", "pa")},
                }
                constexprs = {"BLOCK_ROWS": ROW_GPU_BLOCKS.block // block_half, "BLOCK_HALF": block_half,
                              "ONE_AXIS": one_axis}
                cases.append(CompileCase(_rope_kernel, signature, constexprs, num_warps=ROW_GPU_BLOCKS.num_warps))
    return cases


COMPILE_CASES = _compile_cases()
