"""Lazy layers against an independent implementation of the formulation, and their memory."""

import pytest
import torch

from minilazy.errors import InputError
from minilazy.generate import Request, generate
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.runtime import LazyRuntime
from minilazy.model import Model
from minilazy.sampler import SamplingParams
from tests.helpers import assert_close
from tests.runtime.lazy_reference import lazy_reference_logits
from tests.runtime.tiny_models import save_llama

LAYERS = 6
PLANS = [
    LayerPlan((0, 0, 2, 2, 2, 5)),  # R = 1: every lazy layer inherits from the nearest active layer
    LayerPlan((0, 1, 0, 3, 1, 3), depth=2),  # R = 2: inherits from either of the last two active layers
]


@pytest.fixture(scope="module", params=[2, 4], ids=["gqa", "mha"])
def model(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    save_llama(path, layers=LAYERS, kv_heads=request.param)
    return Model.from_pretrained(path, backend="torch")


def image_mask_for(lengths, width, span=(2, 9)):
    """Tokens 2..8 of every prompt stand in for an image."""
    mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    mask[:, span[0] : span[1]] = True
    return mask


@pytest.mark.parametrize("plan", PLANS, ids=["R1", "R2"])
@pytest.mark.parametrize("scope", ["visual", "all"])
def test_prefill_logits_equal_direct_formulation(model, plan, scope):
    plan = LayerPlan(plan.anchors, plan.depth, scope)
    lengths = torch.tensor([17, 12])
    ids = torch.randint(3, 96, (2, 17))
    mask = image_mask_for(lengths, 17)
    got = model.forward_logits(ids, None, lengths, decoder_setup=LazyRuntime(plan, image_mask=mask))
    for b, n in enumerate(lengths.tolist()):
        expected = lazy_reference_logits(model.weights, model.config.text, plan.anchors, scope,
                                         model.decoder.embed(ids[b : b + 1, :n])[0], mask[b, :n])
        assert_close(got[b, :n], expected, 1e-4, 1e-4, f"sequence {b} logits")


def test_plan_without_lazy_layers_is_the_plain_model(model):
    ids = torch.randint(3, 96, (1, 15))
    lengths = torch.tensor([15])
    plain = model.forward_logits(ids, None, lengths)
    full = model.forward_logits(ids, None, lengths, decoder_setup=LazyRuntime(LayerPlan.full(LAYERS)))
    assert torch.equal(plain, full)
    params = SamplingParams(max_new_tokens=8)
    runtime = LazyRuntime(LayerPlan.full(LAYERS), image_mask=image_mask_for(lengths, 15))
    assert generate(model, [Request(ids[0].tolist())], params, decoder_setup=runtime).tokens == \
        generate(model, [Request(ids[0].tolist())], params).tokens


@pytest.mark.parametrize("scope", ["visual", "all"])
def test_chunked_prefill_and_decode_equal_direct_formulation(model, scope):
    """Prefill in chunks of 5 (longer than one chunk), then greedy decode, against the whole-sequence reference."""
    plan = LayerPlan(PLANS[1].anchors, 2, scope)
    prompt = torch.randint(3, 96, (16,))
    mask = image_mask_for([16], 16)
    out = generate(model, [Request(prompt.tolist())], SamplingParams(max_new_tokens=6), prefill_chunk=5,
                   decoder_setup=LazyRuntime(plan, image_mask=mask))
    seq = prompt.tolist()
    assert len(out.tokens[0]) == 6, "the run stops only at max_new_tokens"
    for token in out.tokens[0]:
        full_mask = torch.cat([mask[0], torch.zeros(len(seq) - 16, dtype=torch.bool)])
        logits = lazy_reference_logits(model.weights, model.config.text, plan.anchors, scope,
                                       model.decoder.embed(torch.tensor([seq]))[0], full_mask)
        assert int(logits[-1].argmax()) == token
        seq.append(token)


def test_decode_fast_path_equals_recompute(model):
    plan = PLANS[0]
    prompts = [torch.randint(3, 96, (n,)).tolist() for n in (14, 10)]
    mask = image_mask_for([14, 10], 14)
    runs = {}
    for fast in (True, False):
        logits = []
        runtime = LazyRuntime(plan, fast_decode=fast, image_mask=mask)
        out = generate(model, [Request(p) for p in prompts], SamplingParams(max_new_tokens=8),
                       decoder_setup=runtime, on_logits=logits.append)
        runs[fast] = (out.tokens, torch.stack(logits))
    assert runs[True][0] == runs[False][0]
    assert_close(runs[True][1], runs[False][1], 1e-5, 1e-5, "decode logits")


@pytest.mark.parametrize("scope", ["visual", "all"])
def test_kv_cache_bytes_follow_the_formula(model, scope):
    """Active layers: 2*G*d per token; lazy visual: G*d per image token + 2*G*d per text token; all: G*d."""
    cfg = model.config.text
    plan = LayerPlan(PLANS[0].anchors, 1, scope)
    n, n_img, new = 16, 7, 5
    runtime = LazyRuntime(plan, image_mask=image_mask_for([n], n))
    out = generate(model, [Request(torch.randint(3, 96, (n,)).tolist())], SamplingParams(max_new_tokens=new),
                   decoder_setup=runtime)
    tokens, unit = n + new, cfg.num_key_value_heads * cfg.head_dim * 4  # fp32 bytes of one key or value row
    lazy = len(plan.lazy_layers)
    per_lazy = (n_img + 2 * (tokens - n_img)) if scope == "visual" else tokens
    assert out.stats.kv_cache_bytes == unit * ((LAYERS - lazy) * 2 * tokens + lazy * per_lazy)


def test_q_cache_is_allocated_once_and_written_in_place(model):
    runtime = LazyRuntime(PLANS[0], fast_decode=False, image_mask=image_mask_for([12], 12))
    pointers = []
    generate(model, [Request(torch.randint(3, 96, (12,)).tolist())], SamplingParams(max_new_tokens=6),
             decoder_setup=runtime, on_tokens=lambda _: pointers.append(runtime.state.q_cache.data_ptr()))
    assert len(pointers) == 6 and len(set(pointers)) == 1
    assert runtime.state.q_slot(0, 1, 1).data_ptr() == pointers[0]


def test_invalid_plans_are_refused():
    with pytest.raises(InputError, match="layer 0"):
        LayerPlan((1, 1, 2))
    with pytest.raises(InputError, match="not an earlier active layer"):
        LayerPlan((0, 0, 1))
    with pytest.raises(InputError, match="Q Cache keeps only"):
        LayerPlan((0, 1, 0), depth=1)
    with pytest.raises(InputError, match="model has 6"):
        LayerPlan((0, 0)).check_layers(6)


def test_plan_files_round_trip_and_bad_ones_are_refused(tmp_path):
    plan = LayerPlan((0, 0, 2, 2, 2), depth=2, scope="all")
    plan.save(tmp_path / "plan.json", threshold=0.1)
    assert LayerPlan.load(tmp_path / "plan.json") == plan
    assert plan.inheritance() == "1<-0 3<-2 4<-2"
    bad = {"anchors.json": '{"anchors": 5}', "words.json": '{"anchors": ["a"]}', "list.json": "[0, 1]",
           "depth.json": '{"anchors": [0, 0], "depth": "x"}', "broken.json": '{"anchors": [',
           "booleans.json": '{"anchors": [false, false], "depth": true}'}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match=name):
            LayerPlan.load(tmp_path / name)
    with pytest.raises(InputError, match="no such plan"):
        LayerPlan.load(tmp_path / "missing.json")


def offsets_for(plan: LayerPlan, heads: int) -> LayerPlan:
    """`plan` with random mass offsets on its lazy layers."""
    offsets = tuple(tuple(torch.randn(heads).tolist()) if plan.is_lazy(l) else () for l in range(plan.num_layers))
    return LayerPlan(plan.anchors, plan.depth, "visual", offsets)


@pytest.mark.parametrize("plan", PLANS, ids=["R1", "R2"])
@pytest.mark.parametrize("exact, corrected", [(True, False), (False, True), (True, True)],
                         ids=["exact", "offsets", "both"])
def test_refinements_equal_direct_formulation(model, plan, exact, corrected):
    heads = model.config.text.num_attention_heads
    plan = offsets_for(plan, heads) if corrected else plan
    lengths = torch.tensor([17, 12])
    ids = torch.randint(3, 96, (2, 17))
    mask = image_mask_for(lengths, 17)
    got = model.forward_logits(ids, None, lengths,
                               decoder_setup=LazyRuntime(plan, image_mask=mask, exact_image_rows=exact))
    for b, n in enumerate(lengths.tolist()):
        expected = lazy_reference_logits(model.weights, model.config.text, plan.anchors, "visual",
                                         model.decoder.embed(ids[b : b + 1, :n])[0], mask[b, :n],
                                         mass_offsets=plan.mass_offsets, exact_image_rows=exact)
        assert_close(got[b, :n], expected, 1e-4, 1e-4, f"sequence {b} logits")


def test_refinements_change_the_logits(model):
    """Neither refinement is a no-op on this model (else the test above could not fail)."""
    ids, lengths = torch.randint(3, 96, (1, 17)), torch.tensor([17])
    mask = image_mask_for(lengths, 17)
    plain = model.forward_logits(ids, None, lengths, decoder_setup=LazyRuntime(PLANS[0], image_mask=mask))
    for runtime in (LazyRuntime(PLANS[0], image_mask=mask, exact_image_rows=True),
                    LazyRuntime(offsets_for(PLANS[0], model.config.text.num_attention_heads), image_mask=mask)):
        assert (model.forward_logits(ids, None, lengths, decoder_setup=runtime) - plain).abs().max() > 1e-3


def test_exact_rows_across_prefill_chunks_and_corrected_decode_equal_direct_formulation(model):
    """The image span (tokens 2..8) crosses the chunk boundary at 5; decode then runs the fast path."""
    plan = offsets_for(PLANS[1], model.config.text.num_attention_heads)
    prompt = torch.randint(3, 96, (16,))
    mask = image_mask_for([16], 16)
    runtime = LazyRuntime(plan, image_mask=mask, exact_image_rows=True)
    out = generate(model, [Request(prompt.tolist())], SamplingParams(max_new_tokens=5), prefill_chunk=5,
                   decoder_setup=runtime)
    assert runtime.state.image_keys == {}, "the image keys of exact rows are dropped once prefill ends"
    seq = prompt.tolist()
    for token in out.tokens[0]:
        full_mask = torch.cat([mask[0], torch.zeros(len(seq) - 16, dtype=torch.bool)])
        logits = lazy_reference_logits(model.weights, model.config.text, plan.anchors, "visual",
                                       model.decoder.embed(torch.tensor([seq]))[0], full_mask,
                                       mass_offsets=plan.mass_offsets, exact_image_rows=True)
        assert int(logits[-1].argmax()) == token
        seq.append(token)


def test_corrected_decode_fast_path_equals_recompute(model):
    plan = offsets_for(PLANS[0], model.config.text.num_attention_heads)
    prompts = [torch.randint(3, 96, (n,)).tolist() for n in (14, 10)]
    mask = image_mask_for([14, 10], 14)
    runs = {}
    for fast in (True, False):
        logits = []
        runtime = LazyRuntime(plan, fast_decode=fast, image_mask=mask, exact_image_rows=True)
        generate(model, [Request(p) for p in prompts], SamplingParams(max_new_tokens=8), decoder_setup=runtime,
                 on_logits=logits.append)
        runs[fast] = torch.stack(logits)
    assert_close(runs[True], runs[False], 1e-5, 1e-5, "decode logits")


def test_refinements_keep_the_kv_cache_bytes(model):
    prompts = [torch.randint(3, 96, (n,)).tolist() for n in (17, 12)]
    mask = image_mask_for([17, 12], 17)
    plans = (PLANS[0], offsets_for(PLANS[0], model.config.text.num_attention_heads))
    nbytes = {generate(model, [Request(p) for p in prompts], SamplingParams(max_new_tokens=3),
                       decoder_setup=LazyRuntime(plan, image_mask=mask, exact_image_rows=exact)).stats.kv_cache_bytes
              for plan in plans for exact in (False, True)}
    assert len(nbytes) == 1


def test_exact_rows_keep_the_image_keys_across_a_text_only_chunk(model):
    """Two image spans (2..5 and 12..15) with a prefill chunk of text only (8..11) between them: the second
    span's rows still attend with the first span's own keys."""
    plan = PLANS[0]
    prompt = torch.randint(3, 96, (18,))
    mask = torch.zeros(1, 18, dtype=torch.bool)
    mask[0, 2:6] = mask[0, 12:16] = True
    out = generate(model, [Request(prompt.tolist())], SamplingParams(max_new_tokens=1), prefill_chunk=4,
                   decoder_setup=LazyRuntime(plan, image_mask=mask, exact_image_rows=True))
    expected = lazy_reference_logits(model.weights, model.config.text, plan.anchors, "visual",
                                     model.decoder.embed(prompt[None])[0], mask[0], exact_image_rows=True)
    assert_close(out.prefill_logits[0], expected[-1], 1e-4, 1e-4, "last prompt token's logits")
