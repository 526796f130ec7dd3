"""The CLIP vision tower as LLaVA-1.5 uses it.

Patch embedding without bias, a class token, learned position embeddings,
`pre_layrnorm`, then the ViT encoder run only up to the layer LLaVA reads
(`vision_feature_layer`, e.g. -2: the output of the second-to-last layer);
the last layer and `post_layernorm` are never used. With the `default`
strategy the class token is dropped, so a 336-pixel image gives 576 features.
"""

from __future__ import annotations

import torch

from minilazy.config import ModelConfig
from minilazy.models.vit import ViTEncoder


def layers_needed(config: ModelConfig) -> int:
    """How many encoder layers produce `hidden_states[vision_feature_layer]`."""
    total = config.vision.num_hidden_layers
    layer = config.vision_feature_layer
    # hidden_states[0] is the pre_layrnorm output and hidden_states[i] layer i's output.
    return layer if layer >= 0 else total + 1 + layer


class CLIPVisionTower:
    """`forward(pixels [N, 3, S, S]) -> features [N, P, D]` (P = patches, plus CLS for 'full')."""

    def __init__(self, config: ModelConfig, weights: dict[str, torch.Tensor], ops):
        self.config = config
        self.cfg = config.vision
        self.ops = ops
        self.weights = weights
        self.encoder = ViTEncoder(self.cfg, weights, ops, num_layers=layers_needed(config))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        w, ops = self.weights, self.ops
        pixels = pixels.to(w["embeddings.patch_embedding.weight"].dtype)
        patches = ops.patch_embed(pixels, w["embeddings.patch_embedding.weight"], None, self.cfg.patch_size)
        n, _, dim = patches.shape
        cls = w["embeddings.class_embedding"].view(1, 1, dim).expand(n, 1, dim)  # [N, 1, D]
        x = torch.cat([cls, patches], dim=1) + w["embeddings.position_embedding.weight"]  # [N, 1+P, D]
        x = ops.layer_norm(x, w["pre_layrnorm.weight"], w["pre_layrnorm.bias"], self.cfg.layer_norm_eps)
        x = self.encoder.forward(x)
        if self.config.vision_feature_select_strategy == "default":
            x = x[:, 1:]  # drop the class token: [N, P, D]
        return x
