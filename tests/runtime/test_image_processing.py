"""Image processors against transformers' PIL backend (the *ImageProcessorPil classes).

transformers 5.x picks a backend per processor: `AutoImageProcessor.from_pretrained(..., backend="pil")`
or the `*ImageProcessorPil` classes give the PIL/numpy one, which is what minilazy reproduces;
the torchvision backend (used when torchvision is installed) is not byte-identical.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from minilazy.errors import InputError
from minilazy.image_processing import read_preprocessor_config
from minilazy.image_processing.clip import ClipImageProcessor
from minilazy.image_processing.idefics3 import Idefics3ImageProcessor
from tests.helpers import assert_close

# (width, height): square, wide, tall, tiny, extreme aspect, large.
SIZES = [(64, 64), (200, 90), (90, 200), (7, 5), (300, 20), (1200, 900)]


def _image(width, height, mode="RGB", seed=0):
    channels = 4 if mode == "RGBA" else 3
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels, mode=mode)


@pytest.mark.parametrize(
    "width,height,reference_cls",
    [(w, h, LlavaImageProcessorPil) for w, h in SIZES] + [(200, 90, CLIPImageProcessorPil)],
)
def test_clip_matches_transformers(width, height, reference_cls):
    reference = reference_cls(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    assert reference.backend == "pil"
    images = [_image(width, height), _image(width, height, "RGBA", seed=1)]
    expected = reference(images, return_tensors="pt")["pixel_values"]
    actual = ClipImageProcessor(size=336, crop_size=336)(images)
    assert actual.dtype == torch.float32
    assert_close(actual, expected, atol=1e-5, rtol=0, what=f"clip pixel_values {width}x{height}")


def test_clip_crop_smaller_than_resize():
    reference = CLIPImageProcessorPil(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32})
    image = _image(61, 47)
    expected = reference(image, return_tensors="pt")["pixel_values"]
    assert_close(ClipImageProcessor(size=40, crop_size=32)(image), expected, 1e-5, 0, "clip 40->32")


def test_clip_from_config(tmp_path):
    assert ClipImageProcessor.from_config(None, image_size=224).size == 224
    config = {"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}, "resample": 3}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    processor = ClipImageProcessor.from_config(read_preprocessor_config(tmp_path), image_size=224)
    assert (processor.size, processor.crop_size) == (336, 336)
    assert read_preprocessor_config(tmp_path / "missing") is None
    with pytest.raises(ValueError, match="do_pad"):
        ClipImageProcessor.from_config({"do_pad": True}, image_size=336)


def test_processors_report_bad_files(tmp_path):
    path = tmp_path / "bad.png"
    path.write_text("not an image")
    with pytest.raises(InputError, match="not an image"):
        ClipImageProcessor()(str(path))
    with pytest.raises(InputError, match="no images"):
        Idefics3ImageProcessor()([])


def _idefics3_reference(images, longest_edge, tile_size, split):
    reference = Idefics3ImageProcessorPil(
        size={"longest_edge": longest_edge}, max_image_size={"longest_edge": tile_size}, do_image_splitting=split
    )
    assert reference.backend == "pil"
    return reference(images, return_tensors="pt", return_row_col_info=True)


@pytest.mark.parametrize("width,height", SIZES)
@pytest.mark.parametrize("split", [True, False])
def test_idefics3_matches_transformers(width, height, split):
    image = _image(width, height, "RGBA" if width == 90 else "RGB")
    expected = _idefics3_reference(image, 128, 32, split)
    actual = Idefics3ImageProcessor(longest_edge=128, tile_size=32, do_image_splitting=split)(image)
    assert (actual.rows, actual.cols) == (expected["rows"][0], expected["cols"][0])
    assert_close(actual.pixel_values, expected["pixel_values"][0], 1e-5, 0, f"idefics3 {width}x{height}")
    assert torch.equal(actual.pixel_attention_mask, expected["pixel_attention_mask"][0].bool())


@pytest.mark.parametrize("longest_edge,rows", [(32, 0), (48, 2)])
def test_idefics3_single_tile_and_rounding(longest_edge, rows):
    image = _image(50, 40)
    expected = _idefics3_reference(image, longest_edge, 32, True)
    actual = Idefics3ImageProcessor(longest_edge=longest_edge, tile_size=32)(image)
    assert actual.rows == expected["rows"][0] == [rows]
    assert_close(actual.pixel_values, expected["pixel_values"][0], 1e-5, 0, "idefics3 rounding")


def test_idefics3_several_images_in_order():
    images = [_image(200, 90), _image(30, 30, seed=2)]
    expected = _idefics3_reference(images, 128, 32, True)
    actual = Idefics3ImageProcessor(longest_edge=128, tile_size=32)(images)
    assert (actual.rows, actual.cols) == (expected["rows"][0], expected["cols"][0]) == ([2, 4], [4, 4])
    assert_close(actual.pixel_values, expected["pixel_values"][0], 1e-5, 0, "idefics3 two images")


def test_idefics3_real_sizes():
    # SmolVLM's own settings: 640x480 -> 3 x 4 tiles of 512 plus the global image.
    image = _image(640, 480)
    expected = _idefics3_reference(image, 2048, 512, True)
    config = {"size": {"longest_edge": 2048}, "max_image_size": {"longest_edge": 512}}
    processor = Idefics3ImageProcessor.from_config(config, image_size=512)
    actual = processor(image)
    assert (actual.rows, actual.cols) == ([3], [4])
    assert actual.pixel_values.shape == (13, 3, 512, 512)
    assert_close(actual.pixel_values, expected["pixel_values"][0], 1e-5, 0, "idefics3 2048/512")
