"""Patch embedding: a conv with stride = kernel = patch, as unfold + linear.

Non-overlapping patches make the convolution a matmul: cutting the image into
[C, p, p] patches is pure data movement (a torch reshape/permute), and the
product runs on the linear kernel, so this module has no kernel of its own.
Patches come out row-major over the (H/p, W/p) grid, as a ViT flattens them.
"""

from __future__ import annotations

import torch.nn.functional as F

from minilazy.kernels.linear import linear


def _check(pixels, weight, bias, patch):
    if pixels.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"patch_embed: pixels must be [N, C, H, W] and weight [D, C, p, p], got "
                         f"{tuple(pixels.shape)} and {tuple(weight.shape)}")
    channels, height, width = pixels.shape[1:]
    if tuple(weight.shape[1:]) != (channels, patch, patch):
        raise ValueError(f"patch_embed: weight must be [D, {channels}, {patch}, {patch}], got {tuple(weight.shape)}")
    if height % patch or width % patch:
        raise ValueError(f"patch_embed: image {height}x{width} is not a multiple of the patch size {patch}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"patch_embed: bias must be [{weight.shape[0]}], got {tuple(bias.shape)}")


def patch_embed(pixels, weight, bias, patch):
    """pixels [N, C, H, W], weight [D, C, p, p], bias [D] or None -> [N, (H/p)*(W/p), D]."""
    _check(pixels, weight, bias, patch)
    n, c, h, w = pixels.shape
    rows, cols = h // patch, w // patch
    patches = pixels.reshape(n, c, rows, patch, cols, patch)  # [N, C, H/p, p, W/p, p]
    patches = patches.permute(0, 2, 4, 1, 3, 5)  # [N, H/p, W/p, C, p, p]
    patches = patches.reshape(n, rows * cols, c * patch * patch)  # [N, L, C*p*p], copied contiguous
    return linear(patches, weight.reshape(weight.shape[0], -1), bias)  # [N, L, D]


def patch_embed_ref(pixels, weight, bias, patch):
    """Torch reference of `patch_embed`: the convolution itself."""
    _check(pixels, weight, bias, patch)
    out = F.conv2d(pixels, weight, bias, stride=patch)  # [N, D, H/p, W/p]
    return out.flatten(2).transpose(1, 2)  # [N, L, D]
