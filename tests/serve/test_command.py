"""`python cli.py serve` as a user starts it: it prints where and what it serves, answers, and exits 0 on a signal."""

import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
from openai import OpenAI

from minilazy.fastv import FastV
from minilazy.serve.compare import free_port
from tests.serve.conftest import FASTV_PLAN, QUESTIONS, ROOT, http, user_message

pytestmark = pytest.mark.slow


@contextmanager
def serve(*flags):
    """`python cli.py serve FLAGS` on a free port, up and answering /health; yields (url, process)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "cli.py", "serve", "--port", str(port), *flags], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "the server did not come up"
            try:
                if http("GET", f"{url}/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_answers_and_stops_cleanly(pipeline, sig):
    with serve("--kv-budget", "64MiB", "--max-batch", "2", "--served-model-name", "scenes") as (url, process):
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        out = client.chat.completions.create(model="scenes", temperature=0, max_tokens=8,
                                             messages=[{"role": "user", "content": "How many shapes are there?"}])
        assert out.choices[0].message.content == pipeline.ask("How many shapes are there?", max_new_tokens=8).text
        process.send_signal(sig)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert f"serving 'scenes'" in output and f"{url}/v1" in output
    assert "attention: full attention" in output
    assert "typical requests fit" in output and "64.0 MiB" in output


def test_serve_with_a_plan_and_fastv_answers_as_generate_does(pipeline, tmp_path):
    plan = tmp_path / "plan.json"
    FASTV_PLAN.save(plan)
    image, question = QUESTIONS[1]
    expected = pipeline.ask(question, image, plan=FASTV_PLAN, fastv=FastV(2, 0.5), max_new_tokens=12).text
    with serve("--lazy", str(plan), "--fastv-layer", "2", "--fastv-ratio", "0.5") as (url, process):
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        out = client.chat.completions.create(model="demo", temperature=0, max_tokens=12,
                                             messages=[user_message(question, image)])
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert out.choices[0].message.content == expected
    assert f"attention: {len(FASTV_PLAN.lazy_layers)} of 12 layers lazy ({FASTV_PLAN.inheritance()}), " \
           "FastV from layer 2, ratio 0.5" in output


def test_serve_refuses_bad_lazy_flags():
    for flags, says in ((["--calib-images", "3"], "--calib-images only applies"),
                        (["--fastv-layer", "2"], "FastV needs both"),
                        (["--lazy-ratio", "0.5", "--calib-images", "nowhere"], "--calib-images 'nowhere' is neither")):
        done = subprocess.run([sys.executable, "cli.py", "serve", *flags], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2 and done.stderr.startswith("error: ") and says in done.stderr, done.stderr
