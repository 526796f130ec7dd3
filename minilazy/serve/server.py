"""The OpenAI-compatible HTTP API over one engine (FastAPI).

- `POST /v1/chat/completions`: a conversation (minilazy/serve/messages.py), whole or streamed
  as server-sent events, one chunk per token, then `data: [DONE]`;
- `GET /v1/models`: the one served model; `GET /health`: 200 while the engine thread runs;
- `GET /metrics`: running and waiting requests, KV bytes reserved of the budget, tokens generated,
  in Prometheus' text format.

Handlers parse, check and queue; the engine thread (minilazy/serve/worker.py) runs every forward pass
and hands each token back to the handler's event loop. A client that goes away mid-answer cancels its
request, which frees its row at the engine's next step. Errors are OpenAI's error body: 400 for a
malformed request or one that can never run, 404 for another model's name, 429 with Retry-After when
the queue is full.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from minilazy.errors import InputError
from minilazy.pipeline import Pipeline
from minilazy.serve.engine import Engine
from minilazy.serve.messages import RequestError, conversation, prompt_request, sampling_params, stop_strings
from minilazy.serve.protocol import (ChatCompletionRequest, Usage, chunk_body, completion_id, error_body, model_list,
                                     now, response_body)
from minilazy.serve.scheduler import QueueFull
from minilazy.serve.sequence import ERROR, Sequence, SequenceEvent
from minilazy.serve.text import TextStream
from minilazy.serve.worker import EngineThread

RETRY_AFTER_SECONDS = 1


def error(status: int, message: str, kind: str, param: str | None = None, code: str | None = None,
          headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, kind, param, code), status_code=status, headers=headers)


def validation_message(err: ValidationError) -> tuple[str, str | None]:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return (f"{where}: {first['msg']}" if where else first["msg"]), (str(first["loc"][0]) if first["loc"] else None)


class Server:
    """What the handlers share: the pipeline (prompts, text), the engine and its thread, the limits."""

    def __init__(self, pipeline: Pipeline, engine: Engine, worker: EngineThread, model_name: str,
                 max_new_tokens_limit: int):
        self.pipeline, self.engine, self.worker = pipeline, engine, worker
        self.model_name, self.limit = model_name, max_new_tokens_limit
        self.created = now()

    def prepare(self, body: ChatCompletionRequest):
        """The engine's request, sampling and text stream for `body` (runs in a worker thread: images decode
        and preprocess here)."""
        request = prompt_request(self.pipeline, conversation(body.messages))
        params = sampling_params(body, len(request.input_ids), self.engine.longest_request, self.limit)
        return request, params, TextStream(self.pipeline.decode, stop_strings(body))

    async def chat(self, http: HTTPRequest):
        try:
            payload = json.loads(await http.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return error(400, f"the request body is not valid JSON ({err})", "invalid_request_error")
        try:
            body = ChatCompletionRequest.model_validate(payload)
        except ValidationError as err:
            message, param = validation_message(err)
            return error(400, message, "invalid_request_error", param)
        if body.model != self.model_name:
            return error(404, f"the model {body.model!r} does not exist; this server serves {self.model_name!r}",
                         "not_found_error", "model", "model_not_found")
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def on_event(event: SequenceEvent) -> None:  # on the engine's thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the event loop has closed (the server stopped): nobody is listening
                pass

        try:
            request, params, text = await run_in_threadpool(self.prepare, body)
            seq = self.engine.submit(request, params, text, on_event, ignore_eos=body.ignore_eos)
        except RequestError as err:
            return error(400, str(err), "invalid_request_error", err.param)
        except InputError as err:
            return error(400, str(err), "invalid_request_error", "messages")
        except QueueFull as err:
            return error(429, f"the server is busy ({err}); retry later", "rate_limit_error", code="queue_full",
                         headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        if body.stream:
            usage = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(self.stream(seq, events, usage), media_type="text/event-stream")
        return await self.whole(seq, events)

    async def whole(self, seq: Sequence, events: asyncio.Queue) -> JSONResponse:
        try:
            while (await events.get()).finish_reason is None:
                pass
        finally:  # the handler was cancelled (the server stops): the request must not run on
            if not seq.finished:
                self.engine.cancel(seq)
        if seq.finish_reason == ERROR:
            return error(500, "the engine failed while answering this request", "server_error")
        return JSONResponse(response_body(completion_id(), now(), self.model_name, seq.text.text, seq.finish_reason,
                                          usage(seq)))

    async def stream(self, seq: Sequence, events: asyncio.Queue, include_usage: bool):
        cid, created = completion_id(), now()

        def sse(delta: dict, finish_reason: str | None = None) -> str:
            return f"data: {json.dumps(chunk_body(cid, created, self.model_name, delta, finish_reason))}\n\n"

        try:
            yield sse({"role": "assistant", "content": ""})
            while True:
                event = await events.get()
                if event.finish_reason is None:
                    yield sse({"content": event.text})
                    continue
                if event.finish_reason == ERROR:
                    body = error_body("the engine failed while answering this request", "server_error")
                    yield f"data: {json.dumps(body)}\n\n"
                    break
                yield sse({"content": event.text} if event.text else {}, event.finish_reason)  # and text held back
                if include_usage:
                    body = chunk_body(cid, created, self.model_name, {}, usage=usage(seq), choices=False)
                    yield f"data: {json.dumps(body)}\n\n"
                break
            yield "data: [DONE]\n\n"
        finally:  # the client went away (the response is cancelled): free the row at the next step
            if not seq.finished:
                self.engine.cancel(seq)

    def metrics(self) -> str:
        s = self.engine.stats()
        lines = []
        for name, kind, value, what in (
                ("requests_running", "gauge", s.running, "Requests in the running batch."),
                ("requests_running_peak", "gauge", s.running_peak, "The most requests that have run at once."),
                ("requests_waiting", "gauge", s.waiting, "Requests queued for admission."),
                ("kv_bytes_used", "gauge", s.kv_bytes_used, "KV bytes reserved by running requests."),
                ("kv_budget_bytes", "gauge", s.kv_budget_bytes, "KV bytes running requests may reserve."),
                ("kv_storage_bytes", "gauge", s.kv_storage_bytes, "KV storage allocated at start (rows x slots)."),
                ("generated_tokens_total", "counter", s.tokens_generated, "Tokens generated since start.")):
            lines += [f"# HELP minilazy_{name} {what}", f"# TYPE minilazy_{name} {kind}", f"minilazy_{name} {value}"]
        lines += ["# HELP minilazy_requests_finished_total Requests ended, by finish reason.",
                  "# TYPE minilazy_requests_finished_total counter"]
        lines += [f'minilazy_requests_finished_total{{reason="{reason}"}} {n}'
                  for reason, n in sorted(s.finished.items())]
        return "\n".join(lines) + "\n"


def usage(seq: Sequence) -> Usage:
    return Usage(prompt_tokens=seq.prompt_tokens, completion_tokens=len(seq.tokens),
                 total_tokens=seq.prompt_tokens + len(seq.tokens))


def create_app(server: Server) -> FastAPI:
    app = FastAPI(title="minilazy", docs_url=None, redoc_url=None)

    @app.exception_handler(HTTPException)
    async def http_error(_, err: HTTPException):  # unknown routes and methods, in OpenAI's error body
        return error(err.status_code, str(err.detail), "invalid_request_error")

    app.add_api_route("/v1/chat/completions", server.chat, methods=["POST"])
    app.add_api_route("/v1/models", lambda: model_list(server.model_name, server.created), methods=["GET"])
    app.add_api_route("/metrics", lambda: PlainTextResponse(server.metrics()), methods=["GET"])

    @app.get("/health")
    def health():
        if not server.worker.alive:
            return error(503, "the engine thread is not running", "server_error")
        return {"status": "ok"}

    return app
