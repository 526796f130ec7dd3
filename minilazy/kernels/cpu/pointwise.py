"""The CPU path's row-wise ops: RoPE, KV writes, RMSNorm and the merge of two partial attentions.

Each gives its reference's result with fewer torch ops. RoPE's angles and the cache rows a KV
write names depend on the step's positions and slots alone, which every layer shares: they are
remembered in the `Recent` memo the caller passes, once per step instead of once per layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minilazy.kernels.cpu.memo import Recent
from minilazy.kernels.kv_write import check_kv_write, check_slots
from minilazy.kernels.rms_norm import rms_norm_ref
from minilazy.kernels.rope import cached_rope_columns, check_rope


def rope(angles: Recent, x: torch.Tensor, positions: torch.Tensor, theta: float,
         out: torch.Tensor | None = None, sections: tuple[int, ...] | None = None,
         axial: bool = False) -> torch.Tensor:
    """`rope_ref`'s result, its angles remembered in `angles` per positions tensor."""
    check_rope(x, positions, theta, out, sections)
    d = x.shape[-1]
    sections = None if sections is None else tuple(sections)
    cos, signed_sin = angles.get((positions,), (float(theta), d, sections, axial, x.dtype, positions.device),
                                 lambda: cos_sin(positions, float(theta), d, x.dtype, sections, axial))
    rotated = x * cos + torch.roll(x, d // 2, dims=-1) * signed_sin  # rotate_half(x) * sin, sign in signed_sin
    if out is None:
        return rotated
    return out.copy_(rotated)


def cos_sin(positions: torch.Tensor, theta: float, d: int, dtype: torch.dtype,
            sections: tuple[int, ...] | None = None, axial: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin `[B, T, 1, d]` in `dtype` of Hugging Face's rotary angles for `positions [B, T]`
    (`[B, T, A]` with `sections`, see minilazy/kernels/rope.py).

    `rotate_half(x) = cat(-x2, x1)` equals `roll(x, d/2)` with the first half negated, so the sign
    goes into the sine's first half: -x2 * sin == x2 * (-sin) exactly.
    """
    freqs, axis = cached_rope_columns(theta, d, sections, axial, positions.device)
    if sections is None:
        angles = positions[..., None].float() * freqs  # [B, T, d/2]
    else:
        angles = positions[..., axis.long()].float() * freqs  # [B, T, d/2]: each column's axis
    emb = torch.cat((angles, angles), dim=-1)  # [B, T, d]
    sin = emb.sin()
    signed_sin = torch.cat((-sin[..., : d // 2], sin[..., d // 2 :]), dim=-1)  # [B, T, d]: rotate_half's signs
    return emb.cos().to(dtype)[:, :, None, :], signed_sin.to(dtype)[:, :, None, :]  # [B, T, 1, d] each


def kv_write(rows: Recent, cache: torch.Tensor, new: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """`kv_write_ref`'s result; the rows `slots` names (and their check) remembered in `rows`."""
    check_kv_write(cache, new, slots)
    batch, slot, keep = rows.get((slots,), (cache.shape[1],), lambda: written_rows(slots, cache.shape[1]))
    return cache.index_put_((batch, slot), new if keep is None else new[keep])  # new[keep]: [M, G, d]


def written_rows(slots: torch.Tensor, n_slots: int):
    """`(batch, slot, keep)`: the `[M]` indices of the cache rows `slots [B, T]` names and which of the
    `[B, T]` tokens they belong to (`keep`; None: every token, no padding)."""
    check_slots(slots, n_slots)
    batch = torch.arange(slots.shape[0], device=slots.device)[:, None].expand_as(slots)  # [B, T]
    if not slots.numel() or int(slots.min()) >= 0:  # no padding (every decode step): no masks to apply
        return batch, slots.long(), None
    keep = slots >= 0  # [B, T]
    return batch[keep], slots[keep].long(), keep


def rms_norm(x, weight, eps, residual=None):
    """`rms_norm_ref`'s result; in fp32 by torch's fused op, which computes the same in one call."""
    if not x.dtype == weight.dtype == torch.float32:
        return rms_norm_ref(x, weight, eps, residual)
    h = x if residual is None else x + residual
    y = F.rms_norm(h, (h.shape[-1],), weight, eps)
    return y if residual is None else (y, h)


def merge_attention(o1, lse1, o2, lse2, offset1=None):
    """`merge_attention_ref`'s result (fp32 math, differentiable, no NaN when both parts are empty).

    Part 2's share of the merged softmax is e^lse2 / (e^lse1 + e^lse2) = sigmoid(lse2 - lse1): one
    lerp from o1 towards o2. Both parts empty gives NaN - NaN, made 0 (an even share of two zeros).
    """
    if offset1 is not None:
        lse1 = lse1 + offset1  # [..., H] + [H]
    share = torch.sigmoid((lse2 - lse1).nan_to_num(nan=0.0))  # [...]; 1 where part 1 is empty, 0 where part 2 is
    return torch.lerp(o1.float(), o2.float(), share[..., None]).to(o1.dtype)
