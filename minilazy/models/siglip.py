"""The SigLIP vision tower as Idefics3/SmolVLM uses it.

A patch embedding (a convolution with bias), learned position embeddings
indexed by bucketised patch coordinates, the shared pre-LN ViT encoder, and
`post_layernorm` on every token; there is no class token. Images that are all
zeros are batch padding and are dropped before the encoder, as transformers does.

Reference: transformers `models/idefics3/modeling_idefics3.py`
(`Idefics3VisionEmbeddings`, `Idefics3VisionTransformer`, `Idefics3Model.get_image_features`).
"""

from __future__ import annotations

import torch

from minilazy.config import ModelConfig
from minilazy.models.vit import ViTEncoder


def position_ids(patch_mask: torch.Tensor, patches_per_side: int) -> torch.Tensor:
    """Position-embedding rows of the patches of `patch_mask [N, h, w]` (True = a real patch) -> `[N, h*w]`.

    An image of nb_h x nb_w real patches is stretched over the full
    patches_per_side^2 grid: patch (i, j) takes the bucket of `i / nb_h` and
    `j / nb_w` among patches_per_side equal intervals. A full tile gives the
    identity 0..h*w-1; padding patches get row 0.
    """
    n, h, w = patch_mask.shape
    boundaries = torch.arange(1 / patches_per_side, 1.0, 1 / patches_per_side, device=patch_mask.device)
    nb_h = patch_mask[:, :, 0].sum(dim=1)  # real patches down column 0: [N]
    nb_w = patch_mask[:, 0, :].sum(dim=1)  # real patches along row 0: [N]
    rows = torch.arange(h, device=patch_mask.device, dtype=torch.float32)[None, :] * (1.0 / nb_h)[:, None]
    cols = torch.arange(w, device=patch_mask.device, dtype=torch.float32)[None, :] * (1.0 / nb_w)[:, None]
    bucket_h = torch.bucketize(rows.clamp(max=1.0 - 1e-6), boundaries, right=True)  # [N, h]
    bucket_w = torch.bucketize(cols.clamp(max=1.0 - 1e-6), boundaries, right=True)  # [N, w]
    ids = (bucket_h[:, :, None] * patches_per_side + bucket_w[:, None, :]).reshape(n, h * w)  # [N, h*w]
    return torch.where(patch_mask.reshape(n, h * w), ids, torch.zeros_like(ids))  # mask [N, h, w] -> [N, h*w]


def real_images(pixels: torch.Tensor) -> torch.Tensor:
    """`[N]` bool: False for the all-zero images that pad a batch."""
    return pixels.flatten(1).ne(0).any(dim=1)  # [N, C, S, S] -> [N, C*S*S] -> [N]


class SigLIPVisionTower:
    """`forward(pixels [N, C, S, S]) -> [N_real, P, D]`; `weights` are named as under `vision.`."""

    def __init__(self, config: ModelConfig, weights: dict[str, torch.Tensor], ops):
        self.cfg = config.vision
        self.ops = ops
        self.weights = weights
        self.encoder = ViTEncoder(self.cfg, weights, ops)

    def embed(self, pixels: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Patch + position embeddings of `pixels [N, C, H, W]` -> `[N, (H/p)*(W/p), D]`."""
        w, p = self.weights, self.cfg.patch_size
        n, _, height, width = pixels.shape
        if patch_mask is None:
            patch_mask = torch.ones(n, height // p, width // p, dtype=torch.bool, device=pixels.device)
        patches = self.ops.patch_embed(
            pixels, w["embeddings.patch_embedding.weight"], w["embeddings.patch_embedding.bias"], p
        )
        ids = position_ids(patch_mask, self.cfg.patches_per_side)
        return patches + self.ops.embedding(ids, w["embeddings.position_embedding.weight"])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Features of the non-padding images of `pixels`, in order: `[N_real, P, D]`."""
        expected = (self.cfg.num_channels, self.cfg.image_size, self.cfg.image_size)
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != expected:
            raise ValueError(
                f"SigLIP tower: pixels must be [N, {', '.join(map(str, expected))}], got {tuple(pixels.shape)}"
            )
        w = self.weights
        # Cast first, as transformers does: an image that rounds to all zeros is padding too.
        pixels = pixels.to(w["embeddings.patch_embedding.weight"].dtype)
        pixels = pixels[real_images(pixels)]
        if len(pixels) == 0:
            return pixels.new_zeros(0, self.cfg.patches_per_side**2, self.cfg.hidden_size)
        x = self.encoder.forward(self.embed(pixels))
        return self.ops.layer_norm(x, w["post_layernorm.weight"], w["post_layernorm.bias"], self.cfg.layer_norm_eps)
