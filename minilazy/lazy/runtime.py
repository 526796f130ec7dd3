"""Running a model under a layer plan: cache layout, Q Cache and per-layer attention.

`LazyRuntime(plan)` is the `cache_layout` hook of `minilazy.generate.generate`:
for each call it allocates the KV cache the plan needs (active layers: keys and
values for every slot; lazy `visual` layers: values for every slot, keys for
text slots only; lazy `all` layers: values only), the Q Cache ring, and the
attention object of every layer.
"""

from __future__ import annotations

import torch

from minilazy.attention import FullAttention
from minilazy.kv_cache import KVCache
from minilazy.lazy.attention import AnchorAttention, LazyAllAttention, LazyVisualAttention
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.state import LazyState


class LazyRuntime:
    def __init__(self, plan: LayerPlan, fast_decode: bool = True, image_mask: torch.Tensor | None = None):
        """`image_mask [B, T]` overrides which prompt tokens count as image tokens (default: the image token id)."""
        self.plan, self.fast_decode, self.image_mask = plan, fast_decode, image_mask
        self.state: LazyState | None = None

    def __call__(self, model, ids: torch.Tensor, lengths: torch.Tensor, total: int, chunk: int):
        plan, cfg = self.plan, model.config.text
        plan.check_layers(cfg.num_hidden_layers)
        batch, width = ids.shape
        is_image = torch.zeros(batch, total, dtype=torch.bool, device=ids.device)
        if self.image_mask is not None:
            is_image[:, :width] = self.image_mask
        elif model.config.image_token_id is not None:
            is_image[:, :width] = ids == model.config.image_token_id
        is_image[:, :width] &= torch.arange(width, device=ids.device)[None, :] < lengths[:, None]
        fast = self.fast_decode and plan.scope == "visual"
        state = LazyState(is_image, plan.depth, batch * chunk, cfg.num_attention_heads, cfg.head_dim, model.dtype,
                          anchors_with_fast_decode=plan.anchor_layers if fast else ())
        self.state = state

        shapes, attention = [], []
        anchors = set(plan.anchor_layers)
        for layer, weights in enumerate(model.decoder.layers):
            anchor = plan.anchors[layer]
            slot = plan.ring_slot(anchor)
            if not plan.is_lazy(layer):
                shapes.append((total, total))
                attention.append(AnchorAttention(cfg, weights, model.ops, layer, state, slot) if layer in anchors
                                 else FullAttention(cfg, weights, model.ops, layer))
            elif plan.scope == "visual":
                shapes.append((state.text_capacity, total))
                attention.append(LazyVisualAttention(cfg, weights, model.ops, layer, anchor, state, slot, fast))
            else:
                shapes.append((None, total))
                attention.append(LazyAllAttention(cfg, weights, model.ops, layer, anchor, state, slot))
        cache = KVCache.allocate(shapes, batch, cfg.num_key_value_heads, cfg.head_dim, model.dtype, ids.device)
        return cache, attention
