"""A client that goes away mid-stream cancels its request: its row and KV bytes come back at once."""

import http.client
import json
import time
from urllib.parse import urlparse

import pytest

from minilazy.fastv import FastV
from minilazy.lazy.runtime import LazyRuntime
from minilazy.serve import Engine
from minilazy.serve.server import Server, create_app
from minilazy.serve.worker import EngineThread
from tests.serve.conftest import FASTV_PLAN, QUESTIONS, metrics, serving, user_message

MAX_TOKENS = 400


@pytest.mark.parametrize("lazy", [False, True], ids=["full", "lazy+fastv"])
def test_a_disconnect_mid_stream_cancels_the_request(pipeline, lazy):
    runtime = LazyRuntime(FASTV_PLAN, fastv=FastV(2, 0.5)) if lazy else None
    # no stop tokens: it would run all MAX_TOKENS
    engine = Engine(pipeline.model, 1 << 30, max_batch=2, runtime=runtime)
    worker = EngineThread(engine).start()
    image, question = QUESTIONS[0]
    body = {"model": "demo", "stream": True, "max_tokens": MAX_TOKENS, "temperature": 0,
            "messages": [user_message(question, image)]}
    try:
        with serving(create_app(Server(pipeline, engine, worker, "demo", MAX_TOKENS))) as url:
            address = urlparse(url)
            connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
            connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            chunks = [line for line in (response.readline() for _ in range(12)) if line.startswith(b"data:")]
            assert len(chunks) == 6 and metrics(url)["minilazy_requests_running"] == 1
            connection.sock.close()  # goes away without reading the rest
            connection.close()
            deadline = time.monotonic() + 20
            while metrics(url).get('minilazy_requests_finished_total{reason="cancelled"}') != 1:
                assert time.monotonic() < deadline, "the request was not cancelled"
                time.sleep(0.05)
            m = metrics(url)
            assert m["minilazy_requests_running"] == m["minilazy_kv_bytes_used"] == 0
            assert m["minilazy_generated_tokens_total"] < MAX_TOKENS
            assert engine.scheduler.free_rows == [0, 1]
            if lazy:  # the row's lazy tables are cleared too
                assert not engine.rows.tables[0].is_image.any() and not engine.rows.dropped.any()
    finally:
        worker.stop()
