"""Fused projections (minilazy/models/fused.py): q/k/v and gate/up as one matrix each, parts as views."""

import torch

from minilazy.bench.measure import decoder_weight_bytes
from minilazy.generate import Request, generate
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.runtime import LazyRuntime
from minilazy.model import Model
from minilazy.models import fused
from minilazy.sampler import SamplingParams
from tests.helpers import assert_close
from tests.runtime.tiny_models import save_llama


def _layer(requires_grad=False):
    names = [n for parts in fused.FUSED.values() for n in parts]
    return {f"p.{n}": torch.randn(5 + i, 8, requires_grad=requires_grad) for i, n in enumerate(names)}


def test_parts_become_row_views_of_the_fused_matrix():
    weights = _layer()
    original = {n: t.clone() for n, t in weights.items()}
    fused.fuse_projections(weights, "p.")
    for name, parts in fused.FUSED.items():
        whole = weights[f"p.{name}"]
        assert whole.shape == (sum(original[f"p.{n}"].shape[0] for n in parts), 8)
        for n in parts:
            part = weights[f"p.{n}"]
            assert part.untyped_storage().data_ptr() == whole.untyped_storage().data_ptr()  # held once
            assert part.is_contiguous() and torch.equal(part, original[f"p.{n}"])
    assert len(fused.unfused({n.removeprefix("p."): t for n, t in weights.items()})) == len(original)


def test_weights_that_need_gradients_stay_apart():
    weights = _layer(requires_grad=True)
    fused.fuse_projections(weights, "p.")
    assert not any(f"p.{name}" in weights for name in fused.FUSED)


def test_fused_model_generates_as_the_unfused_one(tmp_path, monkeypatch):
    """Same prefill logits and greedy tokens, full attention and a lazy plan (its decode steps use the fused
    matrix, its prefill the key projection alone), and the same weight bytes."""
    save_llama(tmp_path, layers=4)
    model = Model.from_pretrained(tmp_path, backend="torch")
    fused_bytes = decoder_weight_bytes(model)
    with monkeypatch.context() as patch:
        patch.setattr(fused, "FUSED", {})
        apart = Model.from_pretrained(tmp_path, backend="torch")
    assert fused.QKV in model.decoder.layers[0] and fused.QKV not in apart.decoder.layers[0]
    assert fused_bytes == decoder_weight_bytes(apart)
    prompt = Request(torch.randint(3, 96, (19,)).tolist())
    mask = torch.zeros(2, 19, dtype=torch.bool)
    mask[:, 3:14] = True  # tokens 3..13 stand in for an image
    for layout in (lambda: None, lambda: LazyRuntime(LayerPlan((0, 0, 2, 2)), image_mask=mask)):
        a, b = (generate(m, [prompt] * 2, SamplingParams(max_new_tokens=12), decoder_setup=layout())
                for m in (model, apart))
        assert_close(a.prefill_logits, b.prefill_logits, 1e-5, 1e-5, "prefill logits")
        assert a.tokens == b.tokens
