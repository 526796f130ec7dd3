"""The pieces of the Qwen2-VL / Qwen2.5-VL vision tower: patch grids, attention segments, one block.

The tower works on every patch of every image as one packed sequence `[N, D]`, in the processor's
order: image by image, frame by frame, block-major over `merge x merge` squares, so the merger's
groups of `merge**2` patches ("units") are consecutive rows. Attention never crosses a segment:
one frame of one image, or (Qwen2.5-VL's window blocks) one window of `w x w` units, the windows
row-major and their units row-major, as transformers' `get_vision_window_index` orders them.
Segments are packed as a padded batch for `ops.attention` with per-row lengths.

Reference: transformers `vision_utils.py` (`get_vision_position_ids`, `get_vision_cu_seqlens`,
`get_vision_window_index`), `models/qwen2_vl/modeling_qwen2_vl.py` (`Qwen2VLVisionBlock`) and
`models/qwen2_5_vl/modeling_qwen2_5_vl.py` (`Qwen2_5_VLVisionBlock`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def patch_positions(grid_thw: torch.Tensor, merge: int) -> torch.Tensor:
    """(row, column) of every patch in the packed order `[N, 2]` int64: the 2D RoPE positions."""
    positions = []
    for t, h, w in grid_thw.tolist():
        rows = torch.arange(h).view(h // merge, 1, merge, 1).expand(h // merge, w // merge, merge, merge)
        cols = torch.arange(w).view(1, w // merge, 1, merge).expand(h // merge, w // merge, merge, merge)
        frame = torch.stack([rows, cols], dim=-1).reshape(h * w, 2)  # [h/m, w/m, m, m, 2] -> [h*w, 2]
        positions.append(frame.repeat(t, 1))  # [t*h*w, 2]: every frame alike
    return torch.cat(positions).to(grid_thw.device)


def frame_lengths(grid_thw: torch.Tensor) -> torch.Tensor:
    """Patches of each frame of each image `[frames]`: the segments of full attention."""
    return torch.repeat_interleave(grid_thw[:, 1] * grid_thw[:, 2], grid_thw[:, 0])


def window_order(grid_thw: torch.Tensor, merge: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Units (merge groups) in window order `[N / merge**2]`, and the patches of each window `[windows]`.

    `window` is the window's side in units. A frame of gh x gw units is padded (with -1) to multiples
    of `window`, cut into windows row-major, and each window lists its real units row-major.
    """
    order, lengths, offset = [], [], 0
    for t, h, w in grid_thw.tolist():
        gh, gw = h // merge, w // merge
        units = torch.arange(offset, offset + t * gh * gw).view(t, gh, gw)  # [t, gh, gw]
        units = F.pad(units, (0, -gw % window, 0, -gh % window), value=-1)  # [t, GH, GW], multiples of window
        nh, nw = units.shape[1] // window, units.shape[2] // window
        units = units.view(t, nh, window, nw, window).permute(0, 1, 3, 2, 4)  # [t, nh, nw, window, window]
        units = units.reshape(t * nh * nw, window * window)  # [windows, window**2]
        order.append(units[units >= 0])
        lengths.append((units >= 0).sum(dim=1) * merge**2)
        offset += t * gh * gw
    return torch.cat(order).to(grid_thw.device), torch.cat(lengths).to(grid_thw.device)


def unit_rows(units: torch.Tensor, merge: int) -> torch.Tensor:
    """The patch rows `[len(units) * merge**2]` of the given units, in order (a unit is merge**2 rows)."""
    return (units[:, None] * merge**2 + torch.arange(merge**2, device=units.device)).flatten()  # [U, m*m] -> [U*m*m]


@dataclass
class Segments:
    """Consecutive runs of a packed sequence that attend only among themselves, as a padded batch."""

    index: torch.Tensor  # [S, L] the packed row of each slot (the segment's last row at padding)
    valid: torch.Tensor  # [S, L] bool: a real row, not padding
    lengths: torch.Tensor  # [S] int32

    @classmethod
    def from_lengths(cls, lengths: torch.Tensor) -> "Segments":
        starts = torch.cumsum(lengths, dim=0) - lengths  # [S]
        slots = torch.arange(int(lengths.max()), device=lengths.device)  # [L]
        valid = slots[None, :] < lengths[:, None]  # [S, L]
        index = starts[:, None] + torch.minimum(slots[None, :], lengths[:, None] - 1)  # [S, L]
        return cls(index, valid, lengths.to(torch.int32))

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, ...]` -> `[S, L, ...]`."""
        return x[self.index]

    def unpack(self, y: torch.Tensor) -> torch.Tensor:
        """`[S, L, ...]` -> `[N, ...]` (the real slots, row-major, are the packed order)."""
        return y[self.valid]


NORM_EPS = 1e-6  # every norm of both towers


def vision_norm(cfg, ops, weights: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
    """The norm `name`: LayerNorm with bias in Qwen2-VL, RMSNorm in Qwen2.5-VL."""
    if cfg.layer_norm:
        return ops.layer_norm(x, weights[f"{name}.weight"], weights[f"{name}.bias"], NORM_EPS)
    return ops.rms_norm(x, weights[f"{name}.weight"], NORM_EPS)


class VisionBlock:
    """One pre-norm block, `x + attn(norm1(x))` then `+ mlp(norm2(x))`; `weights` are named as under `blocks.N.`.

    Qwen2-VL: LayerNorm (with bias) and a fc1 -> activation -> fc2 MLP. Qwen2.5-VL: RMSNorm and a
    SwiGLU MLP with biases (gate_proj, up_proj, down_proj). Both: a fused qkv with bias, 2D RoPE by
    (row, column) with its own frequency ladder per axis, bidirectional attention within segments.
    """

    def __init__(self, cfg, weights: dict[str, torch.Tensor], ops):
        self.cfg, self.w, self.ops = cfg, weights, ops
        quarter = cfg.head_dim // 4
        self.sections = (quarter, quarter)  # half the rotated columns by row, half by column

    def forward(self, x: torch.Tensor, positions: torch.Tensor, segments: Segments) -> torch.Tensor:
        """`x [N, D]`, `positions [1, N, 2]` -> `[N, D]`."""
        cfg, ops, w = self.cfg, self.ops, self.w
        x = x + self.attention(vision_norm(cfg, ops, w, "norm1", x), positions, segments)
        return x + self.mlp(vision_norm(cfg, ops, w, "norm2", x))

    def attention(self, h: torch.Tensor, positions: torch.Tensor, segments: Segments) -> torch.Tensor:
        ops, w, cfg = self.ops, self.w, self.cfg
        n, heads, head_dim = h.shape[0], cfg.num_heads, cfg.head_dim
        qkv = ops.linear(h, w["attn.qkv.weight"], w["attn.qkv.bias"]).view(1, n, 3, heads, head_dim)  # [1, N, 3, H, d]
        # rotated in fp32 and rounded back, as transformers' apply_rotary_pos_emb_vision does
        q, k = (ops.rope(qkv[:, :, i].float(), positions, cfg.rope_theta, sections=self.sections, axial=True)[0]
                .to(h.dtype) for i in (0, 1))  # [N, H, d] each
        q, k, v = segments.pack(q), segments.pack(k), segments.pack(qkv[0, :, 2])  # [S, L, H, d] each
        zeros = torch.zeros_like(segments.lengths)
        o, _ = ops.attention(q, k, v, zeros, segments.lengths, segments.lengths, scale=head_dim**-0.5, causal=False)
        o = segments.unpack(o).reshape(n, heads * head_dim)  # [S, L, H, d] -> [N, H, d] -> [N, D]
        return ops.linear(o, w["attn.proj.weight"], w["attn.proj.bias"])

    def mlp(self, h: torch.Tensor) -> torch.Tensor:
        ops, w = self.ops, self.w
        if self.cfg.layer_norm:  # Qwen2-VL
            h = ops.linear(h, w["mlp.fc1.weight"], w["mlp.fc1.bias"], activation=self.cfg.activation)
            return ops.linear(h, w["mlp.fc2.weight"], w["mlp.fc2.bias"])
        gate = ops.linear(h, w["mlp.gate_proj.weight"], w["mlp.gate_proj.bias"])
        up = ops.linear(h, w["mlp.up_proj.weight"], w["mlp.up_proj.bias"])
        return ops.linear(ops.swiglu(gate, up), w["mlp.down_proj.weight"], w["mlp.down_proj.bias"])
