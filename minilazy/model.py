"""The whole model: vision tower, connector and Llama (or Qwen2) decoder, built from one weights dict.

`Model.from_pretrained(dir)` reads a Hugging Face checkpoint; `Model.from_weights`
wraps tensors already in memory (the demo model's training uses it, with leaf
tensors that require grad, on the torch backend). Image features replace the
embeddings of the image tokens, in order. Qwen2-VL's tower ends in its own patch
merger (no separate connector) and takes each image's patch grid; its decoder's
RoPE positions have three axes (`rope_positions`, minilazy/mrope.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from minilazy.kernels import Ops
from minilazy.config import QWEN2_VL_TYPES, ModelConfig, load_config
from minilazy.errors import InputError
from minilazy.hooks import DecoderSetup, DecoderSetupHook
from minilazy.models import with_prefix
from minilazy.models.fused import fuse_projections
from minilazy.models.llama import LlamaDecoder
from minilazy.mrope import MRopePositions
from minilazy.step import Step


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the projections of `x` come out in: autocast's when it is on (bf16 training), else x's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


class Model:
    def __init__(self, config: ModelConfig, weights: dict[str, torch.Tensor], ops: Ops):
        weights = dict(weights)  # the fused matrices below go into the model's own dict, not the caller's
        self.config, self.weights, self.ops = config, weights, ops
        for i in range(config.text.num_hidden_layers):
            fuse_projections(weights, f"text.layers.{i}.")
        text = with_prefix(weights, "text.")
        if "lm_head.weight" in weights:
            text["lm_head.weight"] = weights["lm_head.weight"]
        self.decoder = LlamaDecoder(config.text, text, ops)
        self.vision = self.connector = None
        if config.model_type == "llava":
            from minilazy.models.clip import CLIPVisionTower
            from minilazy.models.connector import LlavaProjector

            self.vision = CLIPVisionTower(config, with_prefix(weights, "vision."), ops)
            self.connector = LlavaProjector(config, with_prefix(weights, "projector."), ops)
        elif config.model_type == "idefics3":
            from minilazy.models.connector import Idefics3Connector
            from minilazy.models.siglip import SigLIPVisionTower

            self.vision = SigLIPVisionTower(config, with_prefix(weights, "vision."), ops)
            self.connector = Idefics3Connector(config, with_prefix(weights, "projector."), ops)
        elif config.model_type in QWEN2_VL_TYPES:
            from minilazy.models.qwen2_vision import Qwen2VisionTower

            self.vision = Qwen2VisionTower(config.vision, with_prefix(weights, "vision."), ops)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, dtype: torch.dtype = torch.float32, backend: str = "auto",
                        device: str | torch.device | None = None) -> Model:
        """`device` holds the weights and every cache (default: CUDA for the triton backend where there is
        a GPU, else the CPU)."""
        from weights.loader import load_weights

        config = load_config(model_dir)
        ops = Ops(backend)
        if device is None:
            device = "cuda" if ops.backend == "triton" and torch.cuda.is_available() else "cpu"
        weights = {name: t.to(device) for name, t in load_weights(model_dir, config, dtype=dtype).items()}
        return cls(config, weights, ops)

    @classmethod
    def from_weights(cls, config: ModelConfig, weights: dict[str, torch.Tensor], backend: str = "torch") -> Model:
        """A model over `weights`. Decoder projections that need no gradients are fused into copies
        (minilazy/models/fused.py): make weights trainable before building the model, not after."""
        return cls(config, weights, Ops(backend))

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.embed_tokens.dtype

    @property
    def device(self) -> torch.device:
        return self.decoder.embed_tokens.device

    def image_features(self, pixel_values: torch.Tensor, image_grid: torch.Tensor | None = None) -> torch.Tensor:
        """`pixel_values [N, 3, S, S]` -> one decoder embedding per image token, `[N * tokens, D]`; for
        Qwen2-VL, `pixel_values [patches, C * t * p * p]` of images whose grids are `image_grid [n, 3]`."""
        if self.vision is None:
            raise InputError(f"this {self.config.model_type} model has no vision tower: it cannot take images")
        pixel_values = pixel_values.to(self.device)  # a request's pixels are made on the CPU
        if self.connector is None:
            if image_grid is None:
                raise InputError(f"a {self.config.model_type} model needs the patch grid of each image")
            return self.vision.forward(pixel_values, image_grid.to(self.device))  # [patches / merge^2, D]
        features = self.connector.forward(self.vision.forward(pixel_values))  # [N, P, D]
        return features.reshape(-1, features.shape[-1])  # [N*P, D]

    def rope_positions(self, ids: torch.Tensor, lengths: torch.Tensor,
                       image_grid: torch.Tensor | None) -> MRopePositions | None:
        """The multimodal RoPE positions of prompts `ids [B, T]` (real lengths `lengths [B]`) whose images have
        the patch grids `image_grid [n_images, 3]` in order; None for a model with plain RoPE."""
        if not self.config.multimodal_rope:
            return None
        return MRopePositions.of_prompts(ids, lengths, self.config.image_token_id, image_grid,
                                         self.config.spatial_merge_size)

    def embed(self, ids: torch.Tensor, image_features: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings `[B, T, D]` with the image tokens' rows replaced by `image_features`, in order."""
        x = self.decoder.embed(ids)
        if self.config.image_token_id is None:
            return x
        rows = (ids.reshape(-1) == self.config.image_token_id).nonzero()[:, 0]  # flat [B*T] row of each image token
        n_features = 0 if image_features is None else image_features.shape[0]
        if rows.numel() != n_features:
            raise InputError(f"the prompt has {rows.numel()} image tokens but the images give {n_features} features")
        if n_features:
            x = self.ops.merge_image_features(x, image_features.to(x.dtype), rows)
        return x

    def forward_logits(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None, lengths: torch.Tensor,
                       decoder_setup: DecoderSetupHook | None = None,
                       image_grid: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits `[B, T, V]` of padded sequences `input_ids [B, T]` (real lengths `lengths [B]`);
        `image_grid [n_images, 3]`: the patch grids of Qwen2-VL's images.

        `decoder_setup` builds the caches and hooks of a feature (e.g. a LazyRuntime; default: the plain
        model). Under autocast (training in bf16) the KV cache takes autocast's dtype, the projections' own.
        """
        batch, width = input_ids.shape
        features = None if pixel_values is None else self.image_features(pixel_values, image_grid)
        x = self.embed(input_ids, features)
        if decoder_setup is None:
            setup = DecoderSetup.plain(self, batch, width, compute_dtype(x))
        else:
            setup = decoder_setup(self, input_ids, lengths, width, width)
        step = Step.span(torch.zeros_like(lengths), lengths, width, self.rope_positions(input_ids, lengths, image_grid))
        hidden, _ = self.decoder.forward(x, setup.context(step))
        return self.decoder.logits(hidden)
