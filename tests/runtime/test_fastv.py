"""FastV alone and combined with lazy layers, against transformers' attention and a direct implementation."""

import pytest
import torch

from minilazy.errors import InputError
from minilazy.fastv import FastV
from minilazy.generate import Request, generate
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.runtime import LazyRuntime
from minilazy.model import Model
from minilazy.sampler import SamplingParams
from tests.helpers import assert_close
from tests.runtime.lazy_reference import lazy_reference_logits
from tests.runtime.tiny_models import save_llama

LAYERS, N = 6, 20
IMAGE = slice(3, 15)  # 12 stand-in image tokens


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    ref = save_llama(path, layers=LAYERS, kv_heads=2)
    return ref, Model.from_pretrained(path, backend="torch")


def image_mask(batch=1, width=N):
    mask = torch.zeros(batch, width, dtype=torch.bool)
    mask[:, IMAGE] = True
    return mask


@pytest.mark.parametrize("ratio, position", [(0.25, None), (0.5, None), (0.75, None), (0.5, 16)])
def test_keeps_the_requested_image_tokens_ranked_by_transformers_attention(models, ratio, position):
    """Ranked by the attention of the prompt's last token, or of the token at `position` when given."""
    ref, model = models
    prompt = torch.randint(3, 96, (N,))
    runtime = LazyRuntime(fastv=FastV(2, ratio), image_mask=image_mask(), fastv_rank_position=position)
    generate(model, [Request(prompt.tolist())], SamplingParams(max_new_tokens=1), decoder_setup=runtime)
    kept = runtime.pruning.kept_slots[0]
    kept_image = sorted(s for s in kept.tolist() if IMAGE.start <= s < IMAGE.stop)
    assert len(kept_image) == round(12 * (1 - ratio))
    assert set(range(N)) - set(range(IMAGE.start, IMAGE.stop)) <= set(kept.tolist())  # every text token stays
    with torch.no_grad():
        ref.config._attn_implementation = "eager"
        attn = ref(prompt[None], output_attentions=True).attentions[1][0]  # layer K-1 = 1: [H, T, T]
    row = N - 1 if position is None else position
    assert_close(runtime.pruning.scorer.scores[0, :N], attn.mean(0)[row], 1e-5, 1e-5, what="scores")  # 0 past row
    scores = attn.mean(0)[row, IMAGE]
    expected = sorted((scores.topk(len(kept_image)).indices + IMAGE.start).tolist())
    assert kept_image == expected


@pytest.mark.parametrize("position", [-1, N - 3])
def test_a_ranking_position_outside_a_prompt_is_refused(models, position):
    _, model = models
    prompts = [Request(torch.randint(3, 96, (n,)).tolist()) for n in (N, N - 3)]
    runtime = LazyRuntime(fastv=FastV(2, 0.5), image_mask=image_mask(2), fastv_rank_position=position)
    with pytest.raises(InputError, match="not in every prompt"):
        generate(model, prompts, SamplingParams(max_new_tokens=1), decoder_setup=runtime)


def test_ratio_zero_is_the_plain_model(models):
    _, model = models
    prompt = torch.randint(3, 96, (N,)).tolist()
    params = SamplingParams(max_new_tokens=8)
    plain_logits = []
    out = generate(model, [Request(prompt)], params, on_logits=plain_logits.append)
    pruned_logits = []
    fastv = generate(model, [Request(prompt)], params, on_logits=pruned_logits.append,
                     decoder_setup=LazyRuntime(fastv=FastV(2, 0.0), image_mask=image_mask()))
    assert fastv.tokens == out.tokens
    assert_close(torch.stack(pruned_logits), torch.stack(plain_logits), 1e-5, 1e-5, "logits")


@pytest.mark.parametrize("plan", [None, LayerPlan((0, 1, 2, 2, 4, 4)), LayerPlan((0, 1, 2, 2, 2, 2), scope="all")],
                         ids=["fastv", "fastv+lazy", "fastv+lazy-all"])
def test_prune_then_decode_equals_direct_implementation(models, plan):
    """Ragged batch; the reference drops the same tokens from layer K on and recomputes every step."""
    _, model = models
    prompts = [torch.randint(3, 96, (n,)).tolist() for n in (N, N - 3)]
    mask = image_mask(2)
    runtime = LazyRuntime(plan, fastv=FastV(2, 0.5), image_mask=mask)
    out = generate(model, [Request(p) for p in prompts], SamplingParams(max_new_tokens=5), decoder_setup=runtime)
    anchors = plan.anchors if plan else tuple(range(LAYERS))
    scope = plan.scope if plan else "visual"
    for b, prompt in enumerate(prompts):
        assert len(out.tokens[b]) == 5, "the run stops only at max_new_tokens"
        kept = [s for s in runtime.pruning.kept_slots[b].tolist() if s >= 0]
        seq = list(prompt)
        for token in out.tokens[b]:
            keep = torch.tensor(kept + list(range(len(prompt), len(seq))))
            is_image = torch.cat([mask[b, : len(prompt)], torch.zeros(len(seq) - len(prompt), dtype=torch.bool)])
            logits = lazy_reference_logits(model.weights, model.config.text, anchors, scope,
                                           model.decoder.embed(torch.tensor([seq]))[0], is_image, prune=(2, keep))
            assert int(logits[-1].argmax()) == token
            seq.append(token)


def test_kv_cache_shrinks_by_the_dropped_tokens(models):
    _, model = models
    cfg = model.config.text
    runtime = LazyRuntime(fastv=FastV(2, 0.5), image_mask=image_mask())
    out = generate(model, [Request(torch.randint(3, 96, (N,)).tolist())], SamplingParams(max_new_tokens=4),
                   decoder_setup=runtime)
    unit = 2 * cfg.num_key_value_heads * cfg.head_dim * 4
    assert out.stats.kv_cache_bytes == unit * (2 * (N + 4) + (LAYERS - 2) * (N - 6 + 4))


def test_lazy_plans_that_cross_the_fastv_layer_are_refused(models):
    _, model = models
    for plan, match in [(LayerPlan((0, 0, 0, 3, 3, 3)), "must be active"),
                        (LayerPlan((0, 1, 1, 3, 3, 3)), "across the FastV layer")]:
        runtime = LazyRuntime(plan, fastv=FastV(2, 0.5), image_mask=image_mask())
        with pytest.raises(InputError, match=match):
            generate(model, [Request(list(range(3, 3 + N)))], SamplingParams(max_new_tokens=2), decoder_setup=runtime)
