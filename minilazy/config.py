"""Model configuration read from a Hugging Face `config.json`.

Supported model types: `llava` (LLaVA-1.5: CLIP tower, MLP projector,
Llama decoder), `idefics3` (SmolVLM: SigLIP tower, pixel-shuffle connector,
Llama decoder), `qwen2_vl` and `qwen2_5_vl` (Qwen2-VL's vision tower with its
patch merger; a Qwen2 decoder: Llama with q/k/v biases and multimodal RoPE) and
`llama` (a text-only decoder). Missing fields take the defaults of
transformers' config classes, which is what transformers does when it loads the
same file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from minilazy.errors import InputError

if TYPE_CHECKING:
    from minilazy.models.qwen2_vision import Qwen2VisionConfig

SUPPORTED_MODEL_TYPES = ("llava", "idefics3", "qwen2_vl", "qwen2_5_vl", "llama")
QWEN2_VL_TYPES = ("qwen2_vl", "qwen2_5_vl")

# transformers' defaults for the decoders: LlamaConfig, and Qwen2VLTextConfig (Qwen2_5_VLTextConfig's are the same).
_TEXT_DEFAULTS = {
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=2048),
    "qwen2": dict(vocab_size=152064, hidden_size=8192, intermediate_size=29568, num_hidden_layers=80,
                  num_attention_heads=64, rms_norm_eps=1e-5, rope_theta=1000000.0, max_position_embeddings=32768),
}
QWEN2_MROPE_SECTION = (16, 24, 24)  # Qwen2VLRotaryEmbedding's default when the config names none


@dataclass(frozen=True)
class TextConfig:
    """A Llama decoder, or a Qwen2 one: q/k/v with biases (`attention_bias`) and multimodal RoPE, whose
    `mrope_section` gives the head's rotary columns per position axis (t, h, w); None for plain RoPE."""

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
    mrope_section: tuple[int, ...] | None = None
    attention_bias: bool = False

    def __post_init__(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise InputError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.mrope_section is not None and (sum(self.mrope_section) != self.head_dim // 2
                                               or min(self.mrope_section) < 1):
            raise InputError(f"mrope_section {list(self.mrope_section)} must be positive and sum to head_dim / 2 "
                             f"= {self.head_dim // 2}")

    @classmethod
    def from_dict(cls, d: dict, tie_word_embeddings: bool | None = None, family: str = "llama") -> TextConfig:
        """`family` "llama" or "qwen2" (multimodal RoPE, q/k/v biases, head_dim = hidden / heads as
        transformers' Qwen2-VL attention computes it)."""
        defaults = _TEXT_DEFAULTS[family]
        heads = d.get("num_attention_heads", defaults["num_attention_heads"])
        hidden = d.get("hidden_size", defaults["hidden_size"])
        rope = rope_settings(d, multimodal=family == "qwen2")
        head_dim = d.get("head_dim") if family == "llama" else None  # Qwen2-VL's attention ignores head_dim
        tie = d.get("tie_word_embeddings", False) if tie_word_embeddings is None else tie_word_embeddings
        if family == "qwen2" and d.get("use_sliding_window"):
            raise InputError("sliding-window attention in the decoder (use_sliding_window) is not implemented")
        return cls(
            vocab_size=d.get("vocab_size", defaults["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=d.get("intermediate_size", defaults["intermediate_size"]),
            num_hidden_layers=d.get("num_hidden_layers", defaults["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=d.get("num_key_value_heads") or heads,
            head_dim=head_dim or hidden // heads,
            rms_norm_eps=d.get("rms_norm_eps", defaults["rms_norm_eps"]),
            rope_theta=float(rope.get("rope_theta", d.get("rope_theta", defaults["rope_theta"]))),
            max_position_embeddings=d.get("max_position_embeddings", defaults["max_position_embeddings"]),
            tie_word_embeddings=bool(tie),
            mrope_section=tuple(rope.get("mrope_section", QWEN2_MROPE_SECTION)) if family == "qwen2" else None,
            attention_bias=family == "qwen2",
        )


def rope_settings(d: dict, multimodal: bool) -> dict:
    """The RoPE entry of a text config: `rope_parameters` (transformers 5) or `rope_scaling` (before), with a
    clear error for any type but the default (and, for Qwen2-VL, its "mrope", the default on three axes)."""
    rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise InputError(f"the RoPE settings must be a JSON object, got {rope!r}")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in (("default", "mrope") if multimodal else ("default",)):
        raise InputError(f"unsupported RoPE type {rope_type!r}: only the default RoPE"
                         f"{' and mrope' if multimodal else ''} is implemented")
    return rope


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
    vision: VisionConfig | Qwen2VisionConfig | None = None
    image_token_id: int | None = None
    # llava
    projector_hidden_act: str = "gelu"
    vision_feature_layer: int = -2
    vision_feature_select_strategy: str = "default"
    # idefics3
    scale_factor: int = 1
    # qwen2_vl, qwen2_5_vl: image features are merged from spatial_merge_size^2 patches each
    spatial_merge_size: int = 1

    @property
    def multimodal_rope(self) -> bool:
        """Whether RoPE positions have three axes (t, h, w), computed by minilazy/mrope.py."""
        return self.text.mrope_section is not None

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
    if model_type in QWEN2_VL_TYPES:
        return qwen2_vl_config(d)
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


def qwen2_vl_config(d: dict) -> ModelConfig:
    """Qwen2-VL or Qwen2.5-VL: transformers 5 writes the decoder's fields in `text_config`, earlier versions
    at the top level (with `rope_scaling: {"type": "mrope", ...}`)."""
    from minilazy.models.qwen2_vision import Qwen2VisionConfig

    text = d.get("text_config") or d
    vision = d.get("vision_config") or {}
    tie = d.get("tie_word_embeddings") or text.get("tie_word_embeddings", False)
    return ModelConfig(
        d["model_type"],
        TextConfig.from_dict(text, tie, family="qwen2"),
        Qwen2VisionConfig.from_dict(d["model_type"], vision),
        image_token_id=d.get("image_token_id", 151655),
        spatial_merge_size=vision.get("spatial_merge_size", 2),
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
