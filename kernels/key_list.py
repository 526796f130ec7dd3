"""The key list the attention twins attend to, read from the KV cache with as few copies as possible.

The kernels walk a key list: keys 0..kv_len-1 of the cache, or the cache slots
`key_slots[b, :kv_len]` (with `k_compact`, key i is row i of a compact key cache and its value
sits at slot `key_slots[b, i]`). The twins turn it into dense `[B, N, G, d]` tensors:

- no key_slots: the cache's first N slots, as views (no copy);
- key_slots that fill most of the slots up to the last one they name (an image's tokens): all
  those slots, as views, with a mask of the listed ones; reading a few unlisted rows costs less
  than copying the listed ones;
- sparse key_slots (the text tokens among many image tokens) or a compact key cache: the listed
  rows, gathered.

The KV cache is head-major underneath (minilazy/kv_cache.py) and gathers keep it that way, so
the attention matmuls read every one of these without a further copy. N is rounded up to a
multiple of KEY_BUCKET (masked keys): CPU matmul libraries spend milliseconds preparing each new
shape, and without buckets every decode step would have a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KEY_BUCKET = 128
DENSE_SHARE = 0.5  # key_slots naming at least this share of the slots up to their last are read in place


@dataclass
class KeyList:
    k: torch.Tensor  # [B, N, G, d]
    v: torch.Tensor  # [B, N, G, d]
    slot: torch.Tensor  # [B, N] int64 cache slot of each column (causal masks compare it with query slots)
    listed: torch.Tensor  # [B, N] bool: the column holds one of the first kv_len keys of the list
    by_slot: bool  # columns are cache slots 0..N-1, so key i of the list is column key_slots[b, i]


def bucket(n: int) -> int:
    return max(1, -(-n // KEY_BUCKET) * KEY_BUCKET)


def key_list_ref(k_cache, v_cache, key_slots, k_compact, kv_len) -> KeyList:
    batch, device = k_cache.shape[0], k_cache.device
    kv_len = kv_len.long()
    longest = int(kv_len.max()) if batch else 0
    n_list = bucket(longest)  # one masked key at least keeps the softmax shapes non-empty
    if key_slots is None:
        n = min(k_cache.shape[1], v_cache.shape[1], n_list)
        columns = torch.arange(n, device=device)
        return KeyList(k_cache[:, :n], v_cache[:, :n], columns.expand(batch, n), columns[None, :] < kv_len[:, None],
                       by_slot=False)
    n_list = min(n_list, key_slots.shape[1], k_cache.shape[1] if k_compact else n_list)
    listed = torch.arange(n_list, device=device)[None, :] < kv_len[:, None]  # [B, N]
    slot = key_slots[:, :n_list].long()  # [B, N]
    if not k_compact:
        span = int(torch.where(listed, slot, -1).max()) + 1 if batch else 0
        if longest >= DENSE_SHARE * span:
            n = min(bucket(span), k_cache.shape[1], v_cache.shape[1])
            in_list = torch.zeros(batch, n + 1, dtype=torch.bool, device=device)
            in_list.scatter_(1, list_columns(slot, listed, n), True)  # unlisted entries mark the spare column n
            columns = torch.arange(n, device=device)
            return KeyList(k_cache[:, :n], v_cache[:, :n], columns.expand(batch, n), in_list[:, :n], by_slot=True)
    k = k_cache[:, :n_list] if k_compact else gather_slots(k_cache, slot)
    return KeyList(k, gather_slots(v_cache, slot), slot, listed, by_slot=False)


def list_columns(slot: torch.Tensor, listed: torch.Tensor, n: int) -> torch.Tensor:
    """Column of each key of the list `[B, N]`: its slot, or the spare column `n` past the list's end."""
    return torch.where(listed, slot, n)


def gather_slots(cache: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """Rows `slot [B, N]` of `cache [B, S, G, d]` as a `[B, N, G, d]` view of head-major storage.

    Slots past kv_len may be garbage (e.g. -1): they are clamped into bounds and masked later.
    One index_select over the flattened storage: faster than advanced indexing on CPU.
    """
    batch, n_slots, heads, head_dim = cache.shape
    flat = cache.transpose(1, 2).reshape(batch * heads * n_slots, head_dim)  # [B*G*S, d], a view of KV caches
    first = (torch.arange(batch * heads, device=slot.device) * n_slots).view(batch, heads, 1)  # [B, G, 1]
    index = first + slot.clamp(0, n_slots - 1)[:, None, :]  # [B, G, N]
    rows = flat.index_select(0, index.reshape(-1))  # [B*G*N, d]
    return rows.view(batch, heads, -1, head_dim).transpose(1, 2)  # [B, G, N, d] -> [B, N, G, d] view
