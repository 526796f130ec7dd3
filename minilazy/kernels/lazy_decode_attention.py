"""A lazy layer's decode attention in one softmax: inherited logits over the image keys, its own over the text keys.

In a decode step a lazy layer's attention is one softmax over two key lists (docs/lazy_attention.md):
its anchor's stored logits over the image keys (the anchor's decode step wrote its logits over every
cache slot; the image slots' are read), shifted by the layer's per-head mass offset, and
the layer's own `scale * q.k` over its text keys (a compact cache holding only those), with the
layer's own values at both lists' slots. The Triton op runs the split kernel of
minilazy/kernels/decode_attention.py once per list (READ_LOGITS over the image keys, plain over the
text keys) into one buffer of partials, and its reduce kernel merges every split of both with the
offset added to the image splits: three launches, no intermediate (o, lse) per list and no merge.
"""

from __future__ import annotations

import torch

from minilazy.kernels.attention import attend, attention_logits, check_caches, check_lengths, listed_keys
from minilazy.kernels.decode_attention import NO_LOGITS, READ_LOGITS, KeyPass, launch_decode_kernels, placeholder


def check_lazy_decode(q, k_text, v_cache, image_logits, n_img, image_slots, n_text, text_slots, offset):
    """The argument contract shared by the op and its CPU path."""
    if q.dim() != 3 or q.stride(-1) != 1:
        raise ValueError(f"q must be [B, H, d] with a contiguous last dimension; got {tuple(q.shape)}")
    batch, n_heads, head_dim = q.shape
    check_caches(k_text, v_cache, n_heads, head_dim, text_slots, batch)
    check_caches(v_cache, v_cache, n_heads, head_dim, image_slots, batch)
    if k_text.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise ValueError(f"q, k_text, v_cache must share a dtype; got {q.dtype}, {k_text.dtype}, {v_cache.dtype}")
    shape_ok = image_logits.dim() == 3 and image_logits.shape[:2] == (batch, n_heads)
    if not shape_ok or image_logits.dtype != torch.float32 or image_logits.stride(-1) != 1:
        raise ValueError(f"image_logits must be fp32 [{batch}, {n_heads}, S] (one per cache slot) with a contiguous "
                         f"last dimension; got {image_logits.dtype} {tuple(image_logits.shape)}")
    check_lengths("n_img", n_img, batch)
    check_lengths("n_text", n_text, batch)
    if text_slots.shape[1] > k_text.shape[1]:
        raise ValueError(f"text_slots lists {text_slots.shape[1]} keys but k_text holds {k_text.shape[1]} rows")
    if offset is not None and (offset.shape != (n_heads,) or offset.dtype != torch.float32):
        raise ValueError(f"offset must be fp32 [{n_heads}]; got {offset.dtype} {tuple(offset.shape)}")


def lazy_decode_attention(q, k_text, v_cache, image_logits, n_img, image_slots, n_text, text_slots, *, scale,
                          offset=None):
    """One query per sequence, `q [B, H, d]`, over two key lists in one softmax; returns o `[B, H, d]` in q's dtype.

    Image key i < n_img[b] sits at slot s = image_slots[b, i]: logit `image_logits[b, h, s]` (fp32, already
    scaled; `image_logits [B, H, S]` by cache slot, S past every image slot: an anchor's `decode_attention`
    `logits_out` without key_slots, whose list positions are its slots) plus `offset[h]` when given,
    value `v_cache[b, s]`. Text key j < n_text[b]: logit `scale * q . k_text[b, j]`, value
    `v_cache[b, text_slots[b, j]]`. A sequence with no key gets o = 0.
    """
    check_lazy_decode(q, k_text, v_cache, image_logits, n_img, image_slots, n_text, text_slots, offset)
    dummy = placeholder(q)
    image = KeyPass(dummy, dummy, image_logits, n_img, image_slots, False, 1.0, READ_LOGITS, image_slots.shape[1])
    text = KeyPass(q, k_text, dummy, n_text, text_slots, True, scale, NO_LOGITS, text_slots.shape[1])
    o, _ = launch_decode_kernels([image, text], v_cache, q.shape[1], q.dtype, offset=offset)
    return o


def lazy_decode_attention_ref(q, k_text, v_cache, image_logits, n_img, image_slots, n_text, text_slots, *, scale,
                              offset=None):
    """Torch reference of `lazy_decode_attention`: the two lists' logits side by side, one softmax, their values."""
    _, v_img, image_slot, img_listed = listed_keys(v_cache, v_cache, n_img, image_slots)  # [B, Ni, G, d], [B, Ni]
    k_txt, v_txt, _, txt_listed = listed_keys(k_text, v_cache, n_text, text_slots, k_compact=True)  # [B, Nt, ...]
    at_slots = image_slot[:, None, :].expand(-1, image_logits.shape[1], -1)  # [B, H, Ni]
    inherited = image_logits.gather(2, at_slots)[:, :, None]  # [B, H, 1, Ni]
    if offset is not None:
        inherited = inherited + offset[None, :, None, None]
    logits = torch.cat([inherited, attention_logits(q[:, None], k_txt, scale)], dim=3)  # [B, H, 1, Ni + Nt]
    visible = torch.cat([img_listed, txt_listed], dim=1)[:, None, :]  # [B, 1, Ni + Nt]
    o, _ = attend(logits, visible, torch.cat([v_img, v_txt], dim=1))  # [B, 1, H, d]
    return o[:, 0].to(q.dtype)
