"""The key list the CPU attention ops attend to, read from the KV cache with as few copies as possible.

The kernels walk a key list: keys 0..kv_len-1 of the cache, or the cache slots
`key_slots[b, :kv_len]` (with `k_compact`, key i is row i of a compact key cache and its value
sits at slot `key_slots[b, i]`). The CPU path turns it into dense `[B, N, G, d]` tensors:

- no key_slots: the cache's first N slots, as views (no copy);
- key_slots that fill most of the slots up to the last one they name (an image's tokens): all
  those slots, as views, with a mask of the listed ones; reading a few unlisted rows costs less
  than copying the listed ones;
- sparse key_slots (the text tokens among many image tokens) or a compact key cache: the listed
  rows, gathered.

The KV cache is head-major underneath (minilazy/kv_cache.py) and gathers keep it that way, so
the attention matmuls read every one of these without a further copy. N is rounded up to a
multiple of KEY_BUCKET (masked keys): CPU matmul libraries spend milliseconds preparing each new
shape, and without buckets every decode step would have a new one. What depends on key_slots and
kv_len alone (the `KeyLayout`: masks, gather indices) is computed once per step for all layers,
in the memo the caller passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minilazy.kernels.cpu.memo import Recent

KEY_BUCKET = 128
DENSE_SHARE = 0.5  # key_slots naming at least this share of the slots up to their last are read in place


@dataclass
class KeyLayout:
    """Which cache rows a key list reads: derived from key_slots and kv_len alone, so one per step."""

    n: int  # columns N
    slot: torch.Tensor  # [B, N] int64 cache slot of each column (causal masks compare it with query slots)
    listed: torch.Tensor  # [B, N] bool: the column holds one of the first kv_len keys of the list
    by_slot: bool  # columns are cache slots 0..N-1, so key i of the list is column key_slots[b, i]
    v_rows: torch.Tensor | None = None  # [B*G*N] rows of the flattened v cache to gather; None: its first N slots in place
    k_rows: torch.Tensor | None = None  # the same for the k cache; None: its first N rows in place
    # by_slot only (columns are slots, not list positions): for key i of the list, its column
    # ([B, n] int64, the spare column N past kv_len) and whether i < kv_len ([B, n] bool)
    list_column: torch.Tensor | None = None
    list_mask: torch.Tensor | None = None


@dataclass
class KeyList:
    k: torch.Tensor  # [B, N, G, d]
    v: torch.Tensor  # [B, N, G, d]
    layout: KeyLayout


def bucket(n: int) -> int:
    return max(1, -(-n // KEY_BUCKET) * KEY_BUCKET)


def key_list(layouts: Recent, k_cache, v_cache, key_slots, k_compact, kv_len) -> KeyList:
    """The keys and values of the key list, with their layout (remembered in `layouts`: every layer of
    a step reads its keys by the same key_slots and kv_len tensors)."""
    key = (bool(k_compact), tuple(k_cache.shape[:3]), tuple(v_cache.shape[:3]), k_cache.device)
    layout = layouts.get((key_slots, kv_len), key,
                                 lambda: key_layout(k_cache.shape, v_cache.shape, key_slots, k_compact, kv_len))
    k = k_cache[:, : layout.n] if layout.k_rows is None else gather_rows(k_cache, layout.k_rows)
    v = v_cache[:, : layout.n] if layout.v_rows is None else gather_rows(v_cache, layout.v_rows)
    return KeyList(k, v, layout)


def key_layout(k_shape, v_shape, key_slots, k_compact, kv_len) -> KeyLayout:
    batch, device = k_shape[0], kv_len.device
    kv_len = kv_len.long()
    longest = int(kv_len.max()) if batch else 0
    n_list = bucket(longest)  # one masked key at least keeps the softmax shapes non-empty
    if key_slots is None:
        n = min(k_shape[1], v_shape[1], n_list)
        columns = torch.arange(n, device=device)
        return KeyLayout(n, columns.expand(batch, n), columns[None, :] < kv_len[:, None], by_slot=False)
    n_list = min(n_list, key_slots.shape[1], k_shape[1] if k_compact else n_list)
    listed = torch.arange(n_list, device=device)[None, :] < kv_len[:, None]  # [B, N]
    slot = key_slots[:, :n_list].long()  # [B, N]
    if not k_compact:
        span = int(torch.where(listed, slot, -1).max()) + 1 if batch else 0
        if longest >= DENSE_SHARE * span:
            n = min(bucket(span), k_shape[1], v_shape[1])
            list_column = torch.where(listed, slot, n)  # [B, N]: unlisted keys go to the spare column n
            in_list = torch.zeros(batch, n + 1, dtype=torch.bool, device=device)
            in_list.scatter_(1, list_column, True)
            columns = torch.arange(n, device=device)
            return KeyLayout(n, columns.expand(batch, n), in_list[:, :n], by_slot=True, list_column=list_column,
                             list_mask=listed)
    v_rows = gather_index(v_shape, slot)
    k_rows = None if k_compact else v_rows if tuple(k_shape) == tuple(v_shape) else gather_index(k_shape, slot)
    return KeyLayout(n_list, slot, listed, by_slot=False, v_rows=v_rows, k_rows=k_rows)


def gather_index(cache_shape, slot: torch.Tensor) -> torch.Tensor:
    """Rows of a flattened head-major cache `[B*G*S, d]` that hold slots `slot [B, N]`: `[B*G*N]`.

    Slots past kv_len may be garbage (e.g. -1): they are clamped into bounds and masked later.
    """
    batch, n_slots, heads = cache_shape[:3]
    first = (torch.arange(batch * heads, device=slot.device) * n_slots).view(batch, heads, 1)  # [B, G, 1]
    return (first + slot.clamp(0, n_slots - 1)[:, None, :]).reshape(-1)  # [B, G, N] -> [B*G*N]


def gather_rows(cache: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows `rows` (from `gather_index`) of `cache [B, S, G, d]` as a `[B, N, G, d]` view of head-major storage.

    One index_select over the flattened storage: faster than advanced indexing on CPU.
    """
    batch, n_slots, heads, head_dim = cache.shape
    flat = cache.transpose(1, 2).reshape(batch * heads * n_slots, head_dim)  # [B*G*S, d], a view of KV caches
    picked = flat.index_select(0, rows)  # [B*G*N, d]
    return picked.view(batch, heads, -1, head_dim).transpose(1, 2)  # [B, G, N, d] -> [B, N, G, d] view
