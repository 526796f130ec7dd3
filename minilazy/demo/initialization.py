"""The demo model's configuration (a tiny LLaVA-1.5) and the random initialisation of its weights.

Shapes come from weights/layouts.py (`expected_shapes` plus the unused ones, so the saved
checkpoint is complete for transformers too); values follow the usual transformer recipe:
normal(0, 0.02) matrices, zero biases, unit norm weights, and residual output projections
scaled down by sqrt(2 * layers) so that the deep, narrow decoder starts near the identity.
"""

from __future__ import annotations

import math

import torch

from minilazy.config import parse_config
from minilazy.demo.scenes import IMAGE_SIZE
from weights.layouts import expected_shapes, unused_shapes

PATCH_SIZE = 8


def demo_config(vocab_size: int, image_token_index: int, pad_token_id: int, layers: int = 12,
                hidden: int = 128, vision_hidden: int = 128, vision_layers: int = 3) -> dict:
    """config.json of the demo model: CLIP-style tower on 72-pixel images, GQA Llama decoder."""
    return {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "image_token_index": image_token_index,
        "image_seq_length": (IMAGE_SIZE // PATCH_SIZE) ** 2,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": vision_hidden,
            "intermediate_size": 4 * vision_hidden,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": 4,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
            "num_channels": 3,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "projection_dim": vision_hidden,
        },
        "text_config": {
            "model_type": "llama",
            "vocab_size": vocab_size,
            "hidden_size": hidden,
            "intermediate_size": 3 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": hidden // 4,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "max_position_embeddings": 1024,
            "tie_word_embeddings": False,
            "hidden_act": "silu",
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": pad_token_id,
        },
    }


def _init_tensor(name: str, shape: tuple[int, ...], residual_scale: float, generator: torch.Generator) -> torch.Tensor:
    if name.endswith(".bias"):
        return torch.zeros(shape)
    if len(shape) == 1 and "class_embedding" not in name:  # norm weights
        return torch.ones(shape)
    std = 0.02
    if name.endswith(("o_proj.weight", "down_proj.weight", "out_proj.weight", "fc2.weight")):
        std *= residual_scale
    return torch.randn(shape, generator=generator) * std


def init_weights(config_dict: dict, seed: int) -> dict[str, torch.Tensor]:
    """Every canonical weight of the config (needed and unused), freshly initialised, fp32."""
    config = parse_config(config_dict)
    generator = torch.Generator().manual_seed(seed)
    shapes = {**expected_shapes(config), **unused_shapes(config)}
    residual_scale = 1 / math.sqrt(2 * config.text.num_hidden_layers)
    return {name: _init_tensor(name, shape, residual_scale, generator) for name, shape in sorted(shapes.items())}
