"""`python cli.py serve` as a user starts it: it prints where and what it serves, answers, and exits 0 on a signal."""

import signal
import socket
import subprocess
import sys
import time

import pytest
from openai import OpenAI

from tests.serve.conftest import ROOT, http

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_answers_and_stops_cleanly(pipeline, sig):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "cli.py", "serve", "--port", str(port), "--kv-budget", "64MiB",
                                "--max-batch", "2", "--served-model-name", "scenes"], cwd=ROOT,
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
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        out = client.chat.completions.create(model="scenes", temperature=0, max_tokens=8,
                                             messages=[{"role": "user", "content": "How many shapes are there?"}])
        assert out.choices[0].message.content == pipeline.ask("How many shapes are there?", max_new_tokens=8).text
        process.send_signal(sig)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert f"serving 'scenes'" in output and f"{url}/v1" in output
    assert "typical requests fit" in output and "64.0 MiB" in output
