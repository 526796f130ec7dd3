"""Attention over a cache on the CPU: torch's fused flash attention under the contract's masks.

`attention` computes what `kernels.attention.attention_ref` does (docs/kernels.md, "Attention over
a cache") with torch's fused CPU kernel, which keeps no score matrix, over the key list read in
place where it can be (minilazy/kernels/cpu/key_list.py). It is differentiable, so training runs it too.
"""

from __future__ import annotations

import torch

from minilazy.kernels.cpu.key_list import key_list
from minilazy.kernels.cpu.memo import Recent


def mask_bias(visible, has_key):
    """The additive mask of `visible [B, T, N]` for `flash_attend`: `[B, 1, T, N]` fp32, 0 or -inf.

    A row with no visible key (has_key [B, T] False) looks at key 0, so no pass of the fused kernel
    meets an all -inf row; `flash_attend` zeroes its output. Returns the bias and `has_key`, or
    None in its place when every row has a key (nothing to zero).
    """
    bias = torch.zeros(visible.shape, device=visible.device).masked_fill(~visible, float("-inf"))[:, None]
    if bool(has_key.all()):
        return bias, None
    bias[:, 0, :, 0].masked_fill_(~has_key, 0.0)
    return bias, has_key


def flash_attend(q, k, v, bias, has_key, *, scale, causal=False):
    """torch's fused CPU flash attention of q `[B, T, H, d]` over k, v `[B, N, G, d]` (views of the cache).

    `bias [B, 1, T, N]` masks keys (from `mask_bias`; None: all visible, or the plain causal mask
    when `causal`); rows where `has_key [B, T]` is False give o = 0, lse = -inf (None: every row
    has a key). Grouped-query heads are read in place (query head h uses kv head h // (H / G)).
    Returns o `[B, T, H, d]` in q's dtype and lse `[B, T, H]` fp32.
    """
    o, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(  # q [B, T, H, d] -> [B, H, T, d]; k, v alike
        q.float().transpose(1, 2), k.float().transpose(1, 2), v.float().transpose(1, 2), 0.0, causal,
        attn_mask=bias, scale=scale)  # [B, H, T, d], [B, H, T]
    o, lse = o.transpose(1, 2), lse.transpose(1, 2)  # [B, T, H, d], [B, T, H]
    if has_key is not None:
        o = torch.where(has_key[:, :, None, None], o, 0.0)
        lse = torch.where(has_key[:, :, None], lse, float("-inf"))
    return o.to(q.dtype), lse


def attention(layouts: Recent, q, k_cache, v_cache, q_start, q_len, kv_len, *, scale, causal, key_slots=None,
              k_compact=False):
    """`attention_ref`'s result by torch's fused CPU flash attention, fp32, differentiable; key layouts
    are remembered in `layouts`."""
    n_queries = q.shape[1]
    keys = key_list(layouts, k_cache, v_cache, key_slots, k_compact, kv_len)
    plain_causal = causal and key_slots is None and bool(
        (q_start == 0).all() and (q_len == n_queries).all() and (kv_len == n_queries).all())
    if plain_causal:  # a whole prompt from slot 0 in every row: the kernel's own causal mask skips masked blocks
        k, v = keys.k[:, :n_queries], keys.v[:, :n_queries]
        return flash_attend(q, k, v, None, None, scale=scale, causal=True)
    query = torch.arange(n_queries, device=q.device)
    visible = (query[None, :, None] < q_len.long()[:, None, None]) & keys.layout.listed[:, None, :]  # [B, T, N]
    if causal:
        query_slot = q_start.long()[:, None] + query[None, :]  # [B, T]
        visible = visible & (keys.layout.slot[:, None, :] <= query_slot[:, :, None])  # [B, T, N]
    return flash_attend(q, keys.k, keys.v, *mask_bias(visible, visible.any(-1)), scale=scale)
