"""Tiny Qwen2-VL / Qwen2.5-VL pieces for tests: a character-level tokenizer with Qwen's special
tokens, the checkpoints' chat template, small vision configs and the files a model directory needs.

The tokenizer is byte-level like Qwen2's (a space is "Ġ", a newline "Ċ") but has no merges, so every
printable ASCII character is one token; it adds no BOS, as Qwen2's does not. The vision configs use
patch 4 and merge 2, so an image side of 8k pixels is k merged tokens; `qwen_preprocessor_config`
gives a matching image processor.
"""

from __future__ import annotations

import json
from pathlib import Path

QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>"]
_CHARACTERS = [chr(c) for c in range(33, 127)] + ["Ġ", "Ċ"]  # byte-level names of printable ASCII, space, \n
QWEN_TOKENIZER_VOCAB = len(_CHARACTERS) + len(QWEN_SPECIAL_TOKENS)
QWEN_TOKEN_IDS = {token: len(_CHARACTERS) + i for i, token in enumerate(QWEN_SPECIAL_TOKENS)}

# The chat template of Qwen2-VL-*-Instruct and Qwen2.5-VL-*-Instruct (chat_template.json), verbatim.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_VISION_CONFIGS = {
    # transformers' Qwen2VLVisionConfig names: embed_dim is the tower, hidden_size the decoder's width.
    "qwen2_vl": dict(depth=2, embed_dim=32, hidden_size=48, num_heads=2, mlp_ratio=2, hidden_act="quick_gelu",
                     patch_size=4, temporal_patch_size=2, spatial_merge_size=2, in_channels=3),
    # Qwen2_5_VLVisionConfig: windows of 16 pixels = 2 x 2 merged tokens; block 1 attends to whole images.
    "qwen2_5_vl": dict(depth=3, hidden_size=32, out_hidden_size=48, intermediate_size=40, num_heads=2,
                       hidden_act="silu", patch_size=4, temporal_patch_size=2, spatial_merge_size=2, in_channels=3,
                       window_size=16, fullatt_block_indexes=[1]),
}


def qwen_vision_config(model_type: str, **overrides) -> dict:
    """A tiny `vision_config` dict for `model_type` ("qwen2_vl" or "qwen2_5_vl"), in transformers' names."""
    return {**_VISION_CONFIGS[model_type], **overrides}


def qwen_preprocessor_config(patch_size: int = 4, merge_size: int = 2, min_tokens: int = 4,
                             max_tokens: int = 64) -> dict:
    """preprocessor_config.json for the tiny towers: images resized to min_tokens..max_tokens merged tokens."""
    unit = (patch_size * merge_size) ** 2  # pixels per merged token
    return {"min_pixels": min_tokens * unit, "max_pixels": max_tokens * unit, "patch_size": patch_size,
            "temporal_patch_size": 2, "merge_size": merge_size, "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711], "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen2VLProcessor"}


def tiny_qwen_tokenizer():
    """The character-level tokenizer (a `tokenizers.Tokenizer`), special tokens at QWEN_TOKEN_IDS."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(_CHARACTERS)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in QWEN_SPECIAL_TOKENS])
    assert tokenizer.get_vocab_size() == QWEN_TOKENIZER_VOCAB
    return tokenizer


def transformers_tokenizer():
    """The tokenizer wrapped for transformers (Qwen2's eos and pad tokens, the chat template)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tiny_qwen_tokenizer(), eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", chat_template=QWEN2_VL_CHAT_TEMPLATE)


def save_qwen_processor_files(path, **preprocessor) -> Path:
    """Write tokenizer.json, tokenizer_config.json, chat_template.jinja and preprocessor_config.json
    (`qwen_preprocessor_config(**preprocessor)`) into the model directory `path`; return it."""
    path = Path(path)
    tiny_qwen_tokenizer().save(str(path / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (path / "chat_template.jinja").write_text(QWEN2_VL_CHAT_TEMPLATE)
    (path / "preprocessor_config.json").write_text(json.dumps(qwen_preprocessor_config(**preprocessor), indent=2))
    return path
