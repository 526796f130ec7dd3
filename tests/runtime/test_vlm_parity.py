"""Whole multimodal models against transformers: LLaVA in every key layout, and Idefics3 with tiles.

Each tiny random checkpoint is built with transformers, loaded by minilazy from disk, and
checked three ways: prefill logits over image + prompt, greedy tokens for 16 decode steps
(transformers recomputes the whole sequence each step, no cache), and a batch of two requests
with different images and prompt lengths giving the same tokens as each request alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from minilazy.generate import Request, generate
from minilazy.image_processing.idefics3 import Idefics3ImageProcessor
from minilazy.model import Model
from minilazy.prompts import ImageLayout, build_prompt
from minilazy.sampler import SamplingParams
from tests.helpers import assert_close
from tests.runtime.tiny_models import TOKENIZER_VOCAB, save_idefics3, save_llava, tiny_tokenizer

STEPS = 16
LLAVA_IMAGE = 28  # 4 x 4 patches of 7 pixels: 16 image tokens
IDEFICS3_TILE = 32  # 4 x 4 patches of 8 pixels, pixel shuffle by 2: 4 image tokens per tile

# (checkpoint prefix written by transformers 5.23, prefix in the older layout), first match wins.
LLAVA_LAYOUTS = {
    "v5": (),
    "original": (("vision_tower.", "vision_tower.vision_model."),),
    "v4.52": (
        ("language_model.model.", "model.language_model."),
        ("language_model.lm_head.", "lm_head."),
        ("vision_tower.", "model.vision_tower.vision_model."),
        ("multi_modal_projector.", "model.multi_modal_projector."),
    ),
}
LLAVA_VARIANTS = {"gqa-untied": dict(kv_heads=2, tie=False), "mha-tied": dict(kv_heads=4, tie=True)}


def rewrite_keys(model_dir: Path, prefixes) -> None:
    """Rename the keys of `model_dir/model.safetensors` in place, prefix by prefix."""
    path = model_dir / "model.safetensors"
    tensors = load_file(path)
    renamed = {}
    for key, tensor in tensors.items():
        for source, target in prefixes:
            if key.startswith(source):
                key = target + key[len(source):]
                break
        renamed[key] = tensor
    save_file(renamed, path, metadata={"format": "pt"})


def random_image(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def reference_greedy(step_logits, ids: list[int], steps: int) -> list[int]:
    """Greedy tokens from `step_logits(ids) -> [V]` (the whole sequence recomputed each step)."""
    seq = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            seq.append(int(step_logits(seq).argmax()))
    return seq[len(ids):]


def check_against_reference(model: Model, request: Request, reference_logits) -> None:
    """Prefill logits within 1e-4 and 16 greedy tokens identical to transformers'."""
    ids = torch.tensor([request.input_ids])
    with torch.no_grad():
        expected = reference_logits(request.input_ids)  # [T, V]
    lengths = torch.tensor([ids.shape[1]])
    got = model.forward_logits(ids, request.pixel_values, lengths, image_grid=request.image_grid)[0]
    assert_close(got, expected, 1e-4, 1e-4, "prefill logits over image + prompt")
    out = generate(model, [request], SamplingParams(max_new_tokens=STEPS))
    assert out.tokens[0] == reference_greedy(lambda seq: reference_logits(seq)[-1], request.input_ids, STEPS)


def check_batch_equals_alone(model: Model, requests: list[Request]) -> None:
    assert len({len(r.input_ids) for r in requests}) == len(requests), "requests should differ in length"
    params = SamplingParams(max_new_tokens=STEPS)
    batched = generate(model, requests, params).tokens
    alone = [generate(model, [r], params).tokens[0] for r in requests]
    assert batched == alone


# ---------------------------------------------------------------- LLaVA


@pytest.fixture(scope="module", params=list(LLAVA_VARIANTS))
def llava(request, tmp_path_factory):
    """(transformers model, {layout: checkpoint dir}) for one decoder variant."""
    base = tmp_path_factory.mktemp(f"llava-{request.param}")
    text = dict(vocab=TOKENIZER_VOCAB, hidden=48, layers=3, heads=4, **LLAVA_VARIANTS[request.param])
    ref = save_llava(base / "v5", image_size=LLAVA_IMAGE, patch=7, vision_hidden=32, vision_layers=3, text=text)
    dirs = {}
    for layout, prefixes in LLAVA_LAYOUTS.items():
        path = base / layout
        if prefixes:
            path.mkdir()
            for name in ("config.json", "model.safetensors"):
                (path / name).write_bytes((base / "v5" / name).read_bytes())
            rewrite_keys(path, prefixes)
        dirs[layout] = path
    return ref, dirs


def llava_request(tokenizer, question: str, seed: int) -> Request:
    from minilazy.image_processing.clip import ClipImageProcessor

    ids = build_prompt("llava", tokenizer, question, ImageLayout((LLAVA_IMAGE // 7) ** 2))
    pixels = ClipImageProcessor.from_config(None, LLAVA_IMAGE)([random_image(40 + seed, 30, seed)])
    return Request(ids, pixels)


def llava_reference(ref, pixels):
    return lambda seq: ref(input_ids=torch.tensor([seq]), pixel_values=pixels).logits[0]


@pytest.mark.parametrize("layout", list(LLAVA_LAYOUTS))
def test_llava_matches_transformers(llava, layout):
    ref, dirs = llava
    keys = load_file(dirs[layout] / "model.safetensors").keys()
    marker = {"v5": "vision_tower.embeddings.", "original": "vision_tower.vision_model.",
              "v4.52": "model.language_model."}[layout]
    assert any(k.startswith(marker) for k in keys), f"checkpoint is not in the {layout} layout"
    model = Model.from_pretrained(dirs[layout], backend="torch")
    request = llava_request(tiny_tokenizer(), "What colour is the square?", seed=0)
    check_against_reference(model, request, llava_reference(ref, request.pixel_values))


def test_llava_batch_of_two_equals_each_alone(llava):
    _, dirs = llava
    model = Model.from_pretrained(dirs["v5"], backend="torch")
    tokenizer = tiny_tokenizer()
    check_batch_equals_alone(model, [llava_request(tokenizer, "Why?", seed=1),
                                     llava_request(tokenizer, "How many circles are there in the picture?", seed=2)])


# ---------------------------------------------------------------- Idefics3


@pytest.fixture(scope="module")
def idefics3(tmp_path_factory):
    path = tmp_path_factory.mktemp("idefics3")
    text = dict(vocab=TOKENIZER_VOCAB, hidden=64, layers=2, heads=4, kv_heads=2)
    ref = save_idefics3(path, image_size=IDEFICS3_TILE, patch=8, scale=2, vision_hidden=32, vision_layers=2, text=text)
    assert json.loads((path / "config.json").read_text())["model_type"] == "idefics3"
    return ref, Model.from_pretrained(path, backend="torch")


def idefics3_request(tokenizer, question: str, image: Image.Image, split: bool) -> Request:
    tiles = Idefics3ImageProcessor(longest_edge=2 * IDEFICS3_TILE, tile_size=IDEFICS3_TILE,
                                   do_image_splitting=split)(image)
    layout = ImageLayout((IDEFICS3_TILE // 8 // 2) ** 2, tiles.rows[0], tiles.cols[0])
    return Request(build_prompt("idefics3", tokenizer, question, layout), tiles.pixel_values)


def idefics3_reference(ref, pixels):
    # transformers' processor: pixel_values [1, N_tiles, 3, S, S], every tile fully valid.
    mask = torch.ones(1, pixels.shape[0], IDEFICS3_TILE, IDEFICS3_TILE, dtype=torch.bool)
    return lambda seq: ref(input_ids=torch.tensor([seq]), pixel_values=pixels[None],
                           pixel_attention_mask=mask).logits[0]


@pytest.mark.parametrize("split", [True, False], ids=["split", "no-split"])
def test_idefics3_matches_transformers(idefics3, split):
    ref, model = idefics3
    request = idefics3_request(tiny_tokenizer(bos=False), "What is drawn here?", random_image(60, 40, 3), split)
    n_tiles = request.pixel_values.shape[0]
    assert n_tiles == (2 * 2 + 1 if split else 1), f"expected 2 x 2 tiles and a global image, got {n_tiles}"
    check_against_reference(model, request, idefics3_reference(ref, request.pixel_values))


def test_idefics3_batch_of_two_equals_each_alone(idefics3):
    _, model = idefics3
    tokenizer = tiny_tokenizer(bos=False)
    requests = [idefics3_request(tokenizer, "Describe it.", random_image(60, 40, 4), split=True),
                idefics3_request(tokenizer, "Which shape is the largest one?", random_image(30, 12, 5), split=True)]
    assert requests[0].pixel_values.shape[0] != requests[1].pixel_values.shape[0]
    check_batch_equals_alone(model, requests)
