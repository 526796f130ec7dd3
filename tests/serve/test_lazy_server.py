"""The HTTP server over an engine with lazy layers and FastV, through the `openai` client: concurrent
answers equal what `Pipeline.ask` (generate) gives each alone with the same plan and FastV, and the
metrics show the requests' bytes reserved and returned."""

from concurrent.futures import ThreadPoolExecutor

from openai import OpenAI

from minilazy.fastv import FastV
from minilazy.lazy.runtime import LazyRuntime
from minilazy.serve import Engine
from minilazy.serve.server import Server, create_app
from minilazy.serve.worker import EngineThread
from tests.serve.conftest import FASTV_PLAN, QUESTIONS, metrics, serving, user_message

MAX_TOKENS = 12


def test_concurrent_lazy_fastv_answers_equal_generate_alone(pipeline):
    fastv = FastV(2, 0.5)
    expected = [pipeline.ask(question, image, plan=FASTV_PLAN, fastv=fastv, max_new_tokens=MAX_TOKENS).text
                for image, question in QUESTIONS]
    engine = Engine(pipeline.model, 1 << 30, max_batch=3, stop_ids=pipeline.stop_ids,
                    runtime=LazyRuntime(FASTV_PLAN, fastv=fastv, exact_image_rows=True))
    worker = EngineThread(engine).start()
    jobs = QUESTIONS
    try:
        with serving(create_app(Server(pipeline, engine, worker, "demo", MAX_TOKENS))) as url:
            client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

            def ask(job):
                image, question = job
                out = client.chat.completions.create(model="demo", temperature=0, max_tokens=MAX_TOKENS,
                                                     messages=[user_message(question, image)])
                return out.choices[0].message.content

            with ThreadPoolExecutor(len(jobs)) as pool:
                answers = list(pool.map(ask, jobs))
            m = metrics(url)
    finally:
        worker.stop()
    assert answers == expected
    assert m["minilazy_requests_running"] == m["minilazy_kv_bytes_used"] == 0
    assert 2 <= m["minilazy_requests_running_peak"] <= 3
