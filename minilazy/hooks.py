"""How a feature (Lazy Attention, FastV, a probe) changes one forward pass of the decoder.

A decoder pass reads a `ForwardContext`: the step's positions and slots, the KV cache, and two
optional per-layer hooks. A feature supplies them through a `DecoderSetupHook`, called once per
generation call (or teacher-forced pass) to allocate the caches it needs:

- `layer_attention[l]` (`LayerAttention`) replaces layer l's own attention, e.g. a lazy layer;
- `before_layer` (`BeforeLayer`) runs before every layer and may drop tokens and switch the pass to
  another step, e.g. FastV's pruning.

`DecoderSetup.plain(...)` is the plain model: keys and values for every slot in every layer, no hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from minilazy.kv_cache import KVCache
from minilazy.step import Step

if TYPE_CHECKING:
    from minilazy.model import Model


class LayerAttention(Protocol):
    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """The attention block's output `[B, T, D]` for the normed input `x [B, T, D]`."""


class BeforeLayer(Protocol):
    def __call__(self, layer: int, h: torch.Tensor, residual: torch.Tensor,
                 ctx: ForwardContext) -> tuple[torch.Tensor, torch.Tensor, ForwardContext]:
        """The update `h` and residual stream `[B, T, D]` that layer `layer` reads, and its context
        (`[B, T', D]` and a new step when tokens are dropped)."""


@dataclass
class ForwardContext:
    """Everything a decoder layer's attention reads besides its input."""

    step: Step
    cache: KVCache
    layer_attention: list[LayerAttention] | None = None  # None: the decoder's own attention in every layer
    before_layer: BeforeLayer | None = None

    def with_step(self, step: Step) -> ForwardContext:
        return ForwardContext(step, self.cache, self.layer_attention, self.before_layer)


@dataclass
class DecoderSetup:
    """The caches and hooks of one generation call or teacher-forced pass."""

    cache: KVCache
    layer_attention: list[LayerAttention] | None = None
    before_layer: BeforeLayer | None = None
    prefill_chunk: int | None = None  # set when the feature needs prefill in chunks of this size

    @classmethod
    def plain(cls, model: Model, batch: int, slots: int, dtype: torch.dtype | None = None,
              layer_attention: list[LayerAttention] | None = None,
              before_layer: BeforeLayer | None = None) -> DecoderSetup:
        """The plain model's cache of `slots` slots per sequence (in `dtype`, default the model's), with
        optional hooks that keep it (a probe that records attention or the residual stream)."""
        cache = KVCache.plain(model.config.text, batch, slots, dtype or model.dtype, model.device)
        return cls(cache, layer_attention, before_layer)

    def context(self, step: Step) -> ForwardContext:
        return ForwardContext(step, self.cache, self.layer_attention, self.before_layer)


class DecoderSetupHook(Protocol):
    def __call__(self, model: Model, ids: torch.Tensor, lengths: torch.Tensor, total_slots: int,
                 chunk: int) -> DecoderSetup:
        """The setup for prompts `ids [B, T]` of real lengths `lengths [B]`, with `total_slots` cache slots
        per sequence (prompt plus new tokens), prefilled in chunks of `chunk` tokens."""
