"""The Llama decoder: token embedding, N pre-norm layers, final norm, LM head.

Each layer is `h = x + attn(rmsnorm(x)); h = h + mlp(rmsnorm(h))` with
`mlp = down(silu(gate(h)) * up(h))`. The residual add is fused into the next
RMSNorm (`ops.rms_norm(x, w, eps, residual=r)` returns the normalised sum and
the sum). Attention lives in minilazy/full_attention.py, one object per layer, so a
feature such as Lazy Attention can replace it layer by layer.

Reference: transformers/models/llama/modeling_llama.py.
"""

from __future__ import annotations

import torch

from minilazy.full_attention import FullAttention
from minilazy.hooks import ForwardContext
from minilazy.config import TextConfig
from minilazy.models import with_prefix
from minilazy.models.fused import GATE_UP


class LlamaDecoder:
    """`weights` are the canonical `text.*` tensors without the prefix, plus `lm_head.weight` if untied."""

    def __init__(self, cfg: TextConfig, weights: dict[str, torch.Tensor], ops):
        self.cfg, self.ops = cfg, ops
        self.embed_tokens = weights["embed_tokens.weight"]
        self.norm = weights["norm.weight"]
        self.lm_head = self.embed_tokens if cfg.tie_word_embeddings else weights["lm_head.weight"]
        self.layers = [with_prefix(weights, f"layers.{i}.") for i in range(cfg.num_hidden_layers)]
        self.attention = [FullAttention(cfg, w, ops, i) for i, w in enumerate(self.layers)]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """`ids [B, T]` -> `[B, T, D]`."""
        return self.ops.embedding(ids, self.embed_tokens)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> tuple[torch.Tensor, ForwardContext]:
        """Run every layer on `x [B, T, D]`; returns the final-normed hidden states `[B, T', D]` and the
        context of the last layer (T' < T and a different step when a `before_layer` hook dropped tokens)."""
        ops, eps = self.ops, self.cfg.rms_norm_eps
        residual, update = None, x
        attention = ctx.layer_attention or self.attention
        for i, w in enumerate(self.layers):
            if ctx.before_layer is not None:
                update, residual, ctx = ctx.before_layer(i, update, residual, ctx)
            h, residual = self._norm(update, residual, w["input_layernorm.weight"])
            update = attention[i].forward(h, ctx)
            h, residual = ops.rms_norm(update, w["post_attention_layernorm.weight"], eps, residual=residual)
            if GATE_UP in w:
                gate, up = ops.linear(h, w[GATE_UP]).chunk(2, dim=-1)  # [B, T, 2I] -> two [B, T, I] views
            else:
                gate, up = ops.linear(h, w["mlp.gate_proj.weight"]), ops.linear(h, w["mlp.up_proj.weight"])
            update = ops.linear(ops.swiglu(gate, up), w["mlp.down_proj.weight"])
        h, _ = self._norm(update, residual, self.norm)
        return h, ctx

    def _norm(self, update, residual, weight):
        if residual is None:  # first layer: the residual stream is the embedding itself
            return self.ops.rms_norm(update, weight, self.cfg.rms_norm_eps), update
        return self.ops.rms_norm(update, weight, self.cfg.rms_norm_eps, residual=residual)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final-normed `hidden [..., D]` -> fp32 logits `[..., V]`."""
        return self.ops.linear(hidden, self.lm_head).float()
