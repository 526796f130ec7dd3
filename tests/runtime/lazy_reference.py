"""A direct, independent torch implementation of the lazy-layer formulation (docs/lazy_attention.md).

Whole sequences, no cache, no kernels: every layer computes q, k, v for every
token; a lazy `visual` layer builds its logits from `[q_a.K_a(image) | q_l.K_l(text)]`
with one causal softmax and its own values; a lazy `all` layer uses
`q_a.K_a` for every key. Refinements: `mass_offsets[l]` (one per head) is added to
the inherited logits, which shifts their log-sum-exp by as much; `exact_image_rows`
keeps the layer's own logits in the rows of image-token queries. Qwen2 decoders: q/k/v biases, and
multimodal RoPE at positions `[T, 3]` with the config's `mrope_section`.
"""

import torch


def rope(x, theta, positions, sections=None):
    """HF rotate-half RoPE on `x [T, H, d]` at `positions [T]` (or `[T, 3]`: column i of each half rotates by
    the axis whose section holds it, Qwen2-VL's multimodal RoPE)."""
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    if sections is None:
        freqs = positions.float()[:, None] * inv_freq[None, :]
    else:
        axis = torch.repeat_interleave(torch.arange(len(sections)), torch.tensor(sections))  # [d/2]
        freqs = positions[:, axis].float() * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)[:, None, :]  # [T, 1, d]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * emb.cos() + torch.cat([-x2, x1], dim=-1) * emb.sin()


def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def lazy_reference_logits(weights: dict, cfg, anchors, scope: str, embeds: torch.Tensor, is_image: torch.Tensor,
                          prune=None, mass_offsets=(), exact_image_rows=False, positions=None):
    """`embeds [T, D]` (one sequence), `is_image [T]` -> logits `[T', V]`; `positions` (default: 0..T-1) may
    be `[T, 3]` for multimodal RoPE.

    `prune = (K, kept)`: from layer K on only the tokens `kept` (indices, in order) remain,
    with their original positions (FastV).
    """
    x = embeds
    positions = torch.arange(x.shape[0]) if positions is None else positions
    sections = cfg.mrope_section
    h_, g_, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    qs, ks = {}, {}
    for layer in range(cfg.num_hidden_layers):
        if prune is not None and layer == prune[0]:
            x, positions, is_image = x[prune[1]], positions[prune[1]], is_image[prune[1]]
        t = x.shape[0]
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        w = {k.removeprefix(f"text.layers.{layer}."): v for k, v in weights.items()
             if k.startswith(f"text.layers.{layer}.")}
        h = rms(x, w["input_layernorm.weight"], cfg.rms_norm_eps)

        def proj(name):
            return h @ w[f"self_attn.{name}.weight"].T + w.get(f"self_attn.{name}.bias", 0)

        v = proj("v_proj").view(t, g_, d).repeat_interleave(h_ // g_, dim=1)  # [T, H, d]
        anchor = anchors[layer]
        if anchor == layer or scope == "visual":
            qs[layer] = rope(proj("q_proj").view(t, h_, d), cfg.rope_theta, positions, sections)
            ks[layer] = rope(proj("k_proj").view(t, g_, d), cfg.rope_theta, positions, sections).repeat_interleave(
                h_ // g_, dim=1)
        own = torch.einsum("qhd,khd->hqk", qs.get(layer, qs[anchor]), ks.get(layer, ks[anchor]))  # [H, T, T]
        inherited = torch.einsum("qhd,khd->hqk", qs[anchor], ks[anchor])
        if anchor == layer:
            logits = own
        elif scope == "visual":
            if mass_offsets:
                inherited = inherited + torch.tensor(mass_offsets[layer])[:, None, None] / d**-0.5  # scaled below
            inherits = is_image[None, None, :] & ~(exact_image_rows & is_image)[None, :, None]  # [1, Tq, Tk]
            logits = torch.where(inherits, inherited, own)
        else:
            logits = inherited
        logits = (logits * d**-0.5).masked_fill(~causal, float("-inf"))
        o = torch.einsum("hqk,khd->qhd", logits.softmax(-1), v).reshape(t, h_ * d)
        x = x + o @ w["self_attn.o_proj.weight"].T
        h = rms(x, w["post_attention_layernorm.weight"], cfg.rms_norm_eps)
        gate = h @ w["mlp.gate_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * (h @ w["mlp.up_proj.weight"].T)) @ w["mlp.down_proj.weight"].T
    head = weights.get("lm_head.weight", weights["text.embed_tokens.weight"])
    return rms(x, weights["text.norm.weight"], cfg.rms_norm_eps) @ head.T
