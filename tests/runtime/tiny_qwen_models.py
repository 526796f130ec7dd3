"""Tiny random Qwen2-VL and Qwen2.5-VL checkpoints built with transformers, saved to disk for minilazy.

The decoder is 48 wide (the tiny vision towers of tests/runtime/tiny_qwen.py project to 48) with
heads of 12, so `mrope_section` splits 6 rotary columns over (t, h, w). The tokenizer, chat
template and preprocessor config of tests/runtime/tiny_qwen.py are written next to the weights, so
the directory also loads with `Pipeline.load`.
"""

from __future__ import annotations

from tests.runtime.tiny_models import random_init_
from tests.runtime.tiny_qwen import (
    QWEN_TOKEN_IDS,
    QWEN_TOKENIZER_VOCAB,
    qwen_vision_config,
    save_qwen_processor_files,
)

IMAGE_TOKEN = QWEN_TOKEN_IDS["<|image_pad|>"]
SPECIAL_IDS = dict(image_token_id=IMAGE_TOKEN, video_token_id=QWEN_TOKEN_IDS["<|video_pad|>"],
                   vision_start_token_id=QWEN_TOKEN_IDS["<|vision_start|>"],
                   vision_end_token_id=QWEN_TOKEN_IDS["<|vision_end|>"])


def qwen_text_config(hidden=48, layers=3, heads=4, kv_heads=2, tie=False, section=(2, 2, 2), theta=10000.0) -> dict:
    """A Qwen2 decoder's `text_config` in transformers 5's names (head_dim = hidden / heads)."""
    end = QWEN_TOKEN_IDS["<|im_end|>"]
    return dict(vocab_size=QWEN_TOKENIZER_VOCAB, hidden_size=hidden, intermediate_size=2 * hidden + 16,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads, rms_norm_eps=1e-5,
                max_position_embeddings=512, tie_word_embeddings=tie, bos_token_id=end, eos_token_id=end,
                pad_token_id=QWEN_TOKEN_IDS["<|endoftext|>"],
                rope_parameters={"rope_type": "default", "rope_theta": theta, "mrope_section": list(section)})


def qwen_model(model_type: str = "qwen2_vl", text: dict | None = None, vision: dict | None = None):
    """A random transformers Qwen2-VL (`model_type` "qwen2_vl") or Qwen2.5-VL ("qwen2_5_vl") in eval mode."""
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLConfig,
                              Qwen2VLForConditionalGeneration)

    config_class, model_class = {"qwen2_vl": (Qwen2VLConfig, Qwen2VLForConditionalGeneration),
                                  "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration)}[model_type]
    text_cfg = qwen_text_config(**(text or {}))
    cfg = config_class(text_config=text_cfg, vision_config=qwen_vision_config(model_type, **(vision or {})),
                       tie_word_embeddings=text_cfg["tie_word_embeddings"], **SPECIAL_IDS)
    return random_init_(model_class(cfg).eval())


def save_qwen(path, model_type: str = "qwen2_vl", text: dict | None = None, vision: dict | None = None):
    """`qwen_model(...)` saved to `path` with the tiny tokenizer and preprocessor; returns the model."""
    model = qwen_model(model_type, text, vision)
    model.save_pretrained(path)
    save_qwen_processor_files(path)
    return model
