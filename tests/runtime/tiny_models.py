"""Tiny random checkpoints built with transformers, saved to disk for minilazy to load."""

from __future__ import annotations

import torch


def llama_text_config(vocab=96, hidden=64, layers=3, heads=4, kv_heads=2, tie=False, theta=10000.0, **extra):
    return dict(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden + 16, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, rms_norm_eps=1e-5, max_position_embeddings=512,
        rope_parameters={"rope_type": "default", "rope_theta": theta}, tie_word_embeddings=tie,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, **extra,
    )


def random_init_(model, std=0.2):
    """Larger-than-default random weights so that every layer changes the output visibly."""
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen))
    return model


def save_llama(path, **kwargs):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = random_init_(LlamaForCausalLM(LlamaConfig(**llama_text_config(**kwargs))).eval())
    model.save_pretrained(path)
    return model


def save_llava(path, image_size=28, patch=7, vision_hidden=32, vision_layers=3, text=None, **kwargs):
    """A LLaVA model with a small CLIP tower: (image_size / patch)^2 image tokens."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    text_cfg = LlamaConfig(**llama_text_config(**(text or {})))
    vision_cfg = CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden + 8,
                                  num_hidden_layers=vision_layers, num_attention_heads=4, image_size=image_size,
                                  patch_size=patch, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    image_token = text_cfg.vocab_size - 1
    cfg = LlavaConfig(text_config=text_cfg, vision_config=vision_cfg, image_token_index=image_token,
                      image_seq_length=(image_size // patch) ** 2, **kwargs)
    model = random_init_(LlavaForConditionalGeneration(cfg).eval())
    model.save_pretrained(path)
    return model
