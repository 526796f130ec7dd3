"""The pre-LayerNorm ViT encoder shared by the CLIP and SigLIP vision towers.

Each layer is `h = x + attn(ln1(x)); h = h + mlp(ln2(h))` with bidirectional
multi-head attention (biases on every projection) and a two-layer MLP whose
activation is fused into the first linear kernel. Weight names follow
transformers' `encoder.layers.N.*`.
"""

from __future__ import annotations

import torch

from minilazy.config import VisionConfig
from minilazy.errors import InputError
from minilazy.models import with_prefix

# transformers' activation names -> the fused epilogues of minilazy/kernels/linear.py
KERNEL_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "quick_gelu": "quick_gelu",
    "silu": "silu",
}


def kernel_activation(name: str) -> str:
    """The linear kernel's epilogue for a transformers activation name."""
    if name not in KERNEL_ACTIVATIONS:
        raise InputError(f"unsupported activation {name!r}; supported: {', '.join(KERNEL_ACTIVATIONS)}")
    return KERNEL_ACTIVATIONS[name]


class ViTEncoder:
    """A stack of pre-LN transformer layers; `weights` holds names under `encoder.`."""

    def __init__(self, cfg: VisionConfig, weights: dict[str, torch.Tensor], ops, num_layers: int | None = None):
        self.cfg = cfg
        self.ops = ops
        self.activation = kernel_activation(cfg.hidden_act)
        self.num_layers = cfg.num_hidden_layers if num_layers is None else num_layers
        self.layers = [with_prefix(weights, f"encoder.layers.{i}.") for i in range(self.num_layers)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x [N, P, D]` -> the output of the last layer this encoder runs, `[N, P, D]`."""
        for layer in self.layers:
            x = self._layer(layer, x)
        return x

    def _layer(self, w: dict, x: torch.Tensor) -> torch.Tensor:
        ops, eps = self.ops, self.cfg.layer_norm_eps
        n, p, dim = x.shape
        heads, head_dim = self.cfg.num_attention_heads, self.cfg.head_dim

        h = ops.layer_norm(x, w["layer_norm1.weight"], w["layer_norm1.bias"], eps)
        q, k, v = (ops.linear(h, w[f"self_attn.{name}_proj.weight"], w[f"self_attn.{name}_proj.bias"])
                   .view(n, p, heads, head_dim) for name in "qkv")  # [N, P, D] -> [N, P, H, d] each
        lengths = torch.full((n,), p, dtype=torch.int32, device=x.device)
        zeros = torch.zeros_like(lengths)
        o, _ = ops.attention(q, k, v, zeros, lengths, lengths, scale=head_dim**-0.5, causal=False)
        o = o.reshape(n, p, dim)  # [N, P, H*d]
        x = x + ops.linear(o, w["self_attn.out_proj.weight"], w["self_attn.out_proj.bias"])

        h = ops.layer_norm(x, w["layer_norm2.weight"], w["layer_norm2.bias"], eps)
        h = ops.linear(h, w["mlp.fc1.weight"], w["mlp.fc1.bias"], activation=self.activation)
        return x + ops.linear(h, w["mlp.fc2.weight"], w["mlp.fc2.bias"])
