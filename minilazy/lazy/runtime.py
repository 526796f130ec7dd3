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

`cache_shapes` gives the per-layer shapes of the cache a call allocates (a serving engine prices each
request by them, minilazy/serve/lazy_rows.py), and a call may be given a cache and a Q Cache to use
instead of allocating its own (the engine's storage).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minilazy.full_attention import FullAttention
from minilazy.hooks import DecoderSetup
from minilazy.errors import InputError
from minilazy.fastv import FastV, FastVPruning, FastVScorer
from minilazy.kv_cache import KVCache
from minilazy.lazy.layers import AnchorAttention, LazyAllAttention, LazyVisualAttention
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.state import LazyState


@dataclass
class Segment:
    """Layers that share one token set (all of them, or those before and from FastV's layer) and their caches."""

    layers: range
    slots: int  # cache slots per sequence (values; keys in active layers)
    text_slots: int  # text slots per sequence (keys in lazy `visual` layers)
    images: torch.Tensor  # [B] image tokens per sequence


def cache_shapes(plan: LayerPlan, sizes: list[Segment]) -> list[tuple[int | None, int]]:
    """`(key slots, value slots)` per layer: active layers keep both for every slot, lazy `visual` layers keys
    of text slots only, lazy `all` layers no keys."""
    shapes = []
    for size in sizes:
        for layer in size.layers:
            if not plan.is_lazy(layer):
                shapes.append((size.slots, size.slots))
            else:
                shapes.append((size.text_slots if plan.scope == "visual" else None, size.slots))
    return shapes


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
                 fastv: FastV | None = None, exact_image_rows: bool = False, fastv_rank_position: int | None = None):
        """`image_mask [B or 1, T]` overrides which prompt tokens count as image tokens (default: the image token
        id); `exact_image_rows`: lazy visual layers give image tokens their own attention in prefill;
        `fastv_rank_position`: the prompt position whose attention ranks the image tokens for FastV (default: the
        prompt's last token). The plan's mass offsets, when it has them, apply."""
        self.plan, self.fast_decode, self.image_mask, self.fastv = plan, fast_decode, image_mask, fastv
        self.exact_image_rows, self.fastv_rank_position = exact_image_rows, fastv_rank_position
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

    def resolved_plan(self, model) -> LayerPlan:
        """The plan, or every layer active when there is none (FastV or VTW alone), checked against the model."""
        num_layers = model.config.text.num_hidden_layers
        plan = self.plan or LayerPlan.full(num_layers)
        plan.check_layers(num_layers)
        if self.fastv is not None:
            check_fastv_plan(plan, self.fastv)
        return plan

    def __call__(self, model, ids: torch.Tensor, lengths: torch.Tensor, total: int, chunk: int,
                 cache: KVCache | None = None, q_cache: torch.Tensor | None = None) -> DecoderSetup:
        """The setup of one call; `cache` and `q_cache` (a serving engine's storage, at least as large as this
        call needs) are used instead of allocating them."""
        cfg = model.config.text
        plan = self.resolved_plan(model)
        batch, width = ids.shape
        is_image = self.image_slots_mask(model, ids, lengths, total)
        if self.fastv is not None:
            chunk = width  # FastV scores the whole prompt at once
            position = self.fastv_rank_position
            if position is not None and not 0 <= position < int(lengths.min()):
                raise InputError(f"FastV's ranking position {position} is not in every prompt (the shortest has "
                                 f"{int(lengths.min())} tokens)")
        if q_cache is None:
            q_cache = torch.empty(plan.depth, batch * chunk, cfg.num_attention_heads, cfg.head_dim,
                                  dtype=model.dtype, device=ids.device)
        sizes = self.segment_sizes(plan, is_image, lengths, total)
        segments = self.segments(plan, sizes, is_image, q_cache)
        self.states = [state for _, state in segments]
        self.state = self.states[0]
        attention = self.attention(model, plan, segments)
        if cache is None:
            cache = KVCache.allocate(cache_shapes(plan, sizes), batch, cfg.num_key_value_heads, cfg.head_dim,
                                     model.dtype, ids.device)
        self.pruning = None
        if self.fastv is not None:
            k, scorer = self.fastv.layer, None
            if self.fastv.scores_tokens:
                attention[k - 1] = scorer = FastVScorer(attention[k - 1], self.fastv_rank_position)
            self.pruning = FastVPruning(self.fastv, is_image, scorer, on_prune=self.states[1].place_image_tokens)
        return DecoderSetup(cache, attention, self.pruning, prefill_chunk=chunk)

    def segment_sizes(self, plan: LayerPlan, is_image: torch.Tensor, lengths: torch.Tensor,
                      total: int) -> list[Segment]:
        """The layers before FastV's layer and, with FastV (or VTW), the layers from it on, which hold only
        the kept tokens; `is_image [B, total]` marks the image slots of each sequence."""
        num_layers, width = plan.num_layers, int(lengths.max())
        n_img = is_image.sum(1)
        if self.fastv is None:
            return [Segment(range(num_layers), total, int((total - n_img).max()), n_img)]
        kept = self.fastv.kept(n_img)
        pruned_total = int((lengths - n_img + kept).max()) + total - width
        return [Segment(range(0, self.fastv.layer), total, int((total - n_img).max()), n_img),
                Segment(range(self.fastv.layer, num_layers), pruned_total, int((pruned_total - kept).max()), kept)]

    def fast_decode_anchors(self, plan: LayerPlan, layers: range) -> list[int]:
        """The anchors among `layers` that keep their decode logits over every slot for their lazy layers."""
        fast = self.fast_decode and plan.scope == "visual"
        return [a for a in plan.anchor_layers if a in layers] if fast else []

    def segments(self, plan: LayerPlan, sizes: list[Segment], is_image: torch.Tensor,
                 q_cache: torch.Tensor) -> list[tuple[range, LazyState]]:
        """`(layers, their lazy state)` per segment; after FastV's layer the image slots are placed at pruning."""
        first = sizes[0]
        states = [LazyState(is_image, q_cache, first.text_slots, self.fast_decode_anchors(plan, first.layers))]
        for later in sizes[1:]:
            states.append(LazyState.sized_for(later.images, later.slots, q_cache,
                                              self.fast_decode_anchors(plan, later.layers)))
        return [(size.layers, state) for size, state in zip(sizes, states)]

    def attention(self, model, plan: LayerPlan, segments: list[tuple[range, LazyState]]) -> list:
        """The attention object of every layer, bound to its segment's lazy state."""
        cfg, anchors = model.config.text, set(plan.anchor_layers)
        fast = self.fast_decode and plan.scope == "visual"
        attention = []
        for layers, state in segments:
            for layer in layers:
                weights, anchor = model.decoder.layers[layer], plan.anchors[layer]
                ring = plan.ring_slot(anchor)
                if not plan.is_lazy(layer):
                    attention.append(AnchorAttention(cfg, weights, model.ops, layer, state, ring) if layer in anchors
                                     else FullAttention(cfg, weights, model.ops, layer))
                elif plan.scope == "visual":
                    offset = plan.mass_offset(layer)
                    offset = torch.tensor(offset, dtype=torch.float32, device=model.device) if offset else None
                    attention.append(LazyVisualAttention(cfg, weights, model.ops, layer, anchor, state, ring, fast,
                                                         offset, self.exact_image_rows))
                else:
                    attention.append(LazyAllAttention(cfg, weights, model.ops, layer, anchor, state, ring))
        return attention

    def projection_rows(self) -> dict[str, int]:
        """Token rows whose Wq / Wk projections the lazy layers skipped, summed over segments."""
        total = {"wq_skipped": 0, "wk_skipped": 0}
        for state in self.states:
            for key, value in state.projection_rows.items():
                total[key] += value
        return total
