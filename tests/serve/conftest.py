"""The demo model, loaded once per test run, and the requests the serving tests send it."""

import base64
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from minilazy.lazy.plan import LayerPlan
from minilazy.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "weights" / "demo"
EXAMPLES = ROOT / "examples"
# (image, question): prompts of different lengths, a text-only one among them, answers short and long
QUESTIONS = [
    (EXAMPLES / "scene_1.png", "What color is the triangle?"),
    (EXAMPLES / "scene_2.png", "Describe the image."),
    (None, "How many shapes are there?"),
    (EXAMPLES / "scene_3.png", "Is there a circle?"),
    (EXAMPLES / "scene_4.png", "Describe the image."),
]

PLAN = LayerPlan((0, 1, 1, 1, 4, 4, 4, 7, 7, 7, 7, 11))  # 7 of the demo model's 12 layers lazy
FASTV_PLAN = LayerPlan((0, 1, 2, 2, 2, 5, 5, 5, 8, 8, 8, 11))  # layer 1 scores for FastV at 2; lazy ones after it


@pytest.fixture(scope="session")
def pipeline():
    """One model for every serving test: its CPU path's caches warm up once."""
    return Pipeline.load(MODEL_DIR, backend="torch")


@contextmanager
def serving(app):
    """Run `app` with uvicorn on a free port of 127.0.0.1 in a thread; yields its base URL, stops it at the end."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def image_url(path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def user_message(question, image=None) -> dict:
    if image is None:
        return {"role": "user", "content": question}
    return {"role": "user", "content": [{"type": "text", "text": question},
                                        {"type": "image_url", "image_url": {"url": image_url(image)}}]}


def http(method: str, url: str, body=None) -> tuple[int, dict, bytes]:
    """`(status, headers, body)` of one request; `body` is sent as is (bytes) or as JSON."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def metrics(url) -> dict[str, float]:
    """GET /metrics as {name (with labels): value}."""
    text = http("GET", f"{url}/metrics")[2].decode()
    return {name: float(value) for name, value in
            (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))}
