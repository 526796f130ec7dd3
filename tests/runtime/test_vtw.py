"""Visual Token Withdrawal: from layer K on no image tokens, against a direct implementation, and its memory."""

import pytest
import torch

from minilazy.errors import InputError
from minilazy.fastv import VTW
from minilazy.generate import Request, generate
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.runtime import LazyRuntime
from minilazy.model import Model
from minilazy.sampler import SamplingParams
from tests.helpers import assert_close
from tests.runtime.lazy_reference import lazy_reference_logits
from tests.runtime.tiny_models import save_llama

LAYERS, N, NEW = 6, 20, 4
IMAGE = slice(3, 15)  # 12 stand-in image tokens


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    save_llama(path, layers=LAYERS, kv_heads=2)
    return Model.from_pretrained(path, backend="torch")


def image_mask(batch=1, width=N):
    mask = torch.zeros(batch, width, dtype=torch.bool)
    mask[:, IMAGE] = True
    return mask


def withdrawn_logits(model, anchors, seq: list[int], prompt_length: int, layer: int) -> torch.Tensor:
    """The direct implementation: every token up to layer K, the text tokens only from K on; logits `[T', V]`."""
    is_image = torch.zeros(len(seq), dtype=torch.bool)
    is_image[:prompt_length] = image_mask(1, prompt_length)[0]
    text = (~is_image).nonzero()[:, 0]
    return lazy_reference_logits(model.weights, model.config.text, anchors, "visual",
                                 model.decoder.embed(torch.tensor([seq]))[0], is_image, prune=(layer, text))


@pytest.mark.parametrize("layer", [1, 3, LAYERS - 1])
def test_prefill_logits_equal_direct_implementation(model, layer):
    lengths = torch.tensor([N, N - 3])
    ids = torch.randint(3, 96, (2, N))
    runtime = LazyRuntime(fastv=VTW(layer), image_mask=image_mask(2))
    got = model.forward_logits(ids, None, lengths, decoder_setup=runtime)  # [B, T', V]: the text tokens
    for b, n in enumerate(lengths.tolist()):
        expected = withdrawn_logits(model, tuple(range(LAYERS)), ids[b, :n].tolist(), n, layer)
        assert_close(got[b, : expected.shape[0]], expected, 1e-4, 1e-4, f"sequence {b} logits")


@pytest.mark.parametrize("plan", [None, LayerPlan((0, 0, 2, 2, 4, 5))], ids=["vtw", "vtw+lazy"])
def test_decode_equals_direct_implementation(model, plan):
    """Ragged batch; the reference recomputes every step with the image tokens gone from layer K on."""
    prompts = [torch.randint(3, 96, (n,)).tolist() for n in (N, N - 3)]
    runtime = LazyRuntime(plan, fastv=VTW(4), image_mask=image_mask(2))
    out = generate(model, [Request(p) for p in prompts], SamplingParams(max_new_tokens=NEW), decoder_setup=runtime)
    anchors = plan.anchors if plan else tuple(range(LAYERS))
    for b, prompt in enumerate(prompts):
        assert len(out.tokens[b]) == NEW
        seq = list(prompt)
        for token in out.tokens[b]:
            assert int(withdrawn_logits(model, anchors, seq, len(prompt), 4)[-1].argmax()) == token
            seq.append(token)


@pytest.mark.parametrize("layer", [1, 4, LAYERS])
def test_kv_bytes_equal_their_formula(model, layer):
    cfg = model.config.text
    out = generate(model, [Request(torch.randint(3, 96, (N,)).tolist())], SamplingParams(max_new_tokens=NEW),
                   decoder_setup=LazyRuntime(fastv=VTW(layer), image_mask=image_mask()))
    per_slot = 2 * cfg.num_key_value_heads * cfg.head_dim * 4  # keys and values of one token in one layer, fp32
    n_img = IMAGE.stop - IMAGE.start
    assert out.stats.kv_cache_bytes == per_slot * (layer * (N + NEW) + (LAYERS - layer) * (N - n_img + NEW))


def test_withdrawing_at_the_last_layer_is_the_plain_model(model):
    prompt = torch.randint(3, 96, (N,))
    params = SamplingParams(max_new_tokens=8)
    plain_logits, vtw_logits = [], []
    plain = generate(model, [Request(prompt.tolist())], params, on_logits=plain_logits.append)
    vtw = generate(model, [Request(prompt.tolist())], params, on_logits=vtw_logits.append,
                   decoder_setup=LazyRuntime(fastv=VTW(LAYERS), image_mask=image_mask()))
    assert vtw.tokens == plain.tokens and vtw.stats.kv_cache_bytes == plain.stats.kv_cache_bytes
    assert torch.equal(torch.stack(vtw_logits), torch.stack(plain_logits))


def test_bad_layers_and_plans_are_refused(model):
    with pytest.raises(InputError, match="at least 1"):
        VTW(0)
    with pytest.raises(InputError, match="ratio 1"):
        VTW(2, 0.5)
    for runtime, match in [(LazyRuntime(fastv=VTW(LAYERS + 1)), "past the model's last layer"),
                           (LazyRuntime(LayerPlan((0, 1, 1, 3, 3, 3)), fastv=VTW(2)), "across the VTW layer")]:
        with pytest.raises(InputError, match=match):
            generate(model, [Request(list(range(3, 3 + N)))], SamplingParams(max_new_tokens=2), decoder_setup=runtime)


def test_auto_layer_is_the_smallest_whose_output_kl_is_under_the_threshold(model):
    from minilazy.lazy.effect import OutputDivergence, window_batches, withdrawal_layer

    windows = torch.randint(3, 96, (3, N))
    divergence = OutputDivergence(model, window_batches(windows, span=IMAGE.stop))
    kl = [divergence(fastv=VTW(layer)) for layer in range(1, LAYERS)]
    threshold = kl[2] * 1.0001  # K = 3 qualifies
    chosen = withdrawal_layer(divergence, LAYERS, threshold, progress=False)
    assert chosen <= 3 and kl[chosen - 1] < threshold and all(v >= threshold for v in kl[: chosen - 1])
    assert withdrawal_layer(divergence, LAYERS, 0.0, progress=False) == LAYERS  # only the plain model has KL 0
