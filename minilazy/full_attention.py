"""Self-attention of one decoder layer with a KV cache (the plain, non-lazy layer).

`q = rope(Wq x)`, `k = rope(Wk x)`, `v = Wv x` (plus biases where the checkpoint
has them, as Qwen2's); k and v are written into the layer's cache at the step's
slots, then the new queries attend to every cached key up to their own slot.
Prefill uses the flash-style kernel, a one-token decode step the split-K decode
kernel. Lazy layers (minilazy/lazy/) have the same `forward(x, ctx)` interface
and replace instances of this class.
"""

from __future__ import annotations

import torch

from minilazy.config import TextConfig
from minilazy.hooks import ForwardContext
from minilazy.models.fused import QKV, QKV_BIAS
from minilazy.step import Step


class FullAttention:
    def __init__(self, cfg: TextConfig, weights: dict[str, torch.Tensor], ops, layer: int):
        self.cfg, self.ops, self.layer = cfg, ops, layer
        # (weight, bias or None) of each projection; q, k and v also stacked (with their biases), when
        # minilazy/models/fused.py fused them
        self.q_proj, self.k_proj, self.v_proj = (
            (weights.get(f"self_attn.{p}_proj.weight"), weights.get(f"self_attn.{p}_proj.bias")) for p in "qkv")
        self.qkv_proj = (weights.get(QKV), weights.get(QKV_BIAS))
        self.wo = weights["self_attn.o_proj.weight"]
        self.scale = cfg.head_dim**-0.5

    def project(self, x: torch.Tensor, proj: tuple[torch.Tensor, torch.Tensor | None], heads: int) -> torch.Tensor:
        """`x [B, T, D]` -> `[B, T, heads, d]` by the projection `(weight, bias)`."""
        b, t, _ = x.shape
        return self.ops.linear(x, *proj).view(b, t, heads, self.cfg.head_dim)  # [B, T, heads*d] -> [B, T, heads, d]

    def rope(self, x: torch.Tensor, positions: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """`x [B, T, heads, d]` rotated at `positions [B, T]` (`[B, T, 3]` with multimodal RoPE)."""
        return self.ops.rope(x, positions, self.cfg.rope_theta, out=out, sections=self.cfg.mrope_section)

    def queries(self, x: torch.Tensor, step: Step, out: torch.Tensor | None = None) -> torch.Tensor:
        """Post-RoPE queries `[B, T, H, d]`, written into `out` (a Q Cache slot) when given."""
        return self.rope(self.project(x, self.q_proj, self.cfg.num_attention_heads), step.positions, out=out)

    def projections(self, x: torch.Tensor, step: Step, q_out: torch.Tensor | None = None):
        """Post-RoPE queries `[B, T, H, d]` (written into `q_out` when given), post-RoPE keys and the
        values `[B, T, G, d]`: one product with the fused matrix when there is one."""
        cfg = self.cfg
        if self.qkv_proj[0] is None:
            k = self.rope(self.project(x, self.k_proj, cfg.num_key_value_heads), step.positions)
            return self.queries(x, step, out=q_out), k, self.project(x, self.v_proj, cfg.num_key_value_heads)
        heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        qkv = self.project(x, self.qkv_proj, heads + 2 * kv_heads)  # [B, T, H + 2G, d]
        q, k, v = qkv.split([heads, kv_heads, kv_heads], dim=2)  # [B, T, H | G | G, d] views
        return self.rope(q, step.positions, out=q_out), self.rope(k, step.positions), v

    def attend(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor | None, step: Step, *,
               kv_len: torch.Tensor | None = None, key_slots: torch.Tensor | None = None, k_compact: bool = False,
               logits_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention of `q [B, T, H, d]` over cached keys; returns `(o [B, T, H, d], lse [B, T, H])`.

        By default every slot below `step.kv_len` is a key; `key_slots [B, N]` with `kv_len [B]` names the
        keys instead (`k_compact`: the key cache is indexed by key number, not slot), and in decode
        `logits_out [B, H, N]` receives the scaled logits.
        """
        kv_len = step.kv_len if kv_len is None else kv_len
        if step.is_decode:
            o, lse = self.ops.decode_attention(q[:, 0], k_cache, v_cache, kv_len, scale=self.scale,
                                               key_slots=key_slots, k_compact=k_compact, logits_out=logits_out)
            return o[:, None], lse[:, None]  # [B, 1, H, d], [B, 1, H]
        return self.ops.attention(q, k_cache, v_cache, step.q_start, step.q_len, kv_len, scale=self.scale,
                                  causal=True, key_slots=key_slots, k_compact=k_compact)

    def cached_logits(self, x: torch.Tensor, positions: torch.Tensor, k_cache: torch.Tensor,
                      kv_len: torch.Tensor) -> torch.Tensor:
        """fp32 scaled attention logits `[B, H, T, S]` of the queries of `x [B, T, D]` (RoPE positions
        `positions [B, T]` or `[B, T, 3]`) over the cached keys `k_cache [B, S, G, d]`; -inf for slots from
        `kv_len [B]` on.

        No causal mask: a caller that reads queries before later keys renormalises over the keys it
        compares (FastV's and calibration's scores), and takes the rows it needs.
        """
        cfg = self.cfg
        q = self.rope(self.project(x, self.q_proj, cfg.num_attention_heads), positions)  # [B, T, H, d]
        keys = k_cache.float().repeat_interleave(cfg.num_attention_heads // cfg.num_key_value_heads, dim=2)  # [B, S, H, d]
        logits = torch.einsum("bthd,bshd->bhts", q.float(), keys) * self.scale  # [B, H, T, S]
        hidden = torch.arange(keys.shape[1], device=x.device)[None, :] >= kv_len[:, None]  # [B, S]
        return logits.masked_fill(hidden[:, None, None, :], float("-inf"))

    def output(self, o: torch.Tensor) -> torch.Tensor:
        """`o [B, T, H, d]` -> `Wo o` as `[B, T, D]`."""
        b, t, h, d = o.shape
        return self.ops.linear(o.reshape(b, t, h * d), self.wo)  # [B, T, H*d] -> [B, T, D]

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        step, cache = ctx.step, ctx.cache[self.layer]
        q, k, v = self.projections(x, step)
        self.ops.kv_write(cache.k, k, step.slots)
        self.ops.kv_write(cache.v, v, step.slots)
        o, _ = self.attend(q, cache.k, cache.v, step)
        return self.output(o)
