"""Whole Qwen2-VL and Qwen2.5-VL models against transformers, on tiny random checkpoints.

Each checkpoint is built with transformers, saved with `save_pretrained` (the layout of the Hub's
checkpoints) and also rewritten in transformers 5's in-memory layout, loaded by minilazy from disk,
and checked as the other families are (tests/runtime/test_vlm_parity.py): prefill logits over
images + prompt within 1e-4, 16 greedy tokens identical to transformers' (which recomputes the whole
sequence each step, its multimodal RoPE positions included), and a batch of two requests of
different lengths giving each one's tokens.
"""

from __future__ import annotations

import pytest
import torch

from minilazy.generate import Request
from minilazy.image_processing.qwen2_vl import Qwen2VLImageProcessor
from minilazy.model import Model
from tests.runtime.test_vlm_parity import check_against_reference, check_batch_equals_alone, random_image, rewrite_keys
from tests.runtime.tiny_qwen import qwen_preprocessor_config, tiny_qwen_tokenizer
from tests.runtime.tiny_qwen_models import IMAGE_TOKEN, save_qwen

VARIANTS = {  # Qwen2.5-VL's tiny tower has window attention with one full-attention block
    "qwen2_vl-gqa": ("qwen2_vl", dict(kv_heads=2)),
    "qwen2_5_vl-mha-tied": ("qwen2_5_vl", dict(kv_heads=4, tie=True)),
}
NEW_LAYOUT = (("model.", "model.language_model."), ("visual.", "model.visual."))  # saved -> in memory


def qwen_request(question: str, images, processor=None) -> Request:
    """The chat prompt with every image of `images` before `question`, and the images' pixels and grids."""
    processor = processor or Qwen2VLImageProcessor.from_config(qwen_preprocessor_config())
    pictures = processor(images) if images else None
    counts = pictures.tokens_per_image if images else []
    vision = "".join("<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>" for n in counts)
    text = f"<|im_start|>user\n{vision}{question}<|im_end|>\n<|im_start|>assistant\n"
    ids = tiny_qwen_tokenizer().encode(text).ids
    assert ids.count(IMAGE_TOKEN) == sum(counts)
    if not images:
        return Request(ids)
    return Request(ids, pictures.pixel_values, pictures.grid_thw)


def qwen_reference(ref, request: Request):
    """`seq -> logits [T, V]` of transformers' model on `seq` with the request's images."""
    def logits(seq):
        ids = torch.tensor([seq])
        return ref(input_ids=ids, pixel_values=request.pixel_values, image_grid_thw=request.image_grid,
                   mm_token_type_ids=(ids == IMAGE_TOKEN).int()).logits[0]
    return logits


@pytest.fixture(scope="module", params=list(VARIANTS))
def qwen(request, tmp_path_factory):
    """(transformers model, {layout: checkpoint dir}) for one variant."""
    model_type, text = VARIANTS[request.param]
    saved = tmp_path_factory.mktemp(request.param)
    ref = save_qwen(saved, model_type, text=dict(layers=3, **text))
    new = tmp_path_factory.mktemp(request.param + "-new")
    for name in ("config.json", "model.safetensors"):
        (new / name).write_bytes((saved / name).read_bytes())
    rewrite_keys(new, NEW_LAYOUT)
    return ref, {"saved": saved, "in-memory": new}


IMAGES = {  # (width, height) of each image: merged tokens of 8 x 8 pixels, min 4, max 64
    "square": [(32, 32)],
    "wide": [(80, 24)],
    "tall-and-small": [(20, 52), (16, 16)],
}


@pytest.mark.parametrize("layout, images", [("saved", name) for name in IMAGES] + [("in-memory", "wide")])
def test_matches_transformers(qwen, layout, images):
    ref, dirs = qwen
    model = Model.from_pretrained(dirs[layout], backend="torch")
    pictures = [random_image(w, h, seed=i) for i, (w, h) in enumerate(IMAGES[images])]
    request = qwen_request("What is in the picture?", pictures)
    check_against_reference(model, request, qwen_reference(ref, request))


def test_text_only_matches_transformers(qwen):
    ref, dirs = qwen
    request = qwen_request("Tell me a story.", [])
    check_against_reference(Model.from_pretrained(dirs["saved"], backend="torch"), request, qwen_reference(ref, request))


def test_batch_of_two_equals_each_alone(qwen):
    _, dirs = qwen
    model = Model.from_pretrained(dirs["saved"], backend="torch")
    check_batch_equals_alone(model, [qwen_request("Why?", [random_image(40, 24, seed=3)]),
                                     qwen_request("How many circles are there?", [random_image(24, 56, seed=4)])])
