"""Decode attention on the CPU: one query per sequence over its key list, and a lazy layer's decode attention.

`decode_attention` computes what `kernels.decode_attention.decode_attention_ref` does in one of two ways:

- without `logits_out`, one call of torch's fused flash attention (minilazy/kernels/cpu/attention.py), a
  kv group's R query heads being R query rows over its kv head. A batch whose sequences all have
  n keys in slots 0..n-1 (plain decoding) reads exactly those slots with no mask; ragged batches
  and key lists are masked;
- with `logits_out`, the logits are written out, so they are computed by a matmul, then softmaxed
  and multiplied by the values by hand.

`lazy_decode_attention` (a lazy layer's whole decode attention) lays both of its key lists out by
cache slot: the softmax weights of the anchor's image logits (stored by slot) are made once per
anchor and step, relative to their peak; each lazy layer writes its own text weights, relative to
the same peak (moved by its mass offset), at their slots of that one buffer, and multiplies the
value cache, read in place, once. The buffer is remembered per anchor and text-key table, so the
lazy layers sharing it write the same slots, each over the last one's. Only when a text logit
stands more than `TEXT_HEADROOM` above the image peak (its weight could overflow fp32), or a
sequence has no image key, are the image weights rescaled to the joint peak, in a copy: one more
pass over the slots. Otherwise none but the product, where two passes and their merge would gather
the text values and run three ops' worth of small calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minilazy.kernels.cpu.attention import flash_attend, mask_bias
from minilazy.kernels.cpu.key_list import KeyLayout, bucket, key_list
from minilazy.kernels.cpu.memo import Recent
from minilazy.kernels.lazy_decode_attention import check_lazy_decode

TEXT_HEADROOM = 60.0  # text logits up to this far above the image peak are weighted relative to it: exp(60) ~ 1e26


def decode_attention(layouts: Recent, masks: Recent, q, k_cache, v_cache, kv_len, *, scale, key_slots=None,
                     k_compact=False, logits_out=None):
    """`decode_attention_ref`'s result (fp32 math, differentiable); key layouts and masks are remembered
    in `layouts` and `masks`, once per step for all layers."""
    batch, n_heads, head_dim = q.shape
    n_kv = k_cache.shape[2]
    if logits_out is None:  # one fused call: a group's R query heads are R query rows over its kv head
        rows = q.view(batch, n_kv, n_heads // n_kv, head_dim).transpose(1, 2)  # [B, H, d] -> [B, R, G, d]
        n = same_length(masks, kv_len) if key_slots is None else 0
        if 0 < n <= min(k_cache.shape[1], v_cache.shape[1]):  # every sequence's keys are slots 0..n-1: no mask
            o, lse = flash_attend(rows, k_cache[:, :n], v_cache[:, :n], None, None, scale=scale)
        else:
            keys = key_list(layouts, k_cache, v_cache, key_slots, k_compact, kv_len)
            listed = keys.layout.listed  # [B, N]
            bias, has_key = masks.get((listed, kv_len), ("flash",),
                                      lambda: mask_bias(listed[:, None, :], kv_len[:, None] > 0))
            o, lse = flash_attend(rows, keys.k, keys.v, bias, has_key, scale=scale)  # [B, R, G, d], [B, R, G]
        # [B, R, G, d] -> [B, G, R, d] -> [B, H, d]; lse [B, R, G] -> [B, H]
        return o.transpose(1, 2).reshape(batch, n_heads, head_dim), lse.transpose(1, 2).reshape(batch, n_heads)
    keys = key_list(layouts, k_cache, v_cache, key_slots, k_compact, kv_len)
    qg = q.float().view(batch, n_kv, n_heads // n_kv, head_dim)  # [B, H, d] -> [B, G, R, d]
    logits = torch.matmul(qg, keys.k.float().permute(0, 2, 3, 1)) * scale  # [B, G, R, d] @ [B, G, d, N]
    write_listed_logits(logits_out, logits.view(batch, n_heads, -1), keys.layout)  # [B, H, N]
    masked = logits.masked_fill(unlisted(masks, keys.layout.listed)[:, None, None, :], float("-inf"))
    weights, lse = softmax_weights(masks, masked, kv_len)
    return weighted_values(weights, keys.v).to(q.dtype), lse


def lazy_decode_attention(layouts: Recent, shared_weights: Recent, q, k_text, v_cache, image_logits, n_img, image_slots,
                          n_text, text_slots, *, scale, offset=None):
    """`lazy_decode_attention_ref`'s result (fp32 math). The slot columns are remembered in `layouts` per
    step, the image logits' softmax weights in `shared_weights` per anchor and step (its lazy layers share them)."""
    check_lazy_decode(q, k_text, v_cache, image_logits, n_img, image_slots, n_text, text_slots, offset)
    batch, n_heads, head_dim = q.shape
    n_kv = v_cache.shape[2]
    shapes = (n_heads, k_text.shape[1], v_cache.shape[1])
    columns = layouts.get((image_slots, n_img, text_slots, n_text), ("lazy", *shapes),
                          lambda: slot_columns(*shapes, image_slots, n_img, text_slots, n_text))
    n, n_text_keys = columns.n, columns.text.shape[2]
    if image_logits.is_inference():  # no version counter to tell the anchor's rewrite: not remembered
        image = image_weights(image_logits, n_img, columns)
    else:
        image = shared_weights.get((image_logits, n_img, image_slots, text_slots, n_text), ("weights", n),
                          lambda: image_weights(image_logits, n_img, columns))
    qg = q.float().view(batch, n_kv, n_heads // n_kv, head_dim)  # [B, H, d] -> [B, G, R, d]
    text = torch.matmul(qg, k_text[:, :n_text_keys].float().permute(0, 2, 3, 1)) * scale  # [B, G, R, Nt]
    text = text.view(batch, n_heads, n_text_keys).masked_fill(columns.text_padding, float("-inf"))  # [B, H, Nt]
    # one softmax over both lists, weighted relative to the image peak (moved by the offset)
    peak = image.peak if offset is None else image.peak + offset[None, :, None]  # [B, H, 1]
    text_peak = text.amax(-1, keepdim=True)  # [B, H, 1]
    weights, image_total = image.weights, image.total  # [B, H, n + 1] unnormalised; [B, H, 1]
    if not (image.every_row and bool((text_peak - peak <= TEXT_HEADROOM).all())):
        joint = torch.maximum(peak, text_peak)  # [B, H, 1]
        joint = torch.where(torch.isneginf(joint), 0.0, joint)  # a sequence with no key: any finite value
        share = torch.exp(peak - joint)  # [B, H, 1]: at most 1, 0 without image keys
        weights, image_total, peak = weights * share, image_total * share, joint  # a copy: the shared one stays
    text_weights = torch.exp(text - peak)  # [B, H, Nt], 0 at padding
    total = image_total + text_weights.sum(-1, keepdim=True)  # [B, H, 1]; 0 only without keys
    weights.scatter_(2, columns.text, text_weights)  # over the last lazy layer's (shared); padding: column n
    o = torch.matmul(weights[:, :, :n].view(batch, n_kv, -1, n), v_cache[:, :n].float().permute(0, 2, 1, 3))
    o = o.view(batch, n_heads, head_dim) / total  # [B, G, R, d] -> [B, H, d], normalised
    if columns.has_key is not None:  # a sequence with no key: 0 / 0 above, made 0
        o = torch.where(columns.has_key, o, 0.0)
    return o.to(q.dtype)


@dataclass
class ImageWeights:
    """An anchor's image logits as softmax weights by slot, before normalising: shared by its lazy layers."""

    weights: torch.Tensor  # [B, H, n + 1] exp(logit - peak) at the image slots, 0 elsewhere (column n is spare)
    peak: torch.Tensor  # [B, H, 1] the largest image logit (-inf for a sequence without image keys)
    total: torch.Tensor  # [B, H, 1] the weights' sum
    every_row: bool  # whether every sequence has an image key


def image_weights(image_logits, n_img, columns: SlotColumns) -> ImageWeights:
    """`image_logits [B, H, S]` (by slot) at the image slots as `ImageWeights`."""
    n = columns.n
    m = min(n, image_logits.shape[2])  # no image key sits past the logits' slots
    logits = torch.where(columns.is_image[:, :, :m], image_logits[:, :, :m], float("-inf"))  # [B, H, m]
    peak = logits.amax(-1, keepdim=True)  # [B, H, 1]
    weights = torch.exp(logits - torch.where(torch.isneginf(peak), 0.0, peak))  # [B, H, m]; 0 for no image key
    weights = F.pad(weights, (0, n + 1 - m))  # [B, H, n + 1]
    return ImageWeights(weights, peak, weights.sum(-1, keepdim=True), bool((n_img > 0).all()))


@dataclass
class SlotColumns:
    """Where a lazy layer's two key lists go among the first n cache slots (from the step's tables alone)."""

    n: int  # slot columns read
    is_image: torch.Tensor  # [B, 1, n] bool: the column is the slot of a listed image key
    text: torch.Tensor  # [B, H, Nt] int64 column of text key j, expanded over heads; n (spare) past n_text
    text_padding: torch.Tensor  # [B, 1, Nt] bool: j >= n_text (Nt is rounded up to a bucket)
    has_key: torch.Tensor | None  # [B, 1, 1] whether a sequence has a key; None: every one has


def slot_columns(n_heads, k_rows, n_slots, image_slots, n_img, text_slots, n_text) -> SlotColumns:
    device = n_img.device
    image_listed = torch.arange(image_slots.shape[1], device=device)[None, :] < n_img[:, None]  # [B, W]
    n_text_keys = min(bucket(int(n_text.max()) if len(n_text) else 0), text_slots.shape[1], k_rows)
    text_slots = text_slots[:, :n_text_keys].long()  # [B, Nt]
    text_listed = torch.arange(n_text_keys, device=device)[None, :] < n_text[:, None]  # [B, Nt]
    listed_slots = torch.cat([torch.where(image_listed, image_slots, -1), torch.where(text_listed, text_slots, -1)], 1)
    n = min(bucket(int(listed_slots.max()) + 1), n_slots)  # [B, W + Nt] above: -1 where unlisted
    is_image = torch.zeros(len(n_img), n + 1, dtype=torch.bool, device=device)
    is_image.scatter_(1, torch.where(image_listed, image_slots.long(), n), True)  # unlisted keys mark spare column n
    text = torch.where(text_listed, text_slots, n)[:, None, :].expand(-1, n_heads, -1)  # [B, H, Nt]
    has_key = (n_img + n_text) > 0
    return SlotColumns(n, is_image[:, None, :n], text, ~text_listed[:, None, :],
                       None if bool(has_key.all()) else has_key.view(-1, 1, 1))


def same_length(masks: Recent, kv_len: torch.Tensor) -> int:
    """kv_len[b] when every sequence has that many keys, else 0 (once per step)."""
    return masks.get((kv_len,), ("same length",),
                     lambda: int(kv_len[0]) if len(kv_len) and bool((kv_len == kv_len[0]).all()) else 0)


def unlisted(masks: Recent, listed: torch.Tensor) -> torch.Tensor:
    """`~listed`, once per step."""
    return masks.get((listed,), ("unlisted",), lambda: ~listed)


def softmax_weights(masks: Recent, logits, kv_len):
    """Softmax over N of logits `[B, G, R, N]` (fp32, -inf at the keys left out).

    Returns the weights `[B, G, R, N]` fp32 and lse `[B, G*R]` fp32; a sequence with kv_len 0 gets
    all-zero weights and lse = -inf. Written out (not torch.softmax and torch.logsumexp) to pass
    over the logits fewer times; the peak is only a stabiliser, so gradients stay finite on empty rows.
    """
    batch, n_kv, group_size, _ = logits.shape
    has_key = masks.get((kv_len,), ("has key",), lambda: None if bool((kv_len > 0).all())
                        else (kv_len > 0).view(batch, 1, 1, 1))  # None: no empty list to guard
    peak = logits.detach().amax(-1, keepdim=True)  # [B, G, R, 1]
    if has_key is not None:
        peak = torch.where(has_key, peak, 0.0)
    weights = torch.exp(logits - peak)  # [B, G, R, N]
    total = weights.sum(-1, keepdim=True)  # [B, G, R, 1]
    if has_key is not None:
        total = torch.where(has_key, total, 1.0)
    lse = peak + total.log()
    if has_key is not None:
        lse = torch.where(has_key, lse, float("-inf"))
    return weights / total, lse.view(batch, n_kv * group_size)  # lse [B, G, R, 1] -> [B, H]


def weighted_values(weights, v):
    """`weights [B, G, R, N]` times the values `v [B, N, G, d]`: o `[B, G*R, d]` fp32."""
    batch, n_kv, group_size, _ = weights.shape
    o = torch.matmul(weights, v.float().permute(0, 2, 1, 3))  # [B, G, R, N] @ [B, G, N, d]: the cache in place
    return o.view(batch, n_kv * group_size, -1)  # [B, G, R, d] -> [B, H, d]


def write_listed_logits(logits_out, logits, layout: KeyLayout) -> None:
    """Store the logits `[B, H, N]` of the key list's first kv_len keys at their list positions."""
    listed = layout.listed  # [B, n]: key i of the list is column i
    if layout.by_slot:  # column key_slots[b, i] holds key i
        columns = layout.list_column.clamp(max=logits.shape[2] - 1)  # [B, n]; unlisted keys are not written
        logits = logits.gather(2, columns[:, None, :].expand(-1, logits.shape[1], -1))  # [B, H, n]
        listed = layout.list_mask
    n = min(logits_out.shape[2], logits.shape[2])
    written = logits_out[:, :, :n]
    written.copy_(torch.where(listed[:, None, :n], logits[:, :, :n], written))
