"""From vision features to decoder embeddings: the LLaVA projector and the Idefics3 connector.

- LLaVA: `linear_2(act(linear_1(x)))`, both with bias; the activation
  (`projector_hidden_act`, exact GELU for LLaVA-1.5) is fused into the first linear.
- Idefics3: pixel shuffle (each s x s block of patches becomes one token with
  s^2 times the channels), then one linear without bias.

Reference: transformers `LlavaMultiModalProjector` and `Idefics3Connector`.
"""

from __future__ import annotations

import torch

from minilazy.config import ModelConfig
from minilazy.models.vit import kernel_activation


class LlavaProjector:
    """`forward(features [..., Dv]) -> [..., Dt]`; `weights` are named as under `projector.`."""

    def __init__(self, config: ModelConfig, weights: dict[str, torch.Tensor], ops):
        self.ops = ops
        self.weights = weights
        self.activation = kernel_activation(config.projector_hidden_act)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        w, ops = self.weights, self.ops
        h = ops.linear(features, w["linear_1.weight"], w["linear_1.bias"], activation=self.activation)
        return ops.linear(h, w["linear_2.weight"], w["linear_2.bias"])


def pixel_shuffle(x: torch.Tensor, scale: int) -> torch.Tensor:
    """`[N, H*W, D]` patches of a square grid -> `[N, H*W/s^2, D*s^2]` tokens.

    Token (i, j) of the (H/s) x (W/s) output grid concatenates the s x s block
    of patches (s*i.., s*j..) row by row. The steps are transformers' own, so
    the channel order matches the trained weights exactly.
    """
    n, seq, dim = x.shape
    side = int(round(seq**0.5))
    if side * side != seq or side % scale:
        raise ValueError(f"pixel shuffle: {seq} patches are not a square grid whose side divides by {scale}")
    x = x.view(n, side, side, dim)  # [N, H, W, D]
    x = x.view(n, side, side // scale, dim * scale)  # [N, H, W/s, D*s]: s neighbours in a row joined
    x = x.permute(0, 2, 1, 3)  # [N, W/s, H, D*s]
    x = x.reshape(n, side // scale, side // scale, dim * scale**2)  # [N, W/s, H/s, D*s*s]: s rows joined
    x = x.permute(0, 2, 1, 3)  # [N, H/s, W/s, D*s*s]
    return x.reshape(n, seq // scale**2, dim * scale**2)  # [N, H*W/s^2, D*s^2]


class Idefics3Connector:
    """`forward(features [N, P, Dv]) -> [N, P/s^2, Dt]`; `weights` are named as under `projector.`."""

    def __init__(self, config: ModelConfig, weights: dict[str, torch.Tensor], ops):
        self.ops = ops
        self.weights = weights
        self.scale = config.scale_factor

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        tokens = pixel_shuffle(features, self.scale)
        return self.ops.linear(tokens, self.weights["modality_projection.proj.weight"])
