"""Prefill in chunks between decode steps: a running stream takes a decode step at every engine step while
another request's long prompt is prefilled, and both still get the tokens `generate()` gives them alone."""

import pytest

from minilazy.generate import generate
from minilazy.lazy.runtime import LazyRuntime
from minilazy.sampler import SamplingParams
from minilazy.serve import Engine
from tests.serve.conftest import PLAN, QUESTIONS

CHUNK = 16
MAX_NEW = 12


@pytest.mark.parametrize("lazy", [False, True], ids=["full", "lazy"])
def test_a_running_stream_decodes_while_a_long_prompt_is_prefilled(pipeline, lazy):
    def runtime():
        return LazyRuntime(PLAN, exact_image_rows=True) if lazy else None

    (_, short_question), (image, long_question) = QUESTIONS[2], QUESTIONS[1]
    short, long = pipeline.request(short_question), pipeline.request(long_question, image)
    chunks = -(-len(long.input_ids) // CHUNK)
    assert len(short.input_ids) <= CHUNK and chunks >= 4
    params = SamplingParams(MAX_NEW)
    engine = Engine(pipeline.model, 1 << 30, max_batch=2, prefill_chunk=CHUNK, runtime=runtime())  # no stop tokens
    running = engine.submit(short, params)
    engine.step()  # prefilled in one chunk: its first token, then a decode step
    assert len(running.tokens) == 2
    waiting = engine.submit(long, params)
    for step in range(1, chunks + 1):
        engine.step()
        assert len(running.tokens) == 2 + step, "the running stream took no decode step"
        assert (waiting.prefill.start if waiting.prefill else len(long.input_ids)) == min(step * CHUNK,
                                                                                           len(long.input_ids))
        assert len(waiting.tokens) == (0 if step < chunks else 2)  # its first token once the prompt is in
    engine.run_until_idle()
    for seq, request in ((running, short), (waiting, long)):
        alone = generate(pipeline.model, [request], params, prefill_chunk=CHUNK, decoder_setup=runtime())
        assert seq.tokens == alone.tokens[0]


def test_short_prompts_share_a_step_up_to_the_chunk(pipeline):
    """Prefill work per step is bounded by the chunk: with a chunk of two prompts' length, three admitted
    prompts take two steps."""
    question = QUESTIONS[2][1]
    request = pipeline.request(question)
    engine = Engine(pipeline.model, 1 << 30, max_batch=4, prefill_chunk=2 * len(request.input_ids))
    seqs = [engine.submit(request, SamplingParams(4)) for _ in range(3)]
    engine.step()
    assert [len(s.tokens) for s in seqs] == [2, 2, 0] and engine.stats().running == 3
    engine.step()
    assert [len(s.tokens) for s in seqs] == [3, 3, 2]
