"""The Qwen2-VL and Qwen2.5-VL vision tower: its configuration, its weights' names and shapes, its forward.

Patches `[N, C*tp*p*p]` (from image_processing/qwen2_vl.py) go through a patch embedding (a Conv3d
whose kernel equals its stride, so a linear without bias over each flattened patch), `depth` blocks
(qwen2_vision_blocks.py) and the patch merger: norm `ln_q`, each `merge x merge` unit's rows
concatenated, Linear -> exact GELU -> Linear to the decoder's width. Qwen2.5-VL reorders the units
into windows before the blocks (window attention except in `fullatt_block_indexes`) and restores the
order after the merger. The result, one row per merged unit and image after image, is what the
decoder scatters into its `<|image_pad|>` positions.

Reference: transformers `models/qwen2_vl/modeling_qwen2_vl.py` (`Qwen2VisionTransformerPretrainedModel`,
`PatchEmbed`, `PatchMerger`), `models/qwen2_5_vl/modeling_qwen2_5_vl.py`
(`Qwen2_5_VisionTransformerPretrainedModel`) and their configuration_*.py for the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minilazy.errors import InputError
from minilazy.models import with_prefix
from minilazy.models.qwen2_vision_blocks import (
    Segments,
    VisionBlock,
    frame_lengths,
    patch_positions,
    unit_rows,
    vision_norm,
    window_order,
)
from minilazy.models.vit import kernel_activation

MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")


@dataclass(frozen=True)
class Qwen2VisionConfig:
    model_type: str  # "qwen2_vl" or "qwen2_5_vl"
    depth: int
    hidden_size: int  # the tower's width: 2-VL's embed_dim, 2.5-VL's hidden_size
    num_heads: int
    intermediate_size: int  # the MLP's width: 2-VL's int(embed_dim * mlp_ratio)
    out_hidden_size: int  # the merger's output, the decoder's width: 2-VL's hidden_size, 2.5-VL's out_hidden_size
    hidden_act: str
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    in_channels: int = 3
    window_size: int = 0  # 2.5-VL: a window's side in pixels; 0 for 2-VL (no windows)
    fullatt_block_indexes: tuple[int, ...] = ()  # 2.5-VL: the blocks that attend to whole frames
    rope_theta: float = 10000.0

    @classmethod
    def from_dict(cls, model_type: str, vision_config: dict) -> "Qwen2VisionConfig":
        """From config.json's `vision_config`; missing keys take transformers' class defaults
        (Qwen2VLVisionConfig / Qwen2_5_VLVisionConfig), which differ from the real checkpoints."""
        v = vision_config
        rope = v.get("rope_parameters") or {}
        if rope.get("rope_type", "axial") != "axial":
            raise InputError(f"vision_config: rope_type {rope['rope_type']!r} is not supported (only 'axial')")
        common = dict(
            depth=v.get("depth", v.get("num_hidden_layers", 32)),  # transformers maps the second name to the first
            num_heads=v.get("num_heads", v.get("num_attention_heads", 16)),
            patch_size=v.get("patch_size", 14), temporal_patch_size=v.get("temporal_patch_size", 2),
            spatial_merge_size=v.get("spatial_merge_size", 2), in_channels=v.get("in_channels", 3),
            rope_theta=rope.get("rope_theta", 10000.0),
        )
        if model_type == "qwen2_vl":
            embed_dim = v.get("embed_dim", 1280)
            mlp_ratio = v.get("mlp_ratio", 4)
            if not isinstance(embed_dim, int) or not isinstance(mlp_ratio, (int, float)):
                raise InputError(f"vision_config: embed_dim {embed_dim!r} and mlp_ratio {mlp_ratio!r} must be numbers")
            return cls(model_type, hidden_size=embed_dim, intermediate_size=int(embed_dim * mlp_ratio),
                       out_hidden_size=v.get("hidden_size", 3584), hidden_act=v.get("hidden_act", "quick_gelu"),
                       **common)
        if model_type == "qwen2_5_vl":
            return cls(model_type, hidden_size=v.get("hidden_size", 3584),
                       intermediate_size=v.get("intermediate_size", 3420),
                       out_hidden_size=v.get("out_hidden_size", 3584), hidden_act=v.get("hidden_act", "silu"),
                       window_size=v.get("window_size", 112),
                       fullatt_block_indexes=tuple(v.get("fullatt_block_indexes", (7, 15, 23, 31))), **common)
        raise InputError(f"unknown Qwen vision model_type {model_type!r}; expected one of {', '.join(MODEL_TYPES)}")

    def __post_init__(self):
        sizes = ("depth", "hidden_size", "num_heads", "intermediate_size", "out_hidden_size", "patch_size",
                 "temporal_patch_size", "spatial_merge_size", "in_channels")
        for name in sizes:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"vision_config: {name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads or self.head_dim % 4:
            raise InputError(f"vision_config: a head ({self.hidden_size} / {self.num_heads} heads) must have a "
                             f"width divisible by 4 for the 2D RoPE")
        kernel_activation(self.hidden_act)  # a clear error for an unknown one
        if not self.layer_norm and self.hidden_act != "silu":
            raise InputError(f"vision_config: Qwen2.5-VL's gated MLP needs hidden_act 'silu', got {self.hidden_act!r}")
        if not self.layer_norm and self.window_units < 1:
            raise InputError(f"vision_config: window_size {self.window_size} is smaller than one merged unit "
                             f"({self.patch_size * self.spatial_merge_size} pixels)")
        if any(not 0 <= i < self.depth for i in self.fullatt_block_indexes):
            raise InputError(f"vision_config: fullatt_block_indexes {list(self.fullatt_block_indexes)} must lie "
                             f"in 0..{self.depth - 1}")
        if not self.rope_theta > 0:
            raise InputError(f"vision_config: rope_theta must be positive, got {self.rope_theta}")

    @property
    def layer_norm(self) -> bool:
        """Qwen2-VL's LayerNorms and fc1/fc2 MLP; else Qwen2.5-VL's RMSNorms, SwiGLU MLP and windows."""
        return self.model_type == "qwen2_vl"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def activation(self) -> str:
        """The MLP's activation as the linear kernel names it."""
        return kernel_activation(self.hidden_act)

    @property
    def patch_dim(self) -> int:
        """Values per patch row: C * temporal_patch_size * patch_size**2."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def window_units(self) -> int:
        """A window's side in merged units (transformers' `window_size // merge // patch`)."""
        return self.window_size // self.spatial_merge_size // self.patch_size


def weight_shapes(cfg: Qwen2VisionConfig) -> dict[str, tuple[int, ...]]:
    """Every weight of the tower, named as transformers' `model.visual.state_dict()`, with its shape."""
    d, inner, merged = cfg.hidden_size, cfg.intermediate_size, cfg.hidden_size * cfg.spatial_merge_size**2
    norm = {"weight": (d,), "bias": (d,)} if cfg.layer_norm else {"weight": (d,)}
    mlp = ({"fc1": (inner, d), "fc2": (d, inner)} if cfg.layer_norm
           else {"gate_proj": (inner, d), "up_proj": (inner, d), "down_proj": (d, inner)})
    linears = {"attn.qkv": (3 * d, d), "attn.proj": (d, d), **{f"mlp.{name}": s for name, s in mlp.items()}}
    shapes = {"patch_embed.proj.weight": (d, cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size)}
    for i in range(cfg.depth):
        for layer in ("norm1", "norm2"):
            shapes.update({f"blocks.{i}.{layer}.{kind}": s for kind, s in norm.items()})
        for name, (rows, cols) in linears.items():
            shapes.update({f"blocks.{i}.{name}.weight": (rows, cols), f"blocks.{i}.{name}.bias": (rows,)})
    shapes.update({f"merger.ln_q.{kind}": s for kind, s in norm.items()})
    shapes.update({"merger.mlp.0.weight": (merged, merged), "merger.mlp.0.bias": (merged,),
                   "merger.mlp.2.weight": (cfg.out_hidden_size, merged), "merger.mlp.2.bias": (cfg.out_hidden_size,)})
    return shapes


def check_weights(cfg: Qwen2VisionConfig, weights: dict[str, torch.Tensor]) -> None:
    """InputError naming the missing tensors and the ones of the wrong shape."""
    shapes = weight_shapes(cfg)
    missing = [name for name in shapes if name not in weights]
    wrong = [f"{name} {tuple(weights[name].shape)} (expected {shape})" for name, shape in shapes.items()
             if name in weights and tuple(weights[name].shape) != shape]
    if missing or wrong:
        raise InputError(f"{cfg.model_type} vision tower: " + "; ".join(
            ([f"{len(missing)} weights missing: {', '.join(missing[:5])}"] if missing else [])
            + ([f"wrong shapes: {', '.join(wrong[:5])}"] if wrong else [])))


class Qwen2VisionTower:
    """`forward(pixel_values [N, C*tp*p*p], grid_thw [n, 3]) -> [N / merge**2, out_hidden_size]`."""

    def __init__(self, cfg: Qwen2VisionConfig, weights: dict[str, torch.Tensor], ops):
        check_weights(cfg, weights)
        self.cfg, self.ops = cfg, ops
        patch = weights["patch_embed.proj.weight"]
        self.patch_weight = patch.reshape(cfg.hidden_size, cfg.patch_dim)  # [D, C, tp, p, p] -> [D, C*tp*p*p], kept
        self.blocks = [VisionBlock(cfg, with_prefix(weights, f"blocks.{i}."), ops) for i in range(cfg.depth)]
        self.merger = with_prefix(weights, "merger.")

    def check_inputs(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> None:
        cfg = self.cfg
        if pixel_values.dim() != 2 or pixel_values.shape[1] != cfg.patch_dim:
            raise InputError(f"pixel_values must be [patches, {cfg.patch_dim}], got {tuple(pixel_values.shape)}")
        if grid_thw.dim() != 2 or grid_thw.shape[1] != 3 or len(grid_thw) == 0 or grid_thw.is_floating_point():
            raise InputError(f"grid_thw must be integers [images, 3], got {tuple(grid_thw.shape)} {grid_thw.dtype}")
        merge = cfg.spatial_merge_size
        if (grid_thw < 1).any() or (grid_thw[:, 1:] % merge).any():
            raise InputError(f"grid_thw {grid_thw.tolist()}: every (t, h, w) must be positive, h and w multiples "
                             f"of spatial_merge_size {merge}")
        if int(grid_thw.prod(dim=1).sum()) != len(pixel_values):
            raise InputError(f"grid_thw {grid_thw.tolist()} holds {int(grid_thw.prod(dim=1).sum())} patches, "
                             f"pixel_values {len(pixel_values)}")

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """Every image's merged tokens, image after image: `[N / merge**2, out_hidden_size]`."""
        self.check_inputs(pixel_values, grid_thw)
        cfg, ops, merge = self.cfg, self.ops, self.cfg.spatial_merge_size
        x = ops.linear(pixel_values.to(self.patch_weight.dtype), self.patch_weight)  # [N, D]
        positions = patch_positions(grid_thw, merge)  # [N, 2]
        frames = Segments.from_lengths(frame_lengths(grid_thw))
        windows = units = None
        if not cfg.layer_norm:  # Qwen2.5-VL: the blocks see the units in window order
            units, lengths = window_order(grid_thw, merge, cfg.window_units)
            windows = Segments.from_lengths(lengths)
            rows = unit_rows(units, merge)
            x, positions = x[rows], positions[rows]  # [N, D], [N, 2] in window order
        positions = positions[None]  # [1, N, 2]: one tensor for every block (the CPU path keeps its angles)
        for i, block in enumerate(self.blocks):
            full = windows is None or i in cfg.fullatt_block_indexes
            x = block.forward(x, positions, frames if full else windows)
        w = self.merger
        h = vision_norm(cfg, ops, w, "ln_q", x).reshape(-1, cfg.hidden_size * merge**2)  # [N, D] -> [N/m^2, D*m^2]
        h = ops.linear(h, w["mlp.0.weight"], w["mlp.0.bias"], activation="gelu")
        h = ops.linear(h, w["mlp.2.weight"], w["mlp.2.bias"])  # [N/m^2, out_hidden_size]
        if units is None:
            return h
        return torch.empty_like(h).index_copy_(0, units, h)  # back to the processor's order
