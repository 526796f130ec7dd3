"""Attention of the layers in a lazy plan (formulation: docs/lazy_attention.md).

- `AnchorAttention`: an active layer that lazy layers inherit from. It is a
  plain layer that also writes its post-RoPE queries into its Q Cache slot
  and, on the decode fast path, keeps its attention logits over every cache
  slot for its lazy layers.
- `LazyVisualAttention`: logits over image keys come from the anchor
  (`q_a . K_a`), logits over text keys are the layer's own; one softmax,
  computed as two flash passes merged by log-sum-exp, with the layer's own
  values. Its key cache holds text keys only, so `Wk` runs on text tokens only.
  In a decode step (the fast path) both parts are one op, `lazy_decode_attention`.
  Two refinements: a per-head mass offset on the inherited part's log-sum-exp,
  and exact image rows (in prefill the image tokens' own queries attend with
  the layer's own image keys, computed and held only until prefill ends).
- `LazyAllAttention` (ablation): inherits the logits over every key; no `Wq`,
  no `Wk`, a value-only cache.
"""

from __future__ import annotations

import torch

from minilazy.full_attention import FullAttention
from minilazy.hooks import ForwardContext
from minilazy.lazy.state import LazyState


class AnchorAttention(FullAttention):
    def __init__(self, cfg, weights, ops, layer: int, state: LazyState, ring_slot: int):
        super().__init__(cfg, weights, ops, layer)
        self.state, self.ring_slot = state, ring_slot

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        step, cache, state = ctx.step, ctx.cache[self.layer], self.state
        b, t, _ = x.shape
        state.text_rows(step)  # registers this step's text tokens (anchors run before their lazy layers)
        q, k, v = self.projections(x, step, q_out=state.q_slot(self.ring_slot, b, t))
        self.ops.kv_write(cache.k, k, step.slots)
        self.ops.kv_write(cache.v, v, step.slots)
        # decode fast path: keep this layer's logits over every slot for its lazy layers to read the image ones
        # (no key_slots: the logits' list positions are the slots lazy_decode_attention reads them at)
        logits = state.image_logits.get(self.layer) if step.is_decode else None
        o, _ = self.attend(q, cache.k, cache.v, step, logits_out=logits)
        return self.output(o)


class LazyVisualAttention(FullAttention):
    def __init__(self, cfg, weights, ops, layer: int, anchor: int, state: LazyState, ring_slot: int,
                 fast_decode: bool, mass_offset: torch.Tensor | None = None, exact_image_rows: bool = False):
        """`mass_offset [H]` (fp32) shifts the inherited part's log-sum-exp per head; `exact_image_rows` gives
        the image tokens' queries the layer's own attention in prefill."""
        super().__init__(cfg, weights, ops, layer)
        self.anchor, self.state, self.ring_slot, self.fast_decode = anchor, state, ring_slot, fast_decode
        self.mass_offset, self.exact_image_rows = mass_offset, exact_image_rows

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        step, cache, state, cfg = ctx.step, ctx.cache[self.layer], self.state, self.cfg
        b, t, dim = x.shape
        text = state.text_rows(step)
        exact = self.exact_image_rows and text.image_rows > 0
        if text.gather is None:  # every new token is text (a decode step): keys for all of them
            q, k_text, v = self.projections(x, step)
        elif exact:  # keys for every token: the text ones are kept, the image ones serve this prefill only
            q, k, v = self.projections(x, step)
            k_text = k.gather(1, text.gather[:, :, None, None].expand(-1, -1, *k.shape[2:]))  # [B, Tt, G, d]
            image = state.image_rows(step)
            self.ops.kv_write(state.prefill_image_keys(self.layer, k), k, image.write)
        else:  # keys for the text tokens only: gather them, project, rotate
            q, v = self.queries(x, step), self.project(x, self.v_proj, cfg.num_key_value_heads)
            x_text = x.gather(1, text.gather[:, :, None].expand(-1, -1, dim))  # [B, Tt, D]
            k_text = self.rope(self.project(x_text, self.k_proj, cfg.num_key_value_heads), text.positions)
        self.ops.kv_write(cache.v, v, step.slots)
        self.ops.kv_write(cache.k, k_text, text.write)  # appended to the text-only key cache
        state.projection_rows["wk_skipped"] += 0 if exact else text.image_rows

        if step.is_decode and self.fast_decode:  # one softmax over the anchor's image logits and own text logits
            o = self.ops.lazy_decode_attention(q[:, 0], cache.k, cache.v, state.image_logits[self.anchor], state.n_img,
                                               state.image_slots, text.count, state.text_slots, scale=self.scale,
                                               offset=self.mass_offset)
            return self.output(o[:, None])  # [B, H, d] -> [B, 1, H, d]
        q_anchor = state.q_slot(self.ring_slot, b, t)
        o_img, lse_img = self.attend(q_anchor, ctx.cache[self.anchor].k, cache.v, step, kv_len=state.n_img,
                                     key_slots=state.image_slots)
        if exact:  # image rows: own queries over own image keys, instead of the inherited pass
            o_own, lse_own = self.attend(q, state.image_keys[self.layer], cache.v, step, kv_len=state.n_img,
                                         key_slots=state.image_slots, k_compact=True)
            if self.mass_offset is not None:  # the merge adds the offset to every row: own rows need none
                lse_own = lse_own - self.mass_offset
            o_img = torch.where(image.is_image[:, :, None, None], o_own, o_img)  # [B, T, H, d]
            lse_img = torch.where(image.is_image[:, :, None], lse_own, lse_img)  # [B, T, H]
        o_txt, lse_txt = self.attend(q, cache.k, cache.v, step, kv_len=text.count, key_slots=state.text_slots,
                                     k_compact=True)
        return self.output(self.ops.merge_attention(o_img, lse_img, o_txt, lse_txt, self.mass_offset))


class LazyAllAttention(FullAttention):
    def __init__(self, cfg, weights, ops, layer: int, anchor: int, state: LazyState, ring_slot: int):
        super().__init__(cfg, weights, ops, layer)
        self.anchor, self.state, self.ring_slot = anchor, state, ring_slot

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        step, cache = ctx.step, ctx.cache[self.layer]
        b, t, _ = x.shape
        self.ops.kv_write(cache.v, self.project(x, self.v_proj, self.cfg.num_key_value_heads), step.slots)
        rows = int(step.q_len.sum())
        self.state.projection_rows["wq_skipped"] += rows
        self.state.projection_rows["wk_skipped"] += rows
        q_anchor = self.state.q_slot(self.ring_slot, b, t)
        o, _ = self.attend(q_anchor, ctx.cache[self.anchor].k, cache.v, step)
        return self.output(o)
