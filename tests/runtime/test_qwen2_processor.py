"""Qwen2-VL image processing and prompts against transformers' `Qwen2VLImageProcessorPil` and `Qwen2VLProcessor`.

Tiny patches (4 pixels, merge 2: multiples of 8) keep the images small; the sizes cover both
orientations, an image below min_pixels (scaled up), one above max_pixels (scaled down) and one that
is already a multiple of 8.
"""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Qwen2VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from minilazy.errors import InputError
from minilazy.image_processing.qwen2_vl import Qwen2VLImageProcessor
from minilazy.prompts import ImageLayout, build_prompt, prompt_text
from tests.helpers import assert_close
from tests.runtime.tiny_qwen import (
    QWEN2_VL_CHAT_TEMPLATE,
    QWEN_TOKEN_IDS,
    qwen_preprocessor_config,
    tiny_qwen_tokenizer,
    transformers_tokenizer,
)

CONFIG = qwen_preprocessor_config(min_tokens=4, max_tokens=40)  # 256 to 2560 pixels
SIZES = [(40, 30), (30, 41), (9, 13), (300, 70), (64, 48), (17, 120)]  # (width, height)
QUESTION = "What is in the picture?"


def _image(width, height, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _reference_processor():
    keys = ("min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size")
    return Qwen2VLImageProcessorPil(**{key: CONFIG[key] for key in keys})


class _ProcessorWithoutVideo(Qwen2VLProcessor):
    """Qwen2VLProcessor with no video processor: transformers' needs torchvision, which is not installed."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and argument is None:
            return None
        return super().check_argument_for_proper_class(argument_name, argument)


@pytest.mark.parametrize("width, height", SIZES)
def test_pixels_and_grid_match_transformers(width, height):
    image = _image(width, height)
    expected = _reference_processor()(image, return_tensors="pt")
    actual = Qwen2VLImageProcessor.from_config(CONFIG)([image])
    assert torch.equal(actual.grid_thw, expected["image_grid_thw"])
    assert_close(actual.pixel_values, expected["pixel_values"], 1e-5, 0, f"{width}x{height}")


def test_several_images_concatenate_in_order():
    images = [_image(w, h, seed=i) for i, (w, h) in enumerate(SIZES)]
    expected = _reference_processor()(images, return_tensors="pt")
    actual = Qwen2VLImageProcessor.from_config(CONFIG)(images)
    assert actual.grid_thw.dtype == torch.int64 and torch.equal(actual.grid_thw, expected["image_grid_thw"])
    assert_close(actual.pixel_values, expected["pixel_values"], 1e-5, 0, "six images")
    assert actual.tokens_per_image == [t * h * w // 4 for t, h, w in expected["image_grid_thw"].tolist()]


def test_below_min_and_above_max_pixels():
    processor = Qwen2VLImageProcessor.from_config(CONFIG)
    assert processor.resized_size(9, 13) == (16, 24)  # 117 pixels -> at least 256
    height, width = processor.resized_size(70, 300)  # 21000 pixels -> at most 2560
    assert height * width <= CONFIG["max_pixels"] and height % 8 == 0 and width % 8 == 0


def test_config_forms():
    assert Qwen2VLImageProcessor.from_config(None) == Qwen2VLImageProcessor()
    newer = {"size": {"shortest_edge": 100, "longest_edge": 5000}, "patch_size": 4}
    assert Qwen2VLImageProcessor.from_config(newer).max_pixels == 5000
    both = {**newer, "max_pixels": 3000}  # the top-level keys win, as in transformers
    assert Qwen2VLImageProcessor.from_config(both).max_pixels == 3000
    image = _image(50, 20)
    expected = Qwen2VLImageProcessorPil(size=newer["size"], patch_size=4)(image, return_tensors="pt")
    assert torch.equal(Qwen2VLImageProcessor.from_config(newer)(image).grid_thw, expected["image_grid_thw"])


@pytest.mark.parametrize("config, message", [
    ({"patch_size": 0}, "patch_size must be a positive integer"),
    ({"merge_size": "2"}, "merge_size must be a positive integer"),
    ({"min_pixels": 5000, "max_pixels": 100}, "exceeds max_pixels"),
    ({"size": {"longest_edge": 100}}, "needs 'shortest_edge'"),
    ({"size": 100}, "size must be a dict"),
    ({"image_mean": [0.5]}, "3 channel values"),
    ({"do_resize": False}, "do_resize"),
    ({"resample": 99}, "resampling filter"),
])
def test_bad_config_values_are_input_errors(config, message):
    with pytest.raises(InputError, match=message):
        Qwen2VLImageProcessor.from_config(config)


def test_unusable_images_are_input_errors():
    processor = Qwen2VLImageProcessor.from_config(CONFIG)
    with pytest.raises(InputError, match="too thin"):
        processor([_image(402, 2)])
    with pytest.raises(InputError, match="no images"):
        processor([])


@pytest.mark.parametrize("sizes", [[(40, 30)], [(9, 13)], []])
def test_prompt_ids_match_transformers(sizes):
    images = [_image(w, h) for w, h in sizes]
    reference = _ProcessorWithoutVideo(image_processor=_reference_processor(), tokenizer=transformers_tokenizer(),
                                       chat_template=QWEN2_VL_CHAT_TEMPLATE)
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": QUESTION}]
    text = reference.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    expected = reference(text=[text], images=images or None, return_tensors="pt")["input_ids"][0].tolist()

    layout = None
    if images:
        (tokens,) = Qwen2VLImageProcessor.from_config(CONFIG)(images).tokens_per_image
        layout = ImageLayout(tokens_per_tile=tokens)
    ids = build_prompt("qwen2_vl", tiny_qwen_tokenizer(), QUESTION, layout)
    assert ids == expected
    assert ids.count(QWEN_TOKEN_IDS["<|image_pad|>"]) == (layout.tokens_per_tile if layout else 0)


def test_prompt_with_a_system_message_matches_the_template():
    tokenizer = transformers_tokenizer()
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    expected = text.replace("<|image_pad|>", "<|image_pad|>" * 3)
    assert prompt_text("qwen2_vl", QUESTION, ImageLayout(tokens_per_tile=3), system="Be brief.") == expected


def test_prompt_errors():
    tokenizer = tiny_qwen_tokenizer()
    with pytest.raises(InputError, match="expected 2"):  # the question holds a pad token of its own
        build_prompt("qwen2_vl", tokenizer, "<|image_pad|> why?", ImageLayout(tokens_per_tile=2))
    with pytest.raises(ValueError, match="one tile"):
        prompt_text("qwen2_vl", QUESTION, ImageLayout(tokens_per_tile=2, rows=1, cols=2))
