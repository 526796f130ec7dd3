"""The engine: the same tokens as `generate()` alone whatever the batch around a request, KV accounting
that returns to zero, admission under a budget, cancels that free a row at once."""

import pytest

from minilazy.errors import InputError
from minilazy.generate import generate
from minilazy.sampler import SamplingParams
from minilazy.serve import Engine, QueueFull
from minilazy.serve.text import TextStream
from tests.serve.conftest import QUESTIONS

MAX_NEW = 12
BUDGET = 1 << 30


def alone(pipeline, request, params):
    return generate(pipeline.model, [request], params, stop_ids=pipeline.stop_ids).tokens[0]


@pytest.fixture(scope="module")
def requests(pipeline):
    return [pipeline.request(question, image) for image, question in QUESTIONS]


def assert_idle(engine):
    stats = engine.stats()
    assert (stats.running, stats.waiting, stats.kv_bytes_used) == (0, 0, 0)
    assert sorted(engine.scheduler.free_rows) == list(range(engine.rows.rows))


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_same_tokens_as_generate_alone_when_admitted_at_different_steps(pipeline, requests, temperature):
    """Five requests of different lengths, three rows: they join at different steps, wait for rows, and
    run beside different neighbours; each gets exactly what it gets alone (sampled ones by their seed)."""
    params = [SamplingParams(MAX_NEW, temperature, top_p=0.9, seed=i) for i in range(len(requests))]
    expected = [alone(pipeline, r, p) for r, p in zip(requests, params)]
    engine = Engine(pipeline.model, BUDGET, max_batch=3, stop_ids=pipeline.stop_ids)
    seqs = []
    for request, p in zip(requests, params):
        seqs.append(engine.submit(request, p))
        engine.step()
        engine.step()
    engine.run_until_idle()
    assert [s.tokens for s in seqs] == expected
    assert all(s.finish_reason in ("stop", "length") for s in seqs)
    assert engine.stats().tokens_generated == sum(map(len, expected))
    assert_idle(engine)


def test_events_stream_every_token_then_the_end(pipeline, requests):
    engine = Engine(pipeline.model, BUDGET, max_batch=2, stop_ids=pipeline.stop_ids)
    events = []
    seq = engine.submit(requests[1], SamplingParams(MAX_NEW), TextStream(pipeline.decode), events.append)
    engine.run_until_idle()
    assert [e.token for e in events[:-1]] == seq.tokens and events[-1].token is None
    assert events[-1].finish_reason == seq.finish_reason == "length"
    assert "".join(e.text for e in events) == pipeline.decode(seq.tokens)


def test_a_stop_string_ends_the_answer_before_it(pipeline, requests):
    full = pipeline.decode(alone(pipeline, requests[1], SamplingParams(MAX_NEW)))
    stop = full.split()[2]  # a word in the middle of the description
    engine = Engine(pipeline.model, BUDGET, max_batch=1, stop_ids=pipeline.stop_ids)
    events = []
    seq = engine.submit(requests[1], SamplingParams(MAX_NEW), TextStream(pipeline.decode, (stop,)), events.append)
    engine.run_until_idle()
    text = "".join(e.text for e in events)
    assert text == full[: full.index(stop)] and seq.finish_reason == "stop"
    assert_idle(engine)


def test_a_tiny_budget_admits_exactly_as_many_as_fit(pipeline, requests):
    request = requests[1]  # a long answer: nobody finishes in the first step
    params = SamplingParams(MAX_NEW)
    engine = Engine(pipeline.model, BUDGET, max_batch=8, stop_ids=pipeline.stop_ids)
    need = engine.check(request, params)
    engine = Engine(pipeline.model, 2 * need + need // 2, max_batch=8, stop_ids=pipeline.stop_ids)
    seqs = [engine.submit(request, params) for _ in range(5)]
    engine.step()
    assert engine.stats().running == 2 and engine.stats().kv_bytes_used == 2 * need
    assert engine.stats().waiting == 3
    engine.run_until_idle()
    expected = alone(pipeline, request, params)
    assert all(s.tokens == expected for s in seqs)
    assert_idle(engine)


def test_the_rows_limit_admission_too(pipeline, requests):
    engine = Engine(pipeline.model, BUDGET, max_batch=2, stop_ids=pipeline.stop_ids)
    for _ in range(3):
        engine.submit(requests[1], SamplingParams(MAX_NEW))
    engine.step()
    assert engine.stats().running == 2 and engine.stats().waiting == 1


def test_a_cancel_frees_the_row_and_bytes_at_the_next_step(pipeline, requests):
    engine = Engine(pipeline.model, BUDGET, max_batch=2, stop_ids=pipeline.stop_ids)
    params = SamplingParams(MAX_NEW)
    events = []
    first = engine.submit(requests[1], params, on_event=events.append)
    other = engine.submit(requests[4], params)
    engine.step()
    assert first.row == 0 and engine.stats().running == 2
    engine.cancel(first)
    engine.step()
    assert first.finish_reason == "cancelled" and first.row == -1 and events[-1].finish_reason == "cancelled"
    assert engine.stats().running == 1 and engine.stats().kv_bytes_used == other.kv_bytes
    engine.run_until_idle()
    assert other.tokens == alone(pipeline, requests[4], params)  # row 0 idle beside it changes nothing
    assert_idle(engine)


def test_a_waiting_request_can_be_cancelled(pipeline, requests):
    engine = Engine(pipeline.model, BUDGET, max_batch=1, stop_ids=pipeline.stop_ids)
    engine.submit(requests[0], SamplingParams(MAX_NEW))
    waiting = engine.submit(requests[2], SamplingParams(MAX_NEW))
    engine.cancel(waiting)
    engine.run_until_idle()
    assert waiting.finish_reason == "cancelled" and waiting.tokens == []
    assert_idle(engine)


def test_requests_that_can_never_run_are_refused(pipeline, requests):
    window = pipeline.config.text.max_position_embeddings
    engine = Engine(pipeline.model, BUDGET, max_batch=1, stop_ids=pipeline.stop_ids)
    with pytest.raises(InputError, match="context window"):
        engine.submit(requests[0], SamplingParams(window))
    small = Engine(pipeline.model, engine.check(requests[0], SamplingParams(4)), max_batch=1)
    with pytest.raises(InputError, match="more than the whole budget"):
        small.submit(requests[0], SamplingParams(5))
    with pytest.raises(InputError, match="too small"):
        Engine(pipeline.model, 100, max_batch=1)


def test_a_full_queue_is_refused(pipeline, requests):
    engine = Engine(pipeline.model, BUDGET, max_batch=1, max_queue=2)
    engine.submit(requests[0], SamplingParams(MAX_NEW))
    engine.submit(requests[0], SamplingParams(MAX_NEW))
    with pytest.raises(QueueFull):
        engine.submit(requests[0], SamplingParams(MAX_NEW))
    engine.step()  # one admitted: the queue has room again
    engine.submit(requests[0], SamplingParams(MAX_NEW))
