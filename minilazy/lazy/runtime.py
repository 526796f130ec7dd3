"""Running a model under a layer plan and/or FastV (or VTW): cache layout, Q Cache and per-layer attention.

`LazyRuntime(plan, fastv)` is a `DecoderSetupHook` (minilazy/hooks.py):
for each call it allocates the KV cache the plan needs (active layers: keys and
values for every slot; lazy `visual` layers: values for every slot, keys for
text slots only; lazy `all` layers: values only), the Q Cache ring, and the
attention object of every layer. With FastV, layers from K on cache only the
kept tokens; lazy layers there must inherit from layers that are also at or
after K (the token set changes at K), and layer K-1, which scores the image
tokens, must be active. VTW (`fastv=VTW(K)`) is FastV with every image token
dropped: no layer scores them, and K may be the number of layers.
"""

from __future__ import annotations

import torch

from minilazy.full_attention import FullAttention
from minilazy.hooks import DecoderSetup
from minilazy.errors import InputError
from minilazy.fastv import FastV, FastVPruning, FastVScorer
from minilazy.kv_cache import KVCache
from minilazy.lazy.layers import AnchorAttention, LazyAllAttention, LazyVisualAttention
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.state import LazyState


def check_fastv_plan(plan: LayerPlan, fastv: FastV) -> None:
    k, name = fastv.layer, type(fastv).__name__
    if k > plan.num_layers or (k == plan.num_layers and fastv.scores_tokens):
        raise InputError(f"{name} layer {k} is past the model's last layer ({plan.num_layers - 1})")
    if fastv.scores_tokens and plan.is_lazy(k - 1):
        raise InputError(f"with FastV at layer {k}, layer {k - 1} scores the image tokens and must be active")
    for layer in plan.lazy_layers:
        if layer >= k > plan.anchors[layer]:
            raise InputError(f"lazy layer {layer} inherits from layer {plan.anchors[layer]} across the {name} layer "
                             f"{k}; with {name}, layers from {k} on must inherit from layers at or after {k}")


class LazyRuntime:
    def __init__(self, plan: LayerPlan | None = None, fast_decode: bool = True, image_mask: torch.Tensor | None = None,
                 fastv: FastV | None = None, exact_image_rows: bool = False):
        """`image_mask [B, T]` overrides which prompt tokens count as image tokens (default: the image token id);
        `exact_image_rows`: lazy visual layers give image tokens their own attention in prefill. The plan's
        mass offsets, when it has them, apply."""
        self.plan, self.fast_decode, self.image_mask, self.fastv = plan, fast_decode, image_mask, fastv
        self.exact_image_rows = exact_image_rows
        self.state: LazyState | None = None  # the state of the first segment (before FastV's layer)
        self.states: list[LazyState] = []
        self.pruning: FastVPruning | None = None

    def image_slots_mask(self, model, ids: torch.Tensor, lengths: torch.Tensor, total: int) -> torch.Tensor:
        batch, width = ids.shape
        is_image = torch.zeros(batch, total, dtype=torch.bool, device=ids.device)
        if self.image_mask is not None:
            is_image[:, :width] = self.image_mask
        elif model.config.image_token_id is not None:
            is_image[:, :width] = ids == model.config.image_token_id
        is_image[:, :width] &= torch.arange(width, device=ids.device)[None, :] < lengths[:, None]
        return is_image

    def __call__(self, model, ids: torch.Tensor, lengths: torch.Tensor, total: int, chunk: int) -> DecoderSetup:
        cfg = model.config.text
        plan = self.plan or LayerPlan.full(cfg.num_hidden_layers)
        plan.check_layers(cfg.num_hidden_layers)
        batch, width = ids.shape
        is_image = self.image_slots_mask(model, ids, lengths, total)
        if self.fastv is not None:
            check_fastv_plan(plan, self.fastv)
            chunk = width  # FastV scores the whole prompt at once
        q_cache = torch.empty(plan.depth, batch * chunk, cfg.num_attention_heads, cfg.head_dim, dtype=model.dtype,
                              device=ids.device)
        segments = self.segments(plan, is_image, lengths, total, q_cache)
        self.states = [state for _, state, _ in segments]
        self.state = self.states[0]
        shapes, attention = self.layers(model, plan, segments)
        cache = KVCache.allocate(shapes, batch, cfg.num_key_value_heads, cfg.head_dim, model.dtype, ids.device)
        self.pruning = None
        if self.fastv is not None:
            k, scorer = self.fastv.layer, None
            if self.fastv.scores_tokens:
                attention[k - 1] = scorer = FastVScorer(attention[k - 1])
            self.pruning = FastVPruning(self.fastv, is_image, scorer, on_prune=self.states[1].place_image_tokens)
        return DecoderSetup(cache, attention, self.pruning, prefill_chunk=chunk)

    def segments(self, plan: LayerPlan, is_image: torch.Tensor, lengths: torch.Tensor, total: int,
                 q_cache: torch.Tensor) -> list[tuple[range, LazyState, int]]:
        """`(layers, their lazy state, cache slots)` for the layers before FastV's layer and, with FastV (or
        VTW), for the layers from it on, which hold only the kept tokens."""
        num_layers, width = plan.num_layers, int(lengths.max())
        fast = self.fast_decode and plan.scope == "visual"

        def anchors_in(layers):
            return [a for a in plan.anchor_layers if a in layers] if fast else []

        if self.fastv is None:
            return [(range(num_layers), LazyState(is_image, q_cache, None, anchors_in(range(num_layers))), total)]
        before, after = range(0, self.fastv.layer), range(self.fastv.layer, num_layers)
        n_img = is_image.sum(1)
        kept = self.fastv.kept(n_img)
        pruned_total = int((lengths - n_img + kept).max()) + total - width
        later = LazyState.sized_for(kept, pruned_total, q_cache, anchors_in(after))  # its images placed at pruning
        return [(before, LazyState(is_image, q_cache, None, anchors_in(before)), total), (after, later, pruned_total)]

    def layers(self, model, plan: LayerPlan, segments) -> tuple[list[tuple[int | None, int]], list]:
        """The KV-cache shape `(key slots, value slots)` and the attention object of every layer."""
        cfg, anchors = model.config.text, set(plan.anchor_layers)
        fast = self.fast_decode and plan.scope == "visual"
        shapes, attention = [], []
        for layers, state, slots in segments:
            for layer in layers:
                weights, anchor = model.decoder.layers[layer], plan.anchors[layer]
                ring = plan.ring_slot(anchor)
                if not plan.is_lazy(layer):
                    shapes.append((slots, slots))
                    attention.append(AnchorAttention(cfg, weights, model.ops, layer, state, ring) if layer in anchors
                                     else FullAttention(cfg, weights, model.ops, layer))
                elif plan.scope == "visual":
                    shapes.append((state.text_capacity, slots))
                    offset = plan.mass_offset(layer)
                    offset = torch.tensor(offset, dtype=torch.float32, device=model.device) if offset else None
                    attention.append(LazyVisualAttention(cfg, weights, model.ops, layer, anchor, state, ring, fast,
                                                         offset, self.exact_image_rows))
                else:
                    shapes.append((None, slots))
                    attention.append(LazyAllAttention(cfg, weights, model.ops, layer, anchor, state, ring))
        return shapes, attention

    def projection_rows(self) -> dict[str, int]:
        """Token rows whose Wq / Wk projections the lazy layers skipped, summed over segments."""
        total = {"wq_skipped": 0, "wk_skipped": 0}
        for state in self.states:
            for key, value in state.projection_rows.items():
                total[key] += value
        return total
