"""Checkpoint key layouts, and the canonical weight names and shapes each model needs.

transformers has written the same models under several key layouts over the
years. Inside minilazy every weight has one canonical name: the Hugging Face
name with the model-specific prefix replaced by

- `text.`       the Llama decoder without `model.` (`text.layers.0.self_attn.q_proj.weight`),
- `lm_head.`    the output head (absent when it is tied to the embedding),
- `vision.`     the vision tower without any `vision_model.` level,
- `projector.`  the LLaVA projector or the Idefics3 connector.

Layouts recognised (a checkpoint is mapped key by key, first matching prefix wins):

- LLaVA, original llava-hf: `language_model.model.*`, `language_model.lm_head.weight`,
  `vision_tower.vision_model.*`, `multi_modal_projector.*`.
- LLaVA, transformers 4.52-4.57: `model.language_model.*`, `model.vision_tower.vision_model.*`,
  `model.multi_modal_projector.*`, `lm_head.weight`.
- LLaVA, transformers 5.x: in memory as 4.52 without `vision_model.`; `save_pretrained`
  maps it back to the original names, still without `vision_model.` (`vision_tower.embeddings.*`).
- Idefics3/SmolVLM: `model.text_model.*`, `model.vision_model.*`, `model.connector.*`, `lm_head.weight`.
- Qwen2-VL and Qwen2.5-VL, transformers 5.x in memory: `model.language_model.*`, `model.visual.*`,
  `lm_head.weight`; on the Hub and as 5.x's `save_pretrained` writes them: `model.*` (the decoder),
  `visual.*`, `lm_head.weight`. The vision tower keeps its own names (patch merger included) under `vision.`.
- Llama: `model.*`, `lm_head.weight`.

Reference: `transformers/conversion_mapping.py` ("llava") and the models' `base_model_prefix`.
"""

from __future__ import annotations

from minilazy.config import QWEN2_VL_TYPES, ModelConfig, TextConfig, VisionConfig
from minilazy.errors import InputError
from minilazy.models.clip import layers_needed

# (checkpoint prefix, canonical prefix), most specific first.
LLAVA_ORIGINAL_PREFIXES = (
    ("language_model.model.", "text."),
    ("language_model.lm_head.", "lm_head."),
    ("vision_tower.vision_model.", "vision."),
    ("multi_modal_projector.", "projector."),
)

PREFIXES = {
    "llava": LLAVA_ORIGINAL_PREFIXES + (
        ("model.language_model.", "text."),
        ("model.vision_tower.vision_model.", "vision."),
        ("model.vision_tower.", "vision."),
        ("model.multi_modal_projector.", "projector."),
        ("vision_tower.", "vision."),
        ("lm_head.", "lm_head."),
    ),
    "idefics3": (
        ("model.text_model.", "text."),
        ("model.vision_model.", "vision."),
        ("model.connector.", "projector."),
        ("lm_head.", "lm_head."),
    ),
    "llama": (
        ("model.", "text."),
        ("lm_head.", "lm_head."),
    ),
}
PREFIXES["qwen2_vl"] = PREFIXES["qwen2_5_vl"] = (
    ("model.language_model.", "text."),
    ("model.visual.", "vision."),
    ("visual.", "vision."),
    ("model.", "text."),
    ("lm_head.", "lm_head."),
)

# Buffers that old checkpoints stored next to the weights; they are recomputed, never loaded.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "embeddings.position_ids")


def canonical_name(model_type: str, key: str) -> str | None:
    """The canonical name of checkpoint key `key`, or None when no layout of `model_type` knows it."""
    for source, target in PREFIXES[model_type]:
        if key.startswith(source):
            return target + key[len(source):]
    return None


def is_ignored(key: str) -> bool:
    """True for stored buffers (RoPE frequencies, position ids) that minilazy recomputes."""
    return key.endswith(IGNORED_SUFFIXES)


def vision_layers_used(config: ModelConfig) -> int:
    """How many vision encoder layers the image features go through (all of them for Idefics3)."""
    layers = config.vision.num_hidden_layers
    used = layers_needed(config) if config.model_type == "llava" else layers
    if not 0 <= used <= layers:
        raise InputError(
            f"vision_feature_layer {config.vision_feature_layer} is out of range for a "
            f"{layers}-layer vision tower (expected -{layers + 1}..{layers})"
        )
    return used


def _text_shapes(t: TextConfig) -> dict[str, tuple[int, ...]]:
    d, q, kv = t.hidden_size, t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    shapes = {"text.embed_tokens.weight": (t.vocab_size, d), "text.norm.weight": (d,)}
    for i in range(t.num_hidden_layers):
        p = f"text.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (q, d),
            p + "self_attn.k_proj.weight": (kv, d),
            p + "self_attn.v_proj.weight": (kv, d),
            p + "self_attn.o_proj.weight": (d, q),
            **({p + f"self_attn.{name}_proj.bias": (n,) for name, n in (("q", q), ("k", kv), ("v", kv))}
               if t.attention_bias else {}),
            p + "post_attention_layernorm.weight": (d,),
            p + "mlp.gate_proj.weight": (t.intermediate_size, d),
            p + "mlp.up_proj.weight": (t.intermediate_size, d),
            p + "mlp.down_proj.weight": (d, t.intermediate_size),
        })
    return shapes


def _layer_norm(name: str, d: int) -> dict[str, tuple[int, ...]]:
    return {name + ".weight": (d,), name + ".bias": (d,)}


def _linear(name: str, n_out: int, n_in: int) -> dict[str, tuple[int, ...]]:
    return {name + ".weight": (n_out, n_in), name + ".bias": (n_out,)}


def _vision_layer_shapes(v: VisionConfig, i: int) -> dict[str, tuple[int, ...]]:
    d, p = v.hidden_size, f"vision.encoder.layers.{i}."
    shapes = {**_layer_norm(p + "layer_norm1", d), **_layer_norm(p + "layer_norm2", d)}
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        shapes.update(_linear(p + "self_attn." + proj, d, d))
    shapes.update(_linear(p + "mlp.fc1", v.intermediate_size, d))
    shapes.update(_linear(p + "mlp.fc2", d, v.intermediate_size))
    return shapes


def _vision_shapes(config: ModelConfig) -> tuple[dict, dict]:
    """(needed, accepted but unused) shapes of the vision tower."""
    v = config.vision
    d, n_patches = v.hidden_size, v.patches_per_side ** 2
    patch = (d, v.num_channels, v.patch_size, v.patch_size)
    needed = {"vision.embeddings.patch_embedding.weight": patch}
    unused = {}
    if v.kind == "clip":
        needed["vision.embeddings.class_embedding"] = (d,)
        needed["vision.embeddings.position_embedding.weight"] = (n_patches + 1, d)
        needed.update(_layer_norm("vision.pre_layrnorm", d))
        unused.update(_layer_norm("vision.post_layernorm", d))
    else:
        needed["vision.embeddings.patch_embedding.bias"] = (d,)
        needed["vision.embeddings.position_embedding.weight"] = (n_patches, d)
        needed.update(_layer_norm("vision.post_layernorm", d))
    used = vision_layers_used(config)
    for i in range(v.num_hidden_layers):
        (needed if i < used else unused).update(_vision_layer_shapes(v, i))
    return needed, unused


def _projector_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    dv, dt = config.vision.hidden_size, config.text.hidden_size
    if config.model_type == "llava":
        return {**_linear("projector.linear_1", dt, dv), **_linear("projector.linear_2", dt, dt)}
    return {"projector.modality_projection.proj.weight": (dt, dv * config.scale_factor ** 2)}


def _all_shapes(config: ModelConfig) -> tuple[dict, dict]:
    needed, unused = _text_shapes(config.text), {}
    head = {"lm_head.weight": (config.text.vocab_size, config.text.hidden_size)}
    (unused if config.text.tie_word_embeddings else needed).update(head)
    if config.model_type in QWEN2_VL_TYPES:
        from minilazy.models.qwen2_vision import weight_shapes

        needed.update({"vision." + name: shape for name, shape in weight_shapes(config.vision).items()})
    elif config.vision is not None:
        vision_needed, vision_unused = _vision_shapes(config)
        needed.update(vision_needed)
        needed.update(_projector_shapes(config))
        unused.update(vision_unused)
    return needed, unused


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every canonical weight the model needs, with its shape."""
    return _all_shapes(config)[0]


def unused_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Weights a checkpoint may hold that the model never reads (a tied head's copy,
    CLIP layers past the feature layer, CLIP's post_layernorm): accepted, not loaded."""
    return _all_shapes(config)[1]
