"""The whole runtime on the triton backend (the interpreter on CPU) against transformers and the torch backend.

The same checks as test_vlm_parity.py on one small LLaVA, one Idefics3 and one Qwen2.5-VL model
with fewer decode steps, and a lazy plan run on both backends.
"""

from __future__ import annotations

import pytest
import torch

from minilazy.generate import Request, generate
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.runtime import LazyRuntime
from minilazy.model import Model
from minilazy.sampler import SamplingParams
from tests.helpers import assert_close
from tests.runtime.test_vlm_parity import (
    IDEFICS3_TILE,
    LLAVA_IMAGE,
    idefics3_reference,
    idefics3_request,
    llava_reference,
    llava_request,
    random_image,
    reference_greedy,
)
from tests.runtime.test_qwen2_vl_parity import qwen_reference, qwen_request
from tests.runtime.tiny_models import TOKENIZER_VOCAB, save_idefics3, save_llava, tiny_tokenizer
from tests.runtime.tiny_qwen_models import save_qwen

STEPS = 4
TEXT = dict(vocab=TOKENIZER_VOCAB, hidden=32, layers=3, heads=4, kv_heads=2)


def check_triton_against_reference(model: Model, request: Request, reference_logits) -> None:
    assert model.ops.backend == "triton"
    ids = torch.tensor([request.input_ids])
    with torch.no_grad():
        expected = reference_logits(request.input_ids)  # [T, V]
    got = model.forward_logits(ids, request.pixel_values, torch.tensor([ids.shape[1]]),
                               image_grid=request.image_grid)[0]
    assert_close(got, expected, 1e-4, 1e-4, "prefill logits (triton)")
    out = generate(model, [request], SamplingParams(max_new_tokens=STEPS))
    assert out.tokens[0] == reference_greedy(lambda seq: reference_logits(seq)[-1], request.input_ids, STEPS)


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    path = tmp_path_factory.mktemp("llava")
    ref = save_llava(path, image_size=LLAVA_IMAGE, patch=7, vision_hidden=32, vision_layers=2, text=TEXT)
    return ref, path


def test_llava_on_triton_matches_transformers(llava):
    ref, path = llava
    request = llava_request(tiny_tokenizer(), "What is it?", seed=0)
    check_triton_against_reference(Model.from_pretrained(path, backend="triton"), request,
                                   llava_reference(ref, request.pixel_values))


def test_idefics3_on_triton_matches_transformers(tmp_path):
    ref = save_idefics3(tmp_path, image_size=IDEFICS3_TILE, patch=8, scale=2, vision_hidden=32, vision_layers=2,
                        text=TEXT)
    request = idefics3_request(tiny_tokenizer(bos=False), "Why?", random_image(60, 40, 3), split=True)
    assert request.pixel_values.shape[0] == 5  # 2 x 2 tiles and the global image
    check_triton_against_reference(Model.from_pretrained(tmp_path, backend="triton"), request,
                                   idefics3_reference(ref, request.pixel_values))


@pytest.mark.slow
def test_qwen2_5_vl_on_triton_matches_transformers(tmp_path):
    """Multimodal RoPE, q/k/v biases and the window-attention tower on the kernels."""
    ref = save_qwen(tmp_path, "qwen2_5_vl", text=dict(layers=2, kv_heads=2))
    request = qwen_request("Why?", [random_image(40, 24, seed=6)])
    check_triton_against_reference(Model.from_pretrained(tmp_path, backend="triton"), request,
                                   qwen_reference(ref, request))


@pytest.mark.parametrize("refined", [False, True], ids=["plain", "offsets+exact-rows"])
def test_lazy_plan_on_triton_equals_torch(llava, refined):
    _, path = llava
    plan = LayerPlan((0, 0, 2))  # layer 1 inherits layer 0's attention over the image keys
    if refined:  # a mass offset per head on layer 1, and image rows with their own attention
        plan = LayerPlan(plan.anchors, mass_offsets=((), (0.5, -0.25, 1.0, -1.5), ()))
    request = llava_request(tiny_tokenizer(), "What is it?", seed=1)
    ids, lengths = torch.tensor([request.input_ids]), torch.tensor([len(request.input_ids)])
    results = {}
    for backend in ("torch", "triton"):
        model = Model.from_pretrained(path, backend=backend)
        logits = model.forward_logits(ids, request.pixel_values, lengths,
                                      decoder_setup=LazyRuntime(plan, exact_image_rows=refined))
        runtime = LazyRuntime(plan, exact_image_rows=refined)
        out = generate(model, [request], SamplingParams(max_new_tokens=STEPS), decoder_setup=runtime)
        results[backend] = logits, out.tokens, out.stats.kv_cache_bytes
    assert_close(results["triton"][0], results["torch"][0], 1e-4, 1e-4, "lazy prefill logits, triton vs torch")
    assert results["triton"][1:] == results["torch"][1:]
    plain = generate(Model.from_pretrained(path, backend="torch"), [request], SamplingParams(max_new_tokens=STEPS))
    assert results["torch"][2] < plain.stats.kv_cache_bytes, "the lazy layer should keep fewer image keys"
