"""Image features (vision tower + connector/projector) against transformers' get_image_features."""

import pytest
import torch

from minilazy.kernels.backend import Ops
from minilazy.config import load_config
from minilazy.models.clip import CLIPVisionTower
from minilazy.models.connector import Idefics3Connector, LlavaProjector, pixel_shuffle
from minilazy.models.siglip import SigLIPVisionTower, position_ids
from tests.helpers import assert_close
from tests.runtime.tiny_models import llama_text_config, random_init_, save_llava
from weights.loader import load_weights


def save_idefics3(path, image_size=64, patch=16, scale=2):
    """An Idefics3 model with a small SigLIP tower: (image_size / patch / scale)^2 tokens per image."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    vision = dict(hidden_size=32, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
                  image_size=image_size, patch_size=patch, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    cfg = Idefics3Config(text_config=llama_text_config(hidden=48, layers=1), vision_config=vision,
                         scale_factor=scale, image_token_id=95)
    model = random_init_(Idefics3ForConditionalGeneration(cfg).eval())
    model.save_pretrained(path)
    return model


def _part(weights, prefix):
    return {name.removeprefix(prefix): w for name, w in weights.items() if name.startswith(prefix)}


def _load(path):
    config = load_config(path)
    return config, load_weights(path, config)


@pytest.fixture(scope="module")
def idefics3(tmp_path_factory):
    path = tmp_path_factory.mktemp("idefics3")
    return save_idefics3(path), *_load(path)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_idefics3_image_features_match_transformers(idefics3, backend):
    ref, config, weights = idefics3
    ops = Ops(backend)
    tower = SigLIPVisionTower(config, _part(weights, "vision."), ops)
    connector = Idefics3Connector(config, _part(weights, "projector."), ops)
    # two samples of two image slots; sample 1's second slot is padding (all zeros)
    pixels = torch.randn(2, 2, 3, 64, 64)
    pixels[1, 1] = 0
    with torch.no_grad():
        expected = torch.cat(ref.model.get_image_features(pixels).pooler_output)  # [3 * 4, Dt]
        got = connector.forward(tower.forward(pixels.flatten(0, 1)))  # [3, 4, Dt]
    assert got.shape == (3, 4, 48)
    assert_close(got.reshape(-1, 48), expected, 1e-4, 1e-4, f"Idefics3 image features ({backend})")
    assert tower.forward(torch.zeros(2, 3, 64, 64)).shape == (0, 16, 32)  # padding only


def test_siglip_position_ids_for_padded_patches(idefics3):
    ref, config, weights = idefics3
    full = torch.ones(1, 4, 4, dtype=torch.bool)
    assert position_ids(full, 4).tolist() == [list(range(16))]
    # real patches: 3 rows x 2 columns of a 4 x 4 grid
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, :3, :2] = True
    mask[1] = True
    pixels = torch.randn(2, 3, 64, 64)
    tower = SigLIPVisionTower(config, _part(weights, "vision."), Ops("torch"))
    with torch.no_grad():
        expected = ref.model.vision_model.embeddings(pixels, patch_attention_mask=mask)
        got = tower.embed(pixels, mask)
    assert_close(got, expected, 1e-5, 1e-5, "SigLIP embeddings with padded patches")


def test_pixel_shuffle_concatenates_blocks_row_by_row():
    x = torch.arange(16.0).view(1, 16, 1)  # a 4 x 4 grid of one-channel patches, numbered row-major
    assert pixel_shuffle(x, 2).squeeze(0).tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    with pytest.raises(ValueError, match="square grid"):
        pixel_shuffle(torch.zeros(1, 12, 3), 2)


@pytest.mark.parametrize("strategy,layer", [("default", -2), ("full", 1)])
def test_llava_image_features_match_transformers(tmp_path, strategy, layer):
    ref = save_llava(tmp_path, vision_feature_select_strategy=strategy, vision_feature_layer=layer)
    config, weights = _load(tmp_path)
    ops = Ops("torch")
    tower = CLIPVisionTower(config, _part(weights, "vision."), ops)
    projector = LlavaProjector(config, _part(weights, "projector."), ops)
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        expected = torch.stack(ref.model.get_image_features(
            pixels, vision_feature_layer=layer, vision_feature_select_strategy=strategy).pooler_output)
        got = projector.forward(tower.forward(pixels))
    assert got.shape == (2, 16 + (strategy == "full"), 64)
    assert_close(got, expected, 1e-4, 1e-4, f"LLaVA image features ({strategy}, layer {layer})")
