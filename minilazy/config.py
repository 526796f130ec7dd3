"""Model configuration read from a Hugging Face `config.json`.

Three model types are supported: `llava` (LLaVA-1.5: CLIP tower, MLP projector,
Llama decoder), `idefics3` (SmolVLM: SigLIP tower, pixel-shuffle connector,
Llama decoder) and `llama` (a text-only decoder). Missing fields take the
defaults of transformers' config classes, which is what transformers does when
it loads the same file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from minilazy.errors import InputError

SUPPORTED_MODEL_TYPES = ("llava", "idefics3", "llama")


@dataclass(frozen=True)
class TextConfig:
    """A Llama decoder."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool

    def __post_init__(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise InputError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )

    @classmethod
    def from_dict(cls, d: dict, tie_word_embeddings: bool | None = None) -> TextConfig:
        heads = d.get("num_attention_heads", 32)
        hidden = d.get("hidden_size", 4096)
        rope = d.get("rope_parameters") or {}
        rope_type = rope.get("rope_type", "default")
        if (d.get("rope_scaling") or {}).get("rope_type", "default") != "default" or rope_type != "default":
            raise InputError(f"unsupported RoPE scaling {rope_type!r}: only the default RoPE is implemented")
        tie = d.get("tie_word_embeddings", False) if tie_word_embeddings is None else tie_word_embeddings
        return cls(
            vocab_size=d.get("vocab_size", 32000),
            hidden_size=hidden,
            intermediate_size=d.get("intermediate_size", 11008),
            num_hidden_layers=d.get("num_hidden_layers", 32),
            num_attention_heads=heads,
            num_key_value_heads=d.get("num_key_value_heads") or heads,
            head_dim=d.get("head_dim") or hidden // heads,
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope.get("rope_theta", d.get("rope_theta", 10000.0))),
            max_position_embeddings=d.get("max_position_embeddings", 2048),
            tie_word_embeddings=bool(tie),
        )


# transformers' defaults for the two vision towers (CLIPVisionConfig as LlavaConfig
# fills it in, and Idefics3VisionConfig).
_VISION_DEFAULTS = {
    "clip": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                 image_size=336, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5),
    "siglip": dict(hidden_size=1152, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=16,
                   image_size=224, patch_size=32, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
}


@dataclass(frozen=True)
class VisionConfig:
    """A ViT image encoder: `clip` (class token, pre-LayerNorm) or `siglip` (no class token)."""

    kind: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int
    patch_size: int
    hidden_act: str
    layer_norm_eps: float
    num_channels: int = 3

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def patches_per_side(self) -> int:
        return self.image_size // self.patch_size

    @classmethod
    def from_dict(cls, kind: str, d: dict) -> VisionConfig:
        fields = {k: d.get(k, default) for k, default in _VISION_DEFAULTS[kind].items()}
        return cls(kind=kind, num_channels=d.get("num_channels", 3), **fields)


@dataclass(frozen=True)
class ModelConfig:
    """The whole model: decoder, optional vision tower, and how images enter the prompt."""

    model_type: str
    text: TextConfig
    vision: VisionConfig | None = None
    image_token_id: int | None = None
    # llava
    projector_hidden_act: str = "gelu"
    vision_feature_layer: int = -2
    vision_feature_select_strategy: str = "default"
    # idefics3
    scale_factor: int = 1

    @property
    def image_tokens_per_image(self) -> int:
        """Decoder tokens one image (or one Idefics3 tile) becomes."""
        if self.vision is None:
            return 0
        patches = self.vision.patches_per_side ** 2
        if self.model_type == "llava":
            return patches + (1 if self.vision_feature_select_strategy == "full" else 0)
        return patches // self.scale_factor**2


def parse_config(d: dict) -> ModelConfig:
    """Build a ModelConfig from the contents of a config.json."""
    model_type = d.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise InputError(
            f"unsupported model_type {model_type!r}; minilazy supports {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    if model_type == "llama":
        return ModelConfig("llama", TextConfig.from_dict(d))
    text = d.get("text_config") or {}
    vision = d.get("vision_config") or {}
    tie = d.get("tie_word_embeddings", text.get("tie_word_embeddings", False))
    if model_type == "llava":
        strategy = d.get("vision_feature_select_strategy", "default")
        layer = d.get("vision_feature_layer", -2)
        if strategy not in ("default", "full") or not isinstance(layer, int):
            raise InputError(
                f"unsupported LLaVA vision features: select strategy {strategy!r}, layer {layer!r} "
                "(supported: 'default' or 'full' with one integer layer)"
            )
        return ModelConfig(
            "llava",
            TextConfig.from_dict(text, tie),
            VisionConfig.from_dict("clip", vision),
            image_token_id=d.get("image_token_index", d.get("image_token_id", 32000)),
            projector_hidden_act=d.get("projector_hidden_act", "gelu"),
            vision_feature_layer=layer,
            vision_feature_select_strategy=strategy,
        )
    return ModelConfig(
        "idefics3",
        TextConfig.from_dict(text, tie),
        VisionConfig.from_dict("siglip", vision),
        image_token_id=d.get("image_token_id", 128257),
        scale_factor=d.get("scale_factor", 2),
    )


def read_json_object(path: Path) -> dict:
    """A checkpoint's JSON settings file as a dict, with a clear error when it is malformed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def write_json(path: str | Path, data: dict) -> None:
    """Write `data` as indented JSON (non-ASCII kept as it is) with a final newline, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def load_config(model_dir: str | Path) -> ModelConfig:
    """Read `model_dir/config.json`, with a clear error when it is missing or malformed."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise InputError(f"{model_dir}: no config.json (expected a Hugging Face model directory)")
    return parse_config(read_json_object(path))
