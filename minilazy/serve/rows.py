"""The engine's KV storage: rows of cache slots allocated once, one row per running sequence.

The storage is a `KVCache` of `rows` sequences of `slots` slots, allocated when the engine starts and
never again. A sequence's prefill runs on a one-row view of its row; a decode step on a view of rows
`0 .. n-1` (the scheduler hands out the lowest free row, so running rows stay packed at the front).
Views cost no copy.

This is the interface a cache layout implements for the engine: what a request costs (`need`), the
`DecoderSetup` of a prefill into one row and of a decode step over the first rows, what a row keeps
once prefilled (`prefilled`) and gives up when its sequence ends (`release`). `CacheRows` is the plain
model's layout; `LazyRows` (minilazy/serve/lazy_rows.py) that of Lazy Attention, FastV and VTW.
"""

from __future__ import annotations

import torch

from minilazy.generate import Request
from minilazy.hooks import DecoderSetup
from minilazy.kv_cache import KVCache, LayerCache, full_attention_bytes
from minilazy.model import Model


class CacheRows:
    def __init__(self, model: Model, rows: int, slots: int, cache: KVCache | None = None):
        """`cache` (default: the plain model's, keys and values in every layer) holds `rows` x `slots` slots."""
        self.rows, self.slots = rows, slots
        self.bytes_per_token = self.bytes_per_token_of(model)
        self.cache = cache or KVCache.plain(model.config.text, rows, slots, model.dtype, model.device)

    @staticmethod
    def bytes_per_token_of(model: Model) -> int:
        """KV bytes of one token: keys and values in every layer (`2 * layers * kv_heads * head_dim * element size`)."""
        return full_attention_bytes(model.config, 1, 1, model.dtype.itemsize)

    def need(self, request: Request, max_new_tokens: int) -> int:
        """KV bytes of `request` with `max_new_tokens` slots for its answer, priced as the cache prices them."""
        return (len(request.input_ids) + max_new_tokens) * self.bytes_per_token

    def view(self, start: int, stop: int) -> KVCache:
        """Rows `start .. stop - 1` of the storage, as a cache of `stop - start` sequences (views, no copy)."""
        def rows(t):
            return None if t is None else t[start:stop]

        return KVCache([LayerCache(rows(layer.k), rows(layer.v)) for layer in self.cache.layers])

    def prefill_setup(self, row: int, ids: torch.Tensor, lengths: torch.Tensor, total: int,
                      chunk: int) -> DecoderSetup:
        """The setup of prefilling the prompt `ids [1, T]` (length `lengths [1]`, `total` slots with its answer)
        into row `row`, in chunks of `chunk` tokens unless the setup says otherwise."""
        return DecoderSetup(self.view(row, row + 1))

    def prefilled(self, row: int) -> None:
        """Row `row`'s prefill is over. The plain cache keeps nothing beside the keys and values."""

    def decode_setup(self, n_rows: int) -> DecoderSetup:
        return DecoderSetup(self.view(0, n_rows))

    def release(self, row: int) -> None:
        """A row's sequence ended. The plain cache needs nothing: the next sequence's lengths hide stale slots."""

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes
