"""Fused projections for inference: a layer's q, k and v as one matrix (their biases as one vector, where
there are biases), gate and up as another.

A decode step reads every weight once, and on the CPU one matrix-vector product over a tall matrix
reads it faster than several over its parts. `fuse_projections`
concatenates the rows once, when the model is built, and replaces each part by a row view of the
result, so every weight is held once and code that needs a part alone (a lazy layer projects keys
for text tokens only) still finds it under its own name.

Weights that need gradients (the demo training) stay apart: a concatenation made once would not
pass gradients on to its parts at every step.
"""

from __future__ import annotations

import torch

QKV = "self_attn.qkv_proj.weight"  # [(H + 2G) d, D]: q_proj, k_proj, v_proj stacked
QKV_BIAS = "self_attn.qkv_proj.bias"  # [(H + 2G) d]: their biases (Qwen2), stacked the same way
GATE_UP = "mlp.gate_up_proj.weight"  # [2I, D]: gate_proj, up_proj stacked
FUSED = {
    QKV: ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    QKV_BIAS: ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
    GATE_UP: ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
}


def fuse_projections(weights: dict[str, torch.Tensor], prefix: str) -> None:
    """Add the fused matrices of the layer under `prefix` to `weights`, in place, its parts becoming
    row views of them; a group with a part missing or needing gradients is left as it is."""
    for fused, parts in FUSED.items():
        tensors = [weights.get(prefix + name) for name in parts]
        if any(t is None or t.requires_grad for t in tensors):
            continue
        whole = torch.cat(tensors)  # [rows of all parts, D] (or [rows] for biases)
        for name, view in zip(parts, whole.split([t.shape[0] for t in tensors])):
            weights[prefix + name] = view
        weights[prefix + fused] = whole


def multiplied(layer: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The matrices a layer's forward pass multiplies by: the fused ones where there are, not their parts."""
    covered = {part for name, parts in FUSED.items() if name in layer for part in parts}
    return [w for name, w in layer.items() if w.dim() == 2 and name not in covered]


def unfused(layer: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """A layer's weight tensors with each one held once: the fused matrices' parts, not the matrices too."""
    return [t for name, t in layer.items() if name not in FUSED]
