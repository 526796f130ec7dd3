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


def save_idefics3(path, image_size=32, patch=8, scale=2, vision_hidden=32, vision_layers=2, text=None):
    """An Idefics3 model with a small SigLIP tower: (image_size / patch / scale)^2 tokens per tile."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    text_cfg = llama_text_config(**(text or {}))
    vision = dict(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden + 8, num_hidden_layers=vision_layers,
                  num_attention_heads=4, image_size=image_size, patch_size=patch, hidden_act="gelu_pytorch_tanh",
                  layer_norm_eps=1e-6)
    cfg = Idefics3Config(text_config=text_cfg, vision_config=vision, scale_factor=scale,
                         image_token_id=text_cfg["vocab_size"] - 1, tie_word_embeddings=text_cfg["tie_word_embeddings"])
    model = random_init_(Idefics3ForConditionalGeneration(cfg).eval())
    model.save_pretrained(path)
    return model


# A character-level tokenizer small enough for the tiny models: every printable ASCII character
# is one token, spaces become "▁" (Metaspace, as Llama's tokenizer), and the special tokens of
# LLaVA and SmolVLM prompts sit at the end with `<image>` last, at id `TOKENIZER_VOCAB - 1`.
TOKENIZER_VOCAB = 128
_BASE_TOKENS = ["<unk>", "<s>", "</s>"]
_CHARACTERS = [c for c in map(chr, range(33, 127))] + ["▁", "\n"]
_SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<fake_token_around_image>", "<global-img>"] + [
    f"<row_{r}_col_{c}>" for r in range(1, 5) for c in range(1, 5)]


def tiny_tokenizer(bos: bool = True):
    """The character-level tokenizer (`<s>` prepended when `bos`, as LLaVA's; none, as SmolVLM's)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tokens = _BASE_TOKENS + _CHARACTERS
    padding = [f"<unused_{i}>" for i in range(TOKENIZER_VOCAB - len(tokens) - len(_SPECIAL_TOKENS) - 1)]
    vocab = {token: i for i, token in enumerate(tokens + padding)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    specials = _BASE_TOKENS + _SPECIAL_TOKENS + ["<image>"]
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    if bos:
        tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    assert tokenizer.get_vocab_size() == TOKENIZER_VOCAB and tokenizer.token_to_id("<image>") == TOKENIZER_VOCAB - 1
    return tokenizer


def save_tokenizer(path, bos: bool = True):
    """Write the character-level tokenizer as `path/tokenizer.json`; return it."""
    from pathlib import Path

    tokenizer = tiny_tokenizer(bos)
    tokenizer.save(str(Path(path) / "tokenizer.json"))
    return tokenizer


def save_tiny_vlm(path, layers: int):
    """A tiny LLaVA (one CLIP layer, 16 image tokens, a 32-wide decoder of `layers` layers) with the
    character-level tokenizer, ready for `Pipeline.load` and the commands; returns `path`."""
    save_llava(path, image_size=28, patch=7, vision_hidden=32, vision_layers=1,
               text=dict(vocab=TOKENIZER_VOCAB, hidden=32, layers=layers))
    save_tokenizer(path)
    return path
