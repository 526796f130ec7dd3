"""A load generator for the chat completions API: N streamed requests, C at a time, timed token by token.

Per request: TTFT, the time from sending it to its first token's chunk, and TPOT, the mean time
between its later tokens (`(last token - first token) / (tokens - 1)`). Over the run: requests and
output tokens per second of wall time. Only the standard library is used, so it runs anywhere.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np


@dataclass
class Outcome:
    status: int
    ttft: float | None = None  # seconds
    tpot: float | None = None  # seconds per token after the first; None for answers of one token
    output_tokens: int = 0
    latency: float = 0.0
    error: str = ""


@dataclass
class LoadReport:
    url: str
    model: str
    requests: int
    concurrency: int
    failed: int
    seconds: float
    request_throughput: float  # finished requests per second
    output_tokens_per_second: float
    output_tokens: int
    ttft: dict = field(default_factory=dict)  # mean, p50, p90, p99 in milliseconds
    tpot: dict = field(default_factory=dict)
    latency: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)  # the first few failures' messages


def summary(seconds: list[float]) -> dict:
    """Mean and percentiles, in milliseconds."""
    if not seconds:
        return {}
    ms = np.array(seconds) * 1000
    return {"mean": float(ms.mean()), **{f"p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)}}


def chat_body(model: str, prompt: str, image: str | Path | None, max_tokens: int, ignore_eos: bool = False) -> dict:
    content = prompt
    if image is not None:
        data = base64.b64encode(Path(image).read_bytes()).decode()
        content = [{"type": "text", "text": prompt},
                   {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}]
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
            **({"ignore_eos": True} if ignore_eos else {})}


def connect(url: str, timeout: float) -> http.client.HTTPConnection:
    address = urlparse(url)
    return http.client.HTTPConnection(address.hostname, address.port or 80, timeout=timeout)


def served_model(url: str, timeout: float = 30) -> str:
    connection = connect(url, timeout)
    try:
        connection.request("GET", "/v1/models")
        return json.loads(connection.getresponse().read())["data"][0]["id"]
    finally:
        connection.close()


def one_request(url: str, body: bytes, timeout: float) -> Outcome:
    connection = connect(url, timeout)
    start = time.perf_counter()
    try:
        connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            return Outcome(response.status, error=response.read().decode(errors="replace")[:300])
        stamps, usage = [], None
        for line in response:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                return Outcome(500, error=chunk["error"]["message"])
            usage = chunk.get("usage") or usage
            if any(choice["delta"].get("content") is not None and choice["finish_reason"] is None
                   and "role" not in choice["delta"] for choice in chunk["choices"]):
                stamps.append(time.perf_counter())
        latency = time.perf_counter() - start
        tokens = usage["completion_tokens"] if usage else len(stamps)
        tpot = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None
        return Outcome(200, stamps[0] - start if stamps else None, tpot, tokens, latency)
    except (OSError, http.client.HTTPException, ValueError) as err:
        return Outcome(0, error=f"{type(err).__name__}: {err}")
    finally:
        connection.close()


def run_load(url: str, n: int, concurrency: int, prompt: str, image=None, max_tokens: int = 64,
             model: str | None = None, timeout: float = 600, ignore_eos: bool = False) -> LoadReport:
    """Send `n` streamed requests, `concurrency` at a time, and summarise them."""
    url = url.rstrip("/").removesuffix("/v1")
    model = model or served_model(url)
    body = json.dumps(chat_body(model, prompt, image, max_tokens, ignore_eos)).encode()
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        outcomes = list(pool.map(lambda _: one_request(url, body, timeout), range(n)))
    seconds = time.perf_counter() - start
    done = [o for o in outcomes if o.status == 200]
    tokens = sum(o.output_tokens for o in done)
    return LoadReport(url, model, n, concurrency, n - len(done), seconds, len(done) / seconds, tokens / seconds, tokens,
                      summary([o.ttft for o in done if o.ttft is not None]),
                      summary([o.tpot for o in done if o.tpot is not None]), summary([o.latency for o in done]),
                      [f"{o.status}: {o.error}" for o in outcomes if o.status != 200][:5])


def report_lines(report: LoadReport) -> list[str]:
    lines = [f"{report.requests} requests to {report.url} ({report.model}), {report.concurrency} at a time: "
             f"{report.failed} failed, {report.seconds:.2f} s",
             f"request throughput  {report.request_throughput:.2f} requests/s",
             f"output tokens       {report.output_tokens} ({report.output_tokens_per_second:.1f} tokens/s)"]
    for name, stats in (("TTFT", report.ttft), ("TPOT", report.tpot), ("latency", report.latency)):
        if stats:
            lines.append(f"{name:<8} ms  mean {stats['mean']:.1f}  p50 {stats['p50']:.1f}  p90 {stats['p90']:.1f}  "
                         f"p99 {stats['p99']:.1f}")
    lines += [f"error: {e}" for e in report.errors]
    return lines


def as_json(report: LoadReport) -> str:
    return json.dumps(asdict(report), indent=2)
