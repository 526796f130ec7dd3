"""200 requests at once, 10% of them malformed: every good one gets the text `Pipeline.ask` gives for its
image, question and seed at temperature 0, every bad one its 400, and the engine ends idle."""

import json
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from minilazy.serve import Engine
from minilazy.serve.server import Server, create_app
from minilazy.serve.worker import EngineThread
from tests.serve.conftest import QUESTIONS, http, metrics, serving, user_message
from tests.serve.test_errors import CASES

pytestmark = pytest.mark.slow

MAX_TOKENS = 6
BAD = ["invalid JSON", "unknown role", "bad base64", "not an image", "empty prompt", "max_tokens 0",
       "negative temperature", "two user messages in a row", "image token in a text-only question", "top_p 0"]


def good_body(image, question, seed):
    return {"model": "demo", "messages": [user_message(question, image)], "max_tokens": MAX_TOKENS,
            "temperature": 0, "seed": seed}


def test_two_hundred_requests_with_one_in_ten_malformed(pipeline):
    rng = random.Random(0)
    expected = {(image, question): pipeline.ask(question, image, max_new_tokens=MAX_TOKENS).text
                for image, question in QUESTIONS}
    load = [("bad", BAD[i % len(BAD)], CASES[BAD[i % len(BAD)]]) for i in range(20)]
    load += [("good", pair, good_body(*pair, seed=i)) for i, pair in enumerate(rng.choices(QUESTIONS, k=180))]
    rng.shuffle(load)
    engine = Engine(pipeline.model, 1 << 30, max_batch=8, stop_ids=pipeline.stop_ids, max_queue=256)
    worker = EngineThread(engine).start()
    try:
        with serving(create_app(Server(pipeline, engine, worker, "demo", 64))) as url:
            with ThreadPoolExecutor(32) as pool:
                replies = list(pool.map(lambda item: http("POST", f"{url}/v1/chat/completions", item[2]), load))
            counters = metrics(url)
    finally:
        worker.stop()
    for (kind, what, _), (status, _, raw) in zip(load, replies):
        reply = json.loads(raw)
        if kind == "bad":
            assert status == 400 and reply["error"]["type"] == "invalid_request_error", (what, reply)
        else:
            assert status == 200, (what, reply)
            assert reply["choices"][0]["message"]["content"] == expected[what], what
    assert counters["minilazy_requests_running"] == 0 and counters["minilazy_kv_bytes_used"] == 0
    assert counters["minilazy_requests_running_peak"] > 1  # they were batched
