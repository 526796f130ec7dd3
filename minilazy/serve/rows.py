"""The engine's KV storage: rows of cache slots allocated once, one row per running sequence.

The storage is the plain model's `KVCache` with `rows` sequences of `slots` slots, allocated when the
engine starts and never again. A sequence's prefill runs on a one-row view of its row; a decode step on
a view of rows `0 .. n-1` (the scheduler hands out the lowest free row, so running rows stay packed at
the front). Views cost no copy.

This is the interface a cache layout implements for the engine: what a request costs (`need`), and the
`DecoderSetup` of a prefill into one row and of a decode step over the first rows. A lazy plan would
implement it with its own layer shapes (keys of text slots only in lazy layers) and a `LazyState` per
row, reset in `release`; see docs/serving.md.
"""

from __future__ import annotations

from minilazy.generate import Request
from minilazy.hooks import DecoderSetup
from minilazy.kv_cache import KVCache, LayerCache, full_attention_bytes
from minilazy.model import Model


class CacheRows:
    def __init__(self, model: Model, rows: int, slots: int):
        self.rows, self.slots = rows, slots
        self.bytes_per_token = self.bytes_per_token_of(model)
        self.cache = KVCache.plain(model.config.text, rows, slots, model.dtype, model.device)

    @staticmethod
    def bytes_per_token_of(model: Model) -> int:
        """KV bytes of one token: keys and values in every layer (`2 * layers * kv_heads * head_dim * element size`)."""
        return full_attention_bytes(model.config, 1, 1, model.dtype.itemsize)

    def need(self, request: Request, max_new_tokens: int) -> int:
        """KV bytes of `request` with `max_new_tokens` slots for its answer, priced as the cache prices them."""
        return (len(request.input_ids) + max_new_tokens) * self.bytes_per_token

    def view(self, start: int, stop: int) -> KVCache:
        """Rows `start .. stop - 1` of the storage, as a cache of `stop - start` sequences (views, no copy)."""
        return KVCache([LayerCache(layer.k[start:stop], layer.v[start:stop]) for layer in self.cache.layers])

    def prefill_setup(self, row: int) -> DecoderSetup:
        return DecoderSetup(self.view(row, row + 1))

    def decode_setup(self, n_rows: int) -> DecoderSetup:
        return DecoderSetup(self.view(0, n_rows))

    def release(self, row: int) -> None:
        """A row's sequence ended. The plain cache needs nothing: the next sequence's lengths hide stale slots."""

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes
