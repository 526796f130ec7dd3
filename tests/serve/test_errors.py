"""Every refusal of the server: OpenAI's error body with the right status (400, 404, 429 with Retry-After)."""

import base64
import json

import pytest

from minilazy.errors import InputError
from minilazy.sampler import SamplingParams
from minilazy.serve import Engine
from minilazy.serve.server import Server, create_app
from minilazy.serve.worker import EngineThread
from tests.serve.conftest import QUESTIONS, http, image_url, serving, user_message

LIMIT = 64
IMAGE, QUESTION = QUESTIONS[0]


@pytest.fixture(scope="module")
def url(pipeline):
    engine = Engine(pipeline.model, 1 << 30, max_batch=2, stop_ids=pipeline.stop_ids)
    worker = EngineThread(engine).start()
    with serving(create_app(Server(pipeline, engine, worker, "demo", LIMIT))) as base:
        yield base
    worker.stop()


def chat(url, body):
    status, headers, raw = http("POST", f"{url}/v1/chat/completions", body)
    return status, headers, json.loads(raw)


def body(content=QUESTION, **fields):
    return {"model": "demo", "messages": [{"role": "user", "content": content}], "max_tokens": 4, **fields}


def image_body(url_text):
    return body([{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": url_text}}])


def not_an_image():
    return "data:image/png;base64," + base64.b64encode(b"these bytes are text, not a PNG").decode()


CASES = {
    "invalid JSON": b'{"model": "demo", "messages": [',
    "not an object": b"[1, 2]",
    "missing messages": {"model": "demo"},
    "no messages": {"model": "demo", "messages": []},
    "unknown role": {"model": "demo", "messages": [{"role": "wizard", "content": "hi"}]},
    "ends with an assistant message": {"model": "demo", "messages": [user_message("hi"),
                                                                     {"role": "assistant", "content": "yes"}]},
    "two user messages in a row": {"model": "demo", "messages": [user_message("hi"), user_message("and?")]},
    "assistant message first": {"model": "demo", "messages": [{"role": "assistant", "content": "hi"},
                                                              user_message("and?")]},
    "an image in an assistant message": {"model": "demo", "messages": [
        user_message("hi"), {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
        user_message("and?")]},
    "two images in two turns": {"model": "demo", "messages": [
        {"role": "user", "content": [{"type": "text", "text": QUESTION},
                                     {"type": "image_url", "image_url": {"url": image_url(IMAGE)}}]},
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": [{"type": "text", "text": QUESTION},
                                     {"type": "image_url", "image_url": {"url": image_url(IMAGE)}}]}]},
    "bad base64": image_body("data:image/png;base64,@@not base64@@"),
    "not an image": image_body(not_an_image()),
    "network URL": image_body("https://example.com/cat.png"),
    "two images": body([{"type": "text", "text": QUESTION},
                        *[{"type": "image_url", "image_url": {"url": image_url(IMAGE)}} for _ in range(2)]]),
    "empty prompt": body("   "),
    "prompt over the context window": body("red " * 1100),
    "max_tokens 0": body(max_tokens=0),
    "max_tokens over the limit": body(max_tokens=LIMIT + 1),
    "negative temperature": body(temperature=-0.5),
    "top_p 0": body(top_p=0),
    "n 2": body(n=2),
    "empty stop string": body(stop=[""]),
    "system message on a LLaVA prompt": {"model": "demo", "max_tokens": 4, "messages": [
        {"role": "system", "content": "Be brief."}, user_message(QUESTION)]},
    "image token in a text-only question": body("What is <image> here?"),
}


@pytest.mark.parametrize("case", CASES)
def test_malformed_requests_get_400(url, case):
    status, _, reply = chat(url, CASES[case])
    assert status == 400, reply
    assert reply["error"]["type"] == "invalid_request_error" and reply["error"]["message"]


@pytest.mark.parametrize("case, words", [
    ("ends with an assistant message", "ends with an assistant message"),
    ("two user messages in a row", "messages[1] is a user message where an assistant message belongs"),
])
def test_messages_out_of_turn_are_named(url, case, words):
    assert words in chat(url, CASES[case])[2]["error"]["message"]


def test_a_prompt_its_images_cannot_fill_ends_alone(pipeline):
    """A request past the checks whose image tokens have no features fails in its prefill: it ends with
    "error", and the request beside it runs on to its answer."""
    good = pipeline.request(QUESTION, IMAGE)
    bad = type(good)(good.input_ids)  # the image tokens, without the pixels
    engine = Engine(pipeline.model, 1 << 30, max_batch=2, stop_ids=pipeline.stop_ids)
    first = engine.submit(good, SamplingParams(6))
    engine.step()
    second = engine.submit(bad, SamplingParams(6))
    engine.run_until_idle()
    assert second.finish_reason == "error" and first.finish_reason in ("stop", "length")
    assert first.tokens == pipeline.ask(QUESTION, IMAGE, max_new_tokens=6).tokens
    assert engine.stats().kv_bytes_used == 0


def test_rows_shorter_than_the_context_bound_the_default_max_tokens(pipeline):
    """Without max_tokens, a request takes what its cache row has room for, not what the context window has."""
    from minilazy.serve.messages import sampling_params
    from minilazy.serve.protocol import ChatCompletionRequest

    request = pipeline.request(QUESTION)
    engine = Engine(pipeline.model, 1 << 30, max_batch=1, max_len=len(request.input_ids) + 5)
    params = sampling_params(ChatCompletionRequest.model_validate(body(max_tokens=None)), len(request.input_ids),
                             engine.longest_request, LIMIT)
    assert params.max_new_tokens == 5 and engine.check(request, params) > 0
    with pytest.raises(InputError, match="--max-model-len"):
        Engine(pipeline.model, 1 << 30, max_batch=1, max_len=1)


def test_an_unknown_model_gets_404(url):
    status, _, reply = chat(url, {**body(), "model": "gpt-4o"})
    assert status == 404 and reply["error"]["code"] == "model_not_found"


def test_an_unknown_route_gets_an_openai_error(url):
    status, _, raw = http("GET", f"{url}/v1/completions-of-something")
    assert status == 404 and "error" in json.loads(raw)


def test_the_server_still_answers_after_refusals(url, pipeline):
    status, _, reply = chat(url, body(temperature=0))
    assert status == 200 and reply["choices"][0]["message"]["content"] == pipeline.ask(QUESTION, max_new_tokens=4).text


def test_a_request_that_never_fits_the_budget_gets_400_and_a_full_queue_429(pipeline):
    """An engine without its thread: nothing is admitted, so the queue stays as filled."""
    request = pipeline.request(QUESTION)
    probe = Engine(pipeline.model, 1 << 30, max_batch=1)
    engine = Engine(pipeline.model, probe.check(request, SamplingParams(8)), max_batch=1, max_queue=1)
    server = Server(pipeline, engine, EngineThread(engine), "demo", LIMIT)
    with serving(create_app(server)) as base:
        status, _, reply = chat(base, body(max_tokens=9))
        assert status == 400 and "budget" in reply["error"]["message"]
        engine.submit(request, SamplingParams(8))  # fills the queue
        status, headers, reply = chat(base, body(max_tokens=8))
        assert status == 429 and reply["error"]["type"] == "rate_limit_error"
        assert int(headers["retry-after"]) >= 1
        assert http("GET", f"{base}/health")[0] == 503  # no engine thread
