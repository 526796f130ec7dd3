"""The Qwen2-VL / Qwen2.5-VL vision tower against transformers' `Qwen2VisionTransformerPretrainedModel` and
`Qwen2_5_VisionTransformerPretrainedModel` (their `pooler_output`: the merger's output in image order).

Tiny towers (tests/runtime/tiny_qwen.py): patch 4, merge 2, head width 16; Qwen2.5-VL's windows are
2 x 2 merged units, so grids whose sides are not multiples of 4 patches give partial windows.
"""

import pytest
import torch
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

from minilazy.errors import InputError
from minilazy.kernels.backend import Ops
from minilazy.models.qwen2_vision import Qwen2VisionConfig, Qwen2VisionTower, weight_shapes
from minilazy.models.qwen2_vision_blocks import window_order
from tests.helpers import assert_close
from tests.runtime.tiny_models import random_init_
from tests.runtime.tiny_qwen import qwen_vision_config

REFERENCES = {
    "qwen2_vl": (Qwen2VLVisionConfig, Qwen2VisionTransformerPretrainedModel),
    "qwen2_5_vl": (Qwen2_5_VLVisionConfig, Qwen2_5_VisionTransformerPretrainedModel),
}


def _reference(model_type, **overrides):
    config_class, model_class = REFERENCES[model_type]
    config = config_class(**qwen_vision_config(model_type, **overrides))
    config._attn_implementation = "eager"
    return random_init_(model_class(config).eval(), std=0.1)


def _tower(model_type, reference, backend="torch", **overrides):
    cfg = Qwen2VisionConfig.from_dict(model_type, qwen_vision_config(model_type, **overrides))
    return Qwen2VisionTower(cfg, dict(reference.state_dict()), Ops(backend))


def _inputs(cfg, grids, seed=0):
    grid_thw = torch.tensor(grids, dtype=torch.int64)
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(int(grid_thw.prod(dim=1).sum()), cfg.patch_dim, generator=gen), grid_thw


def _check(model_type, grids, backend="torch", atol=1e-4, dtype=torch.float32, **overrides):
    reference = _reference(model_type, **overrides).to(dtype)
    tower = _tower(model_type, reference, backend, **overrides)
    pixels, grid_thw = _inputs(tower.cfg, grids)
    with torch.no_grad():
        expected = reference(pixels, grid_thw).pooler_output
        actual = tower.forward(pixels, grid_thw)
    assert expected.float().std() > 0.05  # the weights change the output visibly
    assert actual.dtype == dtype
    assert_close(actual, expected, atol, atol, f"{model_type} {grids} {backend}")


@pytest.mark.parametrize("grids", [[[1, 4, 6]], [[1, 6, 4], [1, 2, 2]]])
def test_qwen2_vl_tower_matches_transformers(grids):
    _check("qwen2_vl", grids)


@pytest.mark.parametrize("grids", [
    [[1, 8, 8]],  # 4 whole windows
    [[1, 10, 6], [1, 4, 12]],  # two images, partial windows (5 x 3 and 2 x 6 units)
    [[2, 4, 4]],  # two frames: windows and full attention per frame
])
def test_qwen2_5_vl_tower_matches_transformers(grids):
    _check("qwen2_5_vl", grids)


def test_qwen2_5_vl_with_every_block_windowed_and_a_wider_window():
    _check("qwen2_5_vl", [[1, 10, 14]], fullatt_block_indexes=[], window_size=24)


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen2_5_vl"])
def test_bf16_matches_transformers(model_type):
    _check(model_type, [[1, 10, 6], [1, 4, 4]], atol=2e-2, dtype=torch.bfloat16)


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen2_5_vl"])
def test_triton_backend(model_type):
    _check(model_type, [[1, 4, 6], [1, 2, 2]], backend="triton", depth=2)


def test_window_order_matches_transformers():
    from transformers.vision_utils import get_vision_window_index

    grid_thw = torch.tensor([[1, 10, 6], [2, 4, 12], [1, 8, 8]])
    units, lengths = window_order(grid_thw, merge=2, window=2)
    expected_units, cu_lengths = get_vision_window_index(grid_thw, 2, window_size=16, patch_size=4)
    assert torch.equal(units, expected_units)
    assert torch.equal(torch.cumsum(lengths, 0), cu_lengths[1:].long())


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen2_5_vl"])
def test_weight_shapes_name_every_transformers_weight(model_type):
    reference = _reference(model_type)
    cfg = Qwen2VisionConfig.from_dict(model_type, qwen_vision_config(model_type))
    assert weight_shapes(cfg) == {name: tuple(w.shape) for name, w in reference.state_dict().items()}


@pytest.mark.parametrize("model_type, config_class", [("qwen2_vl", Qwen2VLVisionConfig),
                                                      ("qwen2_5_vl", Qwen2_5_VLVisionConfig)])
def test_defaults_are_transformers_defaults(model_type, config_class):
    ours, theirs = Qwen2VisionConfig.from_dict(model_type, {}), config_class()
    width = theirs.embed_dim if model_type == "qwen2_vl" else theirs.hidden_size
    assert (ours.depth, ours.hidden_size, ours.num_heads, ours.patch_size, ours.hidden_act, ours.rope_theta) == (
        theirs.depth, width, theirs.num_heads, theirs.patch_size, theirs.hidden_act,
        theirs.rope_parameters["rope_theta"])
    if model_type == "qwen2_5_vl":
        assert (ours.out_hidden_size, ours.window_size, list(ours.fullatt_block_indexes)) == (
            theirs.out_hidden_size, theirs.window_size, list(theirs.fullatt_block_indexes))


@pytest.mark.parametrize("model_type, overrides, message", [
    ("qwen2_vl", {"depth": 0}, "depth must be a positive integer"),
    ("qwen2_vl", {"num_heads": 3}, "divisible by 4"),
    ("qwen2_vl", {"hidden_act": "relu6"}, "unsupported activation"),
    ("qwen2_5_vl", {"hidden_act": "gelu"}, "needs hidden_act 'silu'"),
    ("qwen2_5_vl", {"window_size": 4}, "smaller than one merged unit"),
    ("qwen2_5_vl", {"fullatt_block_indexes": [3]}, "must lie in 0..2"),
    ("qwen2_5_vl", {"rope_parameters": {"rope_type": "default"}}, "not supported"),
])
def test_bad_config_values_are_input_errors(model_type, overrides, message):
    with pytest.raises(InputError, match=message):
        Qwen2VisionConfig.from_dict(model_type, qwen_vision_config(model_type, **overrides))
    with pytest.raises(InputError, match="unknown Qwen vision model_type"):
        Qwen2VisionConfig.from_dict("qwen3_vl", {})


def test_bad_weights_and_inputs_are_input_errors():
    reference = _reference("qwen2_vl")
    weights = dict(reference.state_dict())
    cfg = Qwen2VisionConfig.from_dict("qwen2_vl", qwen_vision_config("qwen2_vl"))
    with pytest.raises(InputError, match="1 weights missing: merger.ln_q.bias"):
        Qwen2VisionTower(cfg, {k: w for k, w in weights.items() if k != "merger.ln_q.bias"}, Ops("torch"))
    with pytest.raises(InputError, match=r"wrong shapes: blocks.0.attn.qkv.bias \(95,\)"):
        Qwen2VisionTower(cfg, {**weights, "blocks.0.attn.qkv.bias": torch.zeros(95)}, Ops("torch"))
    tower = Qwen2VisionTower(cfg, weights, Ops("torch"))
    pixels, grid_thw = _inputs(cfg, [[1, 4, 6]])
    with pytest.raises(InputError, match="holds 24 patches, pixel_values 23"):
        tower.forward(pixels[:23], grid_thw)
    with pytest.raises(InputError, match="multiples of spatial_merge_size"):
        tower.forward(pixels, torch.tensor([[1, 3, 8]]))
    with pytest.raises(InputError, match=r"pixel_values must be \[patches, 96\]"):
        tower.forward(pixels[:, :95], grid_thw)
