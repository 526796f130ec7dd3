"""The Llama decoder against transformers: prefill logits, greedy tokens, ragged batches."""

import pytest
import torch

from minilazy.generate import Request, generate
from minilazy.model import Model
from minilazy.sampler import SamplingParams
from tests.helpers import assert_close
from tests.runtime.tiny_models import save_llama


def reference_greedy(ref, ids: list[int], steps: int) -> list[int]:
    """Greedy decoding with transformers, recomputing the whole sequence each step (no cache)."""
    seq = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            seq.append(int(ref(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(ids):]


@pytest.mark.parametrize("tie,kv_heads", [(False, 2), (True, 4)])
def test_prefill_logits_and_greedy_tokens_match_transformers(tmp_path, tie, kv_heads):
    ref = save_llama(tmp_path, tie=tie, kv_heads=kv_heads)
    model = Model.from_pretrained(tmp_path, backend="torch")
    ids = torch.randint(3, 96, (1, 23))
    with torch.no_grad():
        expected = ref(ids).logits
        got = model.forward_logits(ids, None, torch.tensor([23]))
    assert_close(got, expected, 1e-4, 1e-4, "prefill logits")

    out = generate(model, [Request(ids[0].tolist())], SamplingParams(max_new_tokens=16))
    assert out.tokens[0] == reference_greedy(ref, ids[0].tolist(), 16)


def test_ragged_batch_equals_each_request_alone(tmp_path):
    save_llama(tmp_path)
    model = Model.from_pretrained(tmp_path, backend="torch")
    prompts = [torch.randint(3, 96, (n,)).tolist() for n in (5, 19, 11)]
    params = SamplingParams(max_new_tokens=10)
    batched = generate(model, [Request(p) for p in prompts], params, prefill_chunk=7)
    for prompt, tokens in zip(prompts, batched.tokens):
        assert generate(model, [Request(prompt)], params).tokens[0] == tokens


def test_stops_at_end_of_sequence(tmp_path):
    save_llama(tmp_path)
    model = Model.from_pretrained(tmp_path, backend="torch")
    prompt = torch.randint(3, 96, (9,)).tolist()
    free = generate(model, [Request(prompt)], SamplingParams(max_new_tokens=12)).tokens[0]
    stop = free[4]
    stopped = generate(model, [Request(prompt)], SamplingParams(max_new_tokens=12), stop_ids=[stop]).tokens[0]
    assert stopped == free[: free.index(stop)]
