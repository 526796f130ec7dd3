"""The KV cache: per-layer key and value buffers allocated once per generation call.

Layout `[B, S, G, d]` (sequence, slot, key/value head, head size): slot `s` of
sequence `b` holds the token the step wrote there. The storage underneath is
head-major, `[B, G, S, d]`: one head's keys are contiguous, so attending over them
is a batched matmul on a strided view, with no copy of the cache (the kernels take
strides, so they read either layout). Layers may hold different
caches (a lazy layer keeps values for every token but keys for text tokens
only), so each layer owns its own pair and `None` means "not stored".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LayerCache:
    k: torch.Tensor | None  # [B, S_k, G, d]
    v: torch.Tensor | None  # [B, S, G, d]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.k, self.v) if t is not None)


@dataclass
class KVCache:
    layers: list[LayerCache] = field(default_factory=list)

    @classmethod
    def allocate(cls, shapes: list[tuple[int | None, int | None]], batch: int, heads: int, head_dim: int,
                 dtype: torch.dtype, device) -> KVCache:
        """`shapes[l] = (key slots, value slots)` for layer l; None skips that buffer."""

        def buffer(slots):
            if slots is None:
                return None
            storage = torch.zeros(batch, heads, slots, head_dim, dtype=dtype, device=device)  # [B, G, S, d]
            return storage.transpose(1, 2)  # [B, S, G, d] view

        return cls([LayerCache(buffer(ks), buffer(vs)) for ks, vs in shapes])

    @classmethod
    def plain(cls, text_config, batch: int, slots: int, dtype: torch.dtype, device) -> KVCache:
        """The plain model's cache: keys and values for `slots` slots in every layer."""
        t = text_config
        return cls.allocate([(slots, slots)] * t.num_hidden_layers, batch, t.num_key_value_heads, t.head_dim, dtype,
                            device)

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes for layer in self.layers)

    def __getitem__(self, i: int) -> LayerCache:
        return self.layers[i]


def cache_bytes(shapes: list[tuple[int | None, int | None]], sequences: int, heads: int, head_dim: int,
                element_size: int) -> int:
    """Bytes of `KVCache.allocate(shapes, sequences, ...)`: every key or value slot holds `heads * head_dim` values."""
    slots = sum((ks or 0) + (vs or 0) for ks, vs in shapes)
    return sequences * slots * heads * head_dim * element_size


def full_attention_bytes(config, sequences: int, slots: int, element_size: int) -> int:
    """KV bytes of the plain model for `slots` slots per sequence: every layer keeps keys and values."""
    t = config.text
    return cache_bytes([(slots, slots)] * t.num_hidden_layers, sequences, t.num_key_value_heads, t.head_dim,
                       element_size)
