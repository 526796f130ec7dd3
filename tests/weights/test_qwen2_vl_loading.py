"""Qwen2-VL and Qwen2.5-VL checkpoints: both key layouts, tied and untied heads, old and new config.json,
and one clear error for each broken checkpoint."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from minilazy.config import load_config, parse_config
from minilazy.errors import InputError
from weights.layouts import expected_shapes
from weights.loader import load_weights
from tests.runtime.tiny_qwen_models import qwen_model

# transformers 5.x in memory -> canonical prefixes (written out here, independently of weights/layouts.py)
IN_MEMORY = {"model.language_model.": "text.", "model.visual.": "vision.", "lm_head.": "lm_head."}


def canonical_state(model) -> dict[str, torch.Tensor]:
    state = {}
    for key, tensor in model.state_dict().items():
        prefix = next(p for p in IN_MEMORY if key.startswith(p))
        state[IN_MEMORY[prefix] + key[len(prefix):]] = tensor
    return state


@pytest.fixture(scope="module", params=[("qwen2_vl", False), ("qwen2_5_vl", True)], ids=["qwen2_vl", "qwen2_5_vl-tied"])
def saved(request, tmp_path_factory):
    model_type, tie = request.param
    path = tmp_path_factory.mktemp(model_type)
    model = qwen_model(model_type, text=dict(layers=2, tie=tie))
    model.save_pretrained(path)
    return model, path


def copy_with(source, target, tensors=None, config=None):
    """A model directory at `target` with `source`'s config.json (or `config`) and tensors (or `tensors`)."""
    target.mkdir()
    (target / "config.json").write_text(json.dumps(config) if config else (source / "config.json").read_text())
    save_file(tensors if tensors is not None else load_file(source / "model.safetensors"), target / "model.safetensors")
    return target


def check_loaded(path, model):
    config = load_config(path)
    loaded = load_weights(path, config)
    reference = canonical_state(model)
    assert sorted(loaded) == sorted(expected_shapes(config))
    for name, tensor in loaded.items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=0, msg=name)
    assert ("lm_head.weight" in loaded) != config.text.tie_word_embeddings


def test_saved_layout(saved):
    model, path = saved
    keys = load_file(path / "model.safetensors").keys()
    assert any(k.startswith("visual.") for k in keys) and any(k.startswith("model.layers.") for k in keys)
    check_loaded(path, model)


def test_in_memory_layout(saved, tmp_path):
    model, path = saved
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        del tensors["lm_head.weight"]
    check_loaded(copy_with(path, tmp_path / "new", tensors), model)


def flat_config(config: dict) -> dict:
    """The config.json of checkpoints written before transformers 5: the decoder's fields at the top level,
    `rope_scaling` of type "mrope" and `rope_theta` beside it."""
    text = dict(config.pop("text_config"))
    rope = text.pop("rope_parameters")
    return {**config, **text, "model_type": config["model_type"], "rope_theta": rope["rope_theta"],
            "rope_scaling": {"type": "mrope", "mrope_section": rope["mrope_section"]}}


def test_old_config_reads_as_the_new(saved):
    _, path = saved
    new = json.loads((path / "config.json").read_text())
    old = parse_config(flat_config(dict(new)))
    assert old == parse_config(new)
    assert old.text.mrope_section == (2, 2, 2) and old.text.attention_bias and old.text.rope_theta == 10000.0


def test_missing_and_misshaped_tensors_in_one_error(saved, tmp_path):
    model, path = saved
    tensors = load_file(path / "model.safetensors")
    del tensors["model.layers.1.self_attn.k_proj.bias"]
    tensors["visual.blocks.0.norm1.weight"] = torch.zeros(3)
    broken = copy_with(path, tmp_path / "broken", tensors)
    with pytest.raises(InputError) as err:
        load_weights(broken, load_config(broken))
    message = str(err.value)
    for expected in ("does not match config.json", "missing", "text.layers.1.self_attn.k_proj.bias [24]",
                     "wrong shape 1", "visual.blocks.0.norm1.weight is [3], expected [32]"):
        assert expected in message, f"{expected!r} not in {message!r}"


@pytest.mark.parametrize("rope", [{"rope_type": "yarn", "factor": 2.0}, {"type": "dynamic", "factor": 2.0}])
def test_unknown_rope_type(saved, tmp_path, rope):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["text_config"]["rope_parameters"] = {**rope, "rope_theta": 10000.0, "mrope_section": [2, 2, 2]}
    directory = copy_with(path, tmp_path / "rope", config=config)
    with pytest.raises(InputError, match=f"unsupported RoPE type '{rope.get('rope_type', rope.get('type'))}'"):
        load_config(directory)


def test_mrope_section_must_cover_the_head(saved):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["text_config"]["rope_parameters"]["mrope_section"] = [2, 2, 3]
    with pytest.raises(InputError, match="must be positive and sum to head_dim / 2 = 6"):
        parse_config(config)
