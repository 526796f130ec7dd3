"""The HTTP server through the official `openai` client: answers equal `generate()`'s, whole and streamed,
alone and with concurrent clients; usage, max_tokens, stop strings, models, health and metrics."""

from concurrent.futures import ThreadPoolExecutor

import json
import pytest
from openai import OpenAI

from minilazy.prompts import Turn
from minilazy.serve import Engine
from minilazy.serve.server import Server, create_app
from minilazy.serve.worker import EngineThread
from tests.serve.conftest import QUESTIONS, http, metrics, serving, user_message

MAX_TOKENS = 12
LIMIT = 64


@pytest.fixture(scope="module")
def url(pipeline):
    engine = Engine(pipeline.model, 1 << 30, max_batch=3, stop_ids=pipeline.stop_ids, max_queue=16)
    worker = EngineThread(engine).start()
    with serving(create_app(Server(pipeline, engine, worker, "demo", LIMIT))) as base:
        yield base
    worker.stop()


@pytest.fixture(scope="module")
def client(url):
    return OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def expected(pipeline):
    """Each question's answer and its prompt's length, from the pipeline alone (what cli.py prints)."""
    return [(pipeline.ask(question, image, max_new_tokens=MAX_TOKENS), len(pipeline.request(question, image).input_ids))
            for image, question in QUESTIONS]


def ask(client, image, question, **kwargs):
    kwargs = {"temperature": 0, "max_tokens": MAX_TOKENS, **kwargs}
    return client.chat.completions.create(model="demo", messages=[user_message(question, image)], **kwargs)


def test_answers_and_usage_equal_generate(client, expected):
    for (image, question), (answer, prompt_tokens) in zip(QUESTIONS, expected):
        out = ask(client, image, question)
        assert out.choices[0].message.content == answer.text and out.choices[0].message.role == "assistant"
        assert out.choices[0].finish_reason == ("length" if len(answer.tokens) == MAX_TOKENS else "stop")
        assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (prompt_tokens, len(answer.tokens))
        assert out.usage.total_tokens == prompt_tokens + len(answer.tokens)
        assert out.model == "demo" and out.id.startswith("chatcmpl-") and out.created > 0


def test_streamed_answers_come_one_chunk_per_token(client, expected):
    for (image, question), (answer, prompt_tokens) in zip(QUESTIONS, expected):
        chunks = list(ask(client, image, question, stream=True, stream_options={"include_usage": True}))
        assert chunks[0].choices[0].delta.role == "assistant"
        tokens = [c for c in chunks[1:] if c.choices and c.choices[0].finish_reason is None]
        assert len(tokens) == len(answer.tokens)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer.text
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["length" if len(answer.tokens) == MAX_TOKENS else "stop"]
        assert chunks[-1].usage.completion_tokens == len(answer.tokens) and not chunks[-1].choices
        assert len({c.id for c in chunks}) == 1


def test_a_conversation_of_several_turns_equals_the_pipeline_given_its_history(client, pipeline):
    """The image in the first user message, an answer, a follow-up: the prompt holds all three turns."""
    image, question = QUESTIONS[0]
    first = pipeline.ask(question, image, max_new_tokens=MAX_TOKENS)
    follow_up = "Is there a circle?"
    history = (Turn("user", question, image=True), Turn("assistant", first.text))
    answer = pipeline.ask(follow_up, image, history=history, max_new_tokens=MAX_TOKENS)
    messages = [user_message(question, image), {"role": "assistant", "content": first.text}, user_message(follow_up)]
    out = client.chat.completions.create(model="demo", messages=messages, temperature=0, max_tokens=MAX_TOKENS)
    assert out.choices[0].message.content == answer.text
    assert out.usage.prompt_tokens == len(pipeline.request(follow_up, image, history=history).input_ids)
    assert out.usage.prompt_tokens > len(pipeline.request(follow_up, image).input_ids) + len(first.tokens)


def test_concurrent_clients_get_what_each_gets_alone(url, client, expected):
    jobs = [QUESTIONS[i % len(QUESTIONS)] for i in range(8)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: ask(client, *job).choices[0].message.content, jobs))
    assert answers == [expected[i % len(QUESTIONS)][0].text for i in range(len(jobs))]
    m = metrics(url)
    assert m["minilazy_requests_running"] == m["minilazy_requests_waiting"] == m["minilazy_kv_bytes_used"] == 0
    assert m["minilazy_kv_budget_bytes"] == 1 << 30 and m["minilazy_generated_tokens_total"] > 0


def test_max_completion_tokens_and_stop_strings(client, expected, pipeline):
    image, question = QUESTIONS[1]
    full = expected[1][0]
    out = ask(client, image, question, extra_body={"max_completion_tokens": 3})
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 3
    assert out.choices[0].message.content == pipeline.decode(full.tokens[:3])
    stop = full.text.split()[2]
    out = ask(client, image, question, stop=["zzz", stop])
    assert out.choices[0].finish_reason == "stop"
    assert out.choices[0].message.content == full.text[: full.text.index(stop)]


def test_sampling_with_a_seed_repeats(client):
    image, question = QUESTIONS[1]
    runs = [ask(client, image, question, temperature=1.0, seed=7).choices[0].message.content for _ in range(2)]
    assert runs[0] == runs[1]


def test_models_health_and_metrics(url, client):
    assert [m.id for m in client.models.list()] == ["demo"]
    status, _, body = http("GET", f"{url}/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    m = metrics(url)
    assert {"minilazy_requests_running", "minilazy_requests_waiting", "minilazy_kv_bytes_used",
            "minilazy_kv_budget_bytes", "minilazy_generated_tokens_total"} <= set(m)
