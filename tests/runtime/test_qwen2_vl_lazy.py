"""Lazy layers, FastV and VTW on a tiny Qwen2-VL: multimodal RoPE positions through every path.

The direct implementation (tests/runtime/lazy_reference.py) recomputes the whole sequence with each
token's three positions from minilazy/mrope.py (themselves tested against transformers in
test_mrope.py); pruned tokens keep theirs.
"""

import pytest
import torch

from minilazy.fastv import VTW, FastV
from minilazy.generate import generate
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.runtime import LazyRuntime
from minilazy.model import Model
from minilazy.mrope import MRopePositions
from minilazy.sampler import SamplingParams
from tests.helpers import assert_close
from tests.runtime.lazy_reference import lazy_reference_logits
from tests.runtime.test_qwen2_vl_parity import qwen_request
from tests.runtime.test_vlm_parity import random_image
from tests.runtime.tiny_qwen_models import IMAGE_TOKEN, save_qwen

LAYERS, STEPS = 4, 6


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """(model, request with one image of 5 x 3 merged tokens, transformers' model)."""
    path = tmp_path_factory.mktemp("qwen2_vl")
    ref = save_qwen(path, "qwen2_vl", text=dict(layers=LAYERS, kv_heads=2))
    request = qwen_request("What is it?", [random_image(40, 24, seed=5)])
    return Model.from_pretrained(path, backend="torch"), request, ref


def reference_tokens(model, request, anchors, scope="visual", keep=None, **options) -> list[int]:
    """Greedy tokens of the direct implementation, the whole sequence recomputed each step; `keep`: the prompt
    slots that layers from 2 on see (FastV, VTW), with every generated token."""
    features = model.image_features(request.pixel_values, request.image_grid)
    seq, n = list(request.input_ids), len(request.input_ids)
    for _ in range(STEPS):
        ids = torch.tensor([seq])
        positions = MRopePositions.of_prompts(ids, torch.tensor([len(seq)]), IMAGE_TOKEN, request.image_grid, 2)
        prune = None if keep is None else (2, torch.tensor(keep + list(range(n, len(seq)))))
        logits = lazy_reference_logits(model.weights, model.config.text, anchors, scope, model.embed(ids, features)[0],
                                       ids[0] == IMAGE_TOKEN, prune=prune, positions=positions.prompt[0], **options)
        seq.append(int(logits[-1].argmax()))
    return seq[n:]


@pytest.mark.parametrize("plan, exact", [(LayerPlan((0, 0, 2, 2)), False), (LayerPlan((0, 0, 2, 2)), True),
                                         (LayerPlan((0, 0, 0, 3), scope="all"), False)],
                         ids=["visual", "visual-exact-rows", "all"])
def test_lazy_plans_equal_direct_formulation(setting, plan, exact):
    model, request, _ = setting
    ids = torch.tensor([request.input_ids])
    is_image = ids[0] == IMAGE_TOKEN
    runtime = LazyRuntime(plan, exact_image_rows=exact)
    got = model.forward_logits(ids, request.pixel_values, torch.tensor([ids.shape[1]]), decoder_setup=runtime,
                               image_grid=request.image_grid)[0]
    positions = MRopePositions.of_prompts(ids, torch.tensor([ids.shape[1]]), IMAGE_TOKEN, request.image_grid, 2)
    expected = lazy_reference_logits(model.weights, model.config.text, plan.anchors, plan.scope,
                                     model.embed(ids, model.image_features(request.pixel_values, request.image_grid))[0],
                                     is_image, exact_image_rows=exact, positions=positions.prompt[0])
    assert_close(got, expected, 1e-4, 1e-4, "prefill logits")
    out = generate(model, [request], SamplingParams(STEPS), decoder_setup=LazyRuntime(plan, exact_image_rows=exact))
    assert out.tokens[0] == reference_tokens(model, request, plan.anchors, plan.scope, exact_image_rows=exact)
    assert out.stats.kv_saved > 0


class StepSpy:
    """A `DecoderSetupHook` around a LazyRuntime that records the step each layer K sees."""

    def __init__(self, runtime: LazyRuntime):
        self.runtime, self.steps = runtime, []

    def __call__(self, *args):
        setup = self.runtime(*args)
        inner = setup.before_layer

        def spy(layer, h, residual, ctx):
            h, residual, ctx = inner(layer, h, residual, ctx)
            if layer == self.runtime.fastv.layer:
                self.steps.append(ctx.step)
            return h, residual, ctx

        setup.before_layer = spy
        return setup


def test_fastv_keeps_the_requested_image_tokens_at_their_positions(setting):
    """The image tokens that transformers' layer K-1 attends to most from the last prompt token, each at its
    (t, h, w) positions."""
    model, request, ref = setting
    ids = torch.tensor([request.input_ids])
    n_img = int((ids == IMAGE_TOKEN).sum())
    spy = StepSpy(LazyRuntime(fastv=FastV(2, 0.6)))
    out = generate(model, [request], SamplingParams(STEPS), decoder_setup=spy)
    kept = spy.runtime.pruning.kept_slots[0].tolist()
    kept_image = [s for s in kept if request.input_ids[s] == IMAGE_TOKEN]
    assert len(kept_image) == round(n_img * 0.4) and len(kept) == len(request.input_ids) - n_img + len(kept_image)
    ref.config._attn_implementation = ref.model.language_model.config._attn_implementation = "eager"
    with torch.no_grad():
        attentions = ref(input_ids=ids, pixel_values=request.pixel_values, image_grid_thw=request.image_grid,
                         mm_token_type_ids=(ids == IMAGE_TOKEN).int(), output_attentions=True).attentions
    scores = attentions[1][0].mean(0)[-1].masked_fill(ids[0] != IMAGE_TOKEN, -1)  # layer K-1 = 1, last query
    assert kept_image == sorted(scores.topk(len(kept_image)).indices.tolist())
    positions = MRopePositions.of_prompts(ids, torch.tensor([ids.shape[1]]), IMAGE_TOKEN, request.image_grid, 2)
    assert torch.equal(spy.steps[0].positions[0], positions.prompt[0, kept])  # (t, h, w) of each kept token
    assert out.tokens[0] == reference_tokens(model, request, tuple(range(LAYERS)), keep=kept)


def test_fastv_ratio_zero_is_the_plain_model(setting):
    model, request, _ = setting
    plain, pruned = [], []
    out = generate(model, [request], SamplingParams(STEPS), on_logits=plain.append)
    fastv = generate(model, [request], SamplingParams(STEPS), on_logits=pruned.append,
                     decoder_setup=LazyRuntime(fastv=FastV(2, 0.0)))
    assert fastv.tokens == out.tokens
    assert_close(torch.stack(pruned), torch.stack(plain), 1e-5, 1e-5, "logits")


def test_vtw_withdraws_the_image(setting):
    model, request, _ = setting
    out = generate(model, [request], SamplingParams(STEPS), decoder_setup=LazyRuntime(fastv=VTW(2)))
    text = [s for s, token in enumerate(request.input_ids) if token != IMAGE_TOKEN]
    assert out.tokens[0] == reference_tokens(model, request, tuple(range(LAYERS)), keep=text)
    assert out.stats.kv_saved > 0
