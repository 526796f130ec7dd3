"""Loading checkpoints in every key layout transformers has written, and the errors for broken ones.

Tiny random models are built with transformers; their tensors are the
reference. Older layouts are produced by renaming the keys of a state dict.
"""

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import (
    CLIPVisionConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from minilazy.config import load_config
from minilazy.errors import InputError
from weights.layouts import expected_shapes, unused_shapes
from weights.loader import load_weights
from weights.saver import save_llava_checkpoint

TEXT = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2)
# 3 CLIP layers with vision_feature_layer=-2: layer 2 and post_layernorm are unused.
CLIP = dict(hidden_size=32, intermediate_size=40, num_hidden_layers=3, num_attention_heads=2,
            image_size=28, patch_size=14)
SIGLIP = dict(hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2,
              image_size=64, patch_size=16)

# How transformers 5.x names the weights in memory -> canonical prefixes (written out here,
# independently of weights/layouts.py).
IN_MEMORY = {
    "llava": {"model.language_model.": "text.", "model.vision_tower.": "vision.",
              "model.multi_modal_projector.": "projector.", "lm_head.": "lm_head."},
    "idefics3": {"model.text_model.": "text.", "model.vision_model.": "vision.",
                 "model.connector.": "projector.", "lm_head.": "lm_head."},
    "llama": {"model.": "text.", "lm_head.": "lm_head."},
}
# canonical prefix -> key prefix of the older LLaVA layouts
LLAVA_ORIGINAL = {"text.": "language_model.model.", "lm_head.": "language_model.lm_head.",
                  "vision.": "vision_tower.vision_model.", "projector.": "multi_modal_projector."}
LLAVA_4_52 = {"text.": "model.language_model.", "lm_head.": "lm_head.",
              "vision.": "model.vision_tower.vision_model.", "projector.": "model.multi_modal_projector."}


def _rename(name, table):
    prefix = next(p for p in table if name.startswith(p))
    return table[prefix] + name[len(prefix):]


def _canonical_state(model, model_type):
    return {_rename(k, IN_MEMORY[model_type]): v.detach().clone() for k, v in model.state_dict().items()}


def _build(model_type, tie=False):
    torch.manual_seed(0)
    if model_type == "llama":
        return LlamaForCausalLM(LlamaConfig(**TEXT, tie_word_embeddings=tie)).eval()
    text = LlamaConfig(**TEXT, tie_word_embeddings=tie)
    if model_type == "llava":
        config = LlavaConfig(text_config=text, vision_config=CLIPVisionConfig(**CLIP), image_token_index=95,
                             tie_word_embeddings=tie)
        return LlavaForConditionalGeneration(config).eval()
    config = Idefics3Config(text_config=text.to_dict(), vision_config=SIGLIP, scale_factor=2, image_token_id=95,
                            tie_word_embeddings=tie)
    return Idefics3ForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def models():
    return {t: _build(t) for t in ("llava", "idefics3", "llama")}


def _write(directory, model, tensors):
    """A model directory with the model's config.json and `tensors` as model.safetensors."""
    directory.mkdir()
    model.config.to_json_file(directory / "config.json")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "model.safetensors"))
    return directory


def _check_loaded(directory, reference, **kwargs):
    config = load_config(directory)
    loaded = load_weights(directory, config, **kwargs)
    assert sorted(loaded) == sorted(expected_shapes(config))
    for name, tensor in loaded.items():
        assert tensor.dtype == kwargs.get("dtype", torch.float32), name
        torch.testing.assert_close(tensor, reference[name].to(tensor.dtype), rtol=0, atol=0, msg=name)
    return config, loaded


@pytest.mark.parametrize("model_type", ["llava", "idefics3", "llama"])
@pytest.mark.parametrize("shard", [False, True])
def test_save_pretrained_layout(models, tmp_path, model_type, shard):
    model = models[model_type]
    model.save_pretrained(tmp_path, **({"max_shard_size": "20KB"} if shard else {}))
    assert (tmp_path / "model.safetensors.index.json").is_file() == shard
    config, loaded = _check_loaded(tmp_path, _canonical_state(model, model_type))
    assert "lm_head.weight" in loaded
    if model_type == "llava":
        # layer 2 of 3 and post_layernorm come after vision_feature_layer=-2: accepted, not loaded
        assert "vision.encoder.layers.1.mlp.fc2.weight" in loaded
        assert "vision.encoder.layers.2.mlp.fc2.weight" not in loaded
        assert "vision.post_layernorm.weight" in unused_shapes(config)


@pytest.mark.parametrize("layout", ["original", "4.52", "5.x in memory"])
def test_llava_layouts(models, tmp_path, layout):
    model = models["llava"]
    reference = _canonical_state(model, "llava")
    if layout == "5.x in memory":
        tensors = model.state_dict()
    else:
        table = LLAVA_ORIGINAL if layout == "original" else LLAVA_4_52
        tensors = {_rename(name, table): t for name, t in reference.items()}
    _check_loaded(_write(tmp_path / "ckpt", model, tensors), reference)


def test_tied_head_and_dtype(tmp_path):
    model = _build("llama", tie=True)
    model.save_pretrained(tmp_path)
    config, loaded = _check_loaded(tmp_path, _canonical_state(model, "llama"), dtype=torch.bfloat16)
    assert "lm_head.weight" not in loaded and config.text.tie_word_embeddings
    assert load_weights(tmp_path, config, dtype=torch.float16)["text.norm.weight"].dtype == torch.float16


def test_saver_writes_original_llava_layout(models, tmp_path):
    model = models["llava"]
    reference = _canonical_state(model, "llava")
    config_dict = model.config.to_dict()
    save_llava_checkpoint(tmp_path, config_dict, reference)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "llava"
    _check_loaded(tmp_path, reference)
    reloaded = LlavaForConditionalGeneration.from_pretrained(tmp_path)
    for name, tensor in _canonical_state(reloaded, "llava").items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match="missing.*text.norm.weight"):
        incomplete = {k: v for k, v in reference.items() if k != "text.norm.weight"}
        save_llava_checkpoint(tmp_path / "bad", config_dict, incomplete)


def test_all_problems_in_one_error(models, tmp_path):
    model = models["llava"]
    tensors = {_rename(n, LLAVA_ORIGINAL): t for n, t in _canonical_state(model, "llava").items()}
    del tensors["language_model.model.layers.1.mlp.up_proj.weight"]
    del tensors["vision_tower.vision_model.encoder.layers.0.self_attn.k_proj.bias"]
    tensors["language_model.model.layers.0.self_attn.q_proj.bias"] = torch.zeros(32)
    tensors["multi_modal_projector.linear_2.weight"] = torch.zeros(32, 31)
    directory = _write(tmp_path / "ckpt", model, tensors)
    with pytest.raises(InputError) as err:
        load_weights(directory, load_config(directory))
    message = str(err.value)
    for expected in ("missing 2", "text.layers.1.mlp.up_proj.weight [48, 32]",
                     "vision.encoder.layers.0.self_attn.k_proj.bias [32]",
                     "unexpected 1", "language_model.model.layers.0.self_attn.q_proj.bias [32]",
                     "wrong shape 1", "multi_modal_projector.linear_2.weight is [32, 31], expected [32, 32]"):
        assert expected in message, f"{expected!r} not in {message!r}"


def test_same_weight_under_two_layouts(models, tmp_path):
    model = models["llava"]
    tensors = {_rename(n, LLAVA_ORIGINAL): t for n, t in _canonical_state(model, "llava").items()}
    tensors["lm_head.weight"] = tensors["language_model.lm_head.weight"]
    directory = _write(tmp_path / "ckpt", model, {k: v.clone() for k, v in tensors.items()})
    with pytest.raises(InputError, match="same weight 'lm_head.weight' under two key layouts"):
        load_weights(directory, load_config(directory))


def test_corrupt_and_missing_files(models, tmp_path):
    model = models["llama"]
    good = tmp_path / "good"
    model.save_pretrained(good)
    config = load_config(good)
    data = (good / "model.safetensors").read_bytes()
    garbage = b"\x10\x00\x00\x00\x00\x00\x00\x00{not json"
    for name, content in [("truncated", data[: len(data) - 100]), ("garbage", garbage)]:
        bad = tmp_path / name
        bad.mkdir()
        (bad / "model.safetensors").write_bytes(content)
        with pytest.raises(InputError, match=f"{name}/model.safetensors"):
            load_weights(bad, config)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no weights"):
        load_weights(empty, config)
    (empty / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(InputError, match="only safetensors"):
        load_weights(empty, config)
    (empty / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "shard-1.safetensors"}}))
    with pytest.raises(InputError, match="shard-1.safetensors"):
        load_weights(empty, config)
