"""The OpenAI chat completions API's request and response bodies, and its error body.

Only what the server acts on is declared; other fields of the API (penalties, tools, ...) are accepted
and ignored, except those whose meaning would change the answer and that the server cannot honour
(`n` > 1, `logprobs`), which are refused.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class ImageURL(BaseModel):
    url: str


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: Union[str, list[ContentPart], None] = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    logprobs: bool | None = None
    ignore_eos: bool = False  # vLLM's extension: no stop token ends the answer, only max_tokens (load tests)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def response_body(cid: str, created: int, model: str, text: str, finish_reason: str, usage: Usage) -> dict:
    """A whole (non-streamed) chat completion."""
    return {"id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish_reason, "logprobs": None}],
            "usage": usage.model_dump()}


def chunk_body(cid: str, created: int, model: str, delta: dict, finish_reason: str | None = None,
               usage: Usage | None = None, choices: bool = True) -> dict:
    """One server-sent event of a streamed completion (`choices=False`: the usage-only last chunk)."""
    body: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                                         "logprobs": None}] if choices else []}
    if usage is not None:
        body["usage"] = usage.model_dump()
    return body


ErrorType = Literal["invalid_request_error", "not_found_error", "rate_limit_error", "server_error"]


def error_body(message: str, kind: ErrorType, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def model_list(name: str, created: int) -> dict:
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "minilazy"}]}


def now() -> int:
    return int(time.time())
