"""Decode attention from stored logits: the lazy decode fast path's attention over image keys.

A lazy layer inherits its anchor's attention over image keys. In decode the anchor's decode
kernel (kernels/decode_attention.py, `logits_out`) stores its scaled logits; this op takes them
in place of q and K, so the lazy layer reads only the values: softmax over the first kv_len[b]
logits times the values at `key_slots` (or rows 0..). It runs the same two kernels as
`decode_attention`, in their READ_LOGITS mode (compiled there).
"""

from __future__ import annotations

import torch

from kernels.attention import check_caches, check_lengths
from kernels.decode_attention import (READ_LOGITS, launch_decode_kernels, placeholder, softmax_weights, unlisted,
                                     weighted_values)
from kernels.key_list import KeyLayout, key_list_ref
from kernels.recent import Recent


def decode_attention_from_logits(logits, v_cache, kv_len, *, key_slots=None):
    """Softmax over the first kv_len[b] logits [B, H, N] (fp32) times the values at key_slots (or rows 0..)."""
    if logits.dim() != 3 or logits.dtype != torch.float32 or logits.stride(-1) != 1:
        raise ValueError(f"logits must be fp32 [B, H, N] with a contiguous last dimension; got "
                         f"{logits.dtype} {tuple(logits.shape)}")
    batch, n_heads, n_keys = logits.shape
    check_caches(v_cache, v_cache, n_heads, v_cache.shape[-1], key_slots, batch)
    check_lengths("kv_len", kv_len, batch)
    if key_slots is not None and key_slots.shape[1] != n_keys:
        raise ValueError(f"key_slots has {key_slots.shape[1]} keys but logits have {n_keys}")
    dummy = placeholder(v_cache)
    return launch_decode_kernels(dummy, v_cache, v_cache, logits, kv_len, key_slots, False, 1.0, READ_LOGITS,
                                 n_heads, n_keys, v_cache.dtype)


# Every lazy layer of an anchor reads the same logits in a decode step; the anchor rewrites them in
# place at the next step, which bumps their version and misses the memo.
_recent_weights = Recent(size=8)


def decode_attention_from_logits_ref(logits, v_cache, kv_len, *, key_slots=None):
    """Torch twin of `decode_attention_from_logits`.

    The softmax of `logits` is computed once for all the calls that share them (the lazy layers of
    one anchor in one decode step) unless `logits` is an inference tensor, which has no version
    counter to tell a rewrite in place.
    """
    n_kv = v_cache.shape[2]
    keys = key_list_ref(v_cache, v_cache, key_slots, False, kv_len)

    def image_weights():
        return softmax_weights(slot_order_logits(logits, keys.layout, keys.v.shape[1], n_kv), kv_len)

    if logits.is_inference():
        weights, lse = image_weights()
    else:
        weights, lse = _recent_weights.get((logits, kv_len, key_slots), ("weights", n_kv, keys.v.shape[1]),
                                           image_weights)
    return weighted_values(weights, keys.v).to(v_cache.dtype), lse


def slot_order_logits(logits, layout: KeyLayout, n_cols: int, n_kv: int) -> torch.Tensor:
    """The logits `[B, H, n]` of a key list as `[B, G, R, N]` over the N value rows read, -inf where no key is."""
    batch, n_heads, _ = logits.shape
    if layout.by_slot:  # key i's logit goes to column key_slots[b, i]; columns no key names stay -inf
        n = layout.list_column.shape[1]
        columns = layout.list_column[:, None, :].expand(-1, n_heads, -1)  # [B, H, n]
        by_column = torch.full((batch, n_heads, n_cols + 1), float("-inf"), device=logits.device)
        by_column = by_column.scatter_(2, columns, logits[:, :, :n].float())[:, :, :n_cols]  # [B, H, N]; N is spare
    else:
        by_column = logits[:, :, :n_cols].float().masked_fill(unlisted(layout.listed)[:, None, :], float("-inf"))
    return by_column.view(batch, n_kv, n_heads // n_kv, n_cols)  # [B, H, N] -> [B, G, R, N]
