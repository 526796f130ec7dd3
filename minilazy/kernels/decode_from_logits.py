"""Decode attention from stored logits: the lazy decode fast path's attention over image keys.

A lazy layer inherits its anchor's attention over image keys. In decode the anchor's decode
kernel (minilazy/kernels/decode_attention.py, `logits_out`) stores its scaled logits; this op takes them
in place of q and K, so the lazy layer reads only the values: softmax over the first kv_len[b]
logits times the values at `key_slots` (or rows 0..). It runs the same two kernels as
`decode_attention`, in their READ_LOGITS mode (compiled there).
"""

from __future__ import annotations

import torch

from minilazy.kernels.attention import attend, check_caches, check_lengths, listed_keys
from minilazy.kernels.decode_attention import READ_LOGITS, KeyPass, launch_decode_kernels, placeholder


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
    keys = KeyPass(dummy, dummy, logits, kv_len, key_slots, False, 1.0, READ_LOGITS, n_keys)
    return launch_decode_kernels([keys], v_cache, n_heads, v_cache.dtype)


def decode_attention_from_logits_ref(logits, v_cache, kv_len, *, key_slots=None):
    """Torch reference of `decode_attention_from_logits`: softmax over the listed keys' logits times their values."""
    _, v, _, listed = listed_keys(v_cache, v_cache, kv_len, key_slots)  # [B, N, G, d], [B, N]
    o, lse = attend(logits[:, :, None, : v.shape[1]], listed[:, None, :], v)  # [B, 1, H, d], [B, 1, H]
    return o[:, 0].to(v_cache.dtype), lse[:, 0]
