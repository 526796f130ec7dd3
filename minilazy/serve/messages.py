"""From a chat completions request to what the engine runs: a `Request`, `SamplingParams` and stop strings.

The prompt layouts (minilazy/prompts.py) hold a conversation: user and assistant turns, at most one
image (in a user turn) and, for the ChatML models, a system message; so the messages are optional system
messages, then user and assistant messages by turns (a string, or `text` and `image_url` parts),
ending with the user message to answer. Images come inline as `data:image/...;base64,` URLs: the server
fetches nothing from the network. Every refusal is an `InputError` (a 400 for the client).
"""

from __future__ import annotations

import base64
import binascii
import io
import secrets
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from minilazy.errors import InputError
from minilazy.generate import Request
from minilazy.images import load_image
from minilazy.pipeline import Pipeline
from minilazy.prompts import SYSTEM_KINDS, Turn
from minilazy.sampler import SamplingParams
from minilazy.serve.protocol import ChatCompletionRequest, Message

ROLES = ("system", "developer", "user", "assistant", "tool")


class RequestError(InputError):
    """A request the server refuses, with the request field it is about."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Conversation:
    """What a request's messages ask: the system text, the earlier turns, the question and the image."""

    system: str | None
    history: tuple[Turn, ...]
    question: str
    image: Image.Image | None
    text_first: bool = False  # the question's image follows its text


def conversation(messages: list[Message]) -> Conversation:
    """The conversation of `messages`: optional system messages, then user and assistant messages by turns,
    ending with the user message that is answered; at most one image, in a user message."""
    system, turns = [], []
    for i, message in enumerate(messages):
        if message.role not in ROLES:
            raise RequestError(f"messages[{i}]: unknown role {message.role!r}; use one of {', '.join(ROLES)}",
                               "messages")
        if message.role in ("system", "developer") and not turns:
            system.append(text_of(message, i))
        else:
            turns.append((i, message))
    order = "after optional system messages, user and assistant messages alternate and a user message ends"
    for n, (i, message) in enumerate(turns):
        expected = "user" if n % 2 == 0 else "assistant"
        if message.role != expected:
            where = "system messages come first" if message.role in ("system", "developer") else order
            raise RequestError(f"messages[{i}] is {article(message.role)} message where {article(expected)} message "
                               f"belongs: {where}", "messages")
    if not turns:
        raise RequestError("the conversation has no user message", "messages")
    if turns[-1][1].role != "user":
        raise RequestError(f"the conversation ends with {article(turns[-1][1].role)} message: {order} it", "messages")
    images = [(n, part.image_url) for n, (_, message) in enumerate(turns) for part in parts(message)
              if part.type == "image_url"]
    if len(images) > 1:
        raise RequestError("at most one image per request", "messages")
    if images and images[0][1] is None:
        raise RequestError(f"messages[{turns[images[0][0]][0]}]: an image_url part needs an image_url with a url",
                           "messages")
    image_turn = images[0][0] if images else None
    history = tuple(Turn(message.role, text_of(message, i), n == image_turn, text_first(message))
                    for n, (i, message) in enumerate(turns[:-1]))
    i, message = turns[-1]
    question = text_of(message, i)
    if not question.strip():
        raise RequestError("the prompt is empty: the last user message has no text", "messages")
    return Conversation("\n".join(system) if system else None, history, question,
                        decode_image(images[0][1].url) if images else None, text_first(message))


def text_first(message: Message) -> bool:
    """Whether a text part comes before the message's image."""
    types = [part.type for part in parts(message)]
    return "image_url" in types and "text" in types[: types.index("image_url")]


def article(role: str) -> str:
    return f"{'an' if role == 'assistant' else 'a'} {role}"  # the roles: system, developer, user, assistant, tool


def parts(message: Message) -> list:
    return message.content if isinstance(message.content, list) else []


def text_of(message: Message, i: int) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    for part in message.content:
        if part.type not in ("text", "image_url"):
            raise RequestError(f"messages[{i}]: unsupported content part type {part.type!r} (text and image_url "
                               "only)", "messages")
        if part.type == "image_url" and message.role != "user":
            raise RequestError(f"messages[{i}]: only a user message may carry an image", "messages")
    return "\n".join(part.text or "" for part in message.content if part.type == "text")


def decode_image(url: str) -> Image.Image:
    """The RGB image of a `data:image/<format>;base64,<payload>` URL."""
    header, comma, payload = url.partition(",")
    if not (header.startswith("data:image/") and header.endswith(";base64") and comma):
        raise RequestError("image_url must be a data URL, data:image/png;base64,... (the server fetches nothing "
                           "from the network)", "messages")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("image_url: the base64 payload does not decode", "messages") from None
    try:
        with warnings.catch_warnings():  # load_image applies the pixel limit that decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError):
        raise RequestError("image_url: the data is not an image (or one in a format PIL cannot read)",
                           "messages") from None
    return load_image(image)


def prompt_request(pipeline: Pipeline, talk: Conversation) -> Request:
    if talk.system is not None and pipeline.kind not in SYSTEM_KINDS:
        raise RequestError(f"this {pipeline.config.model_type} model's prompt has no system message", "messages")
    return pipeline.request(talk.question, talk.image, talk.system, talk.history, talk.text_first)


def sampling_params(body: ChatCompletionRequest, prompt_tokens: int, context_window: int,
                    limit: int) -> SamplingParams:
    """The request's sampling settings; `max_tokens` defaults to what the limit and `context_window` (the most
    tokens a request may hold: the model's context window, or a shorter cache row) allow."""
    if body.n != 1:
        raise RequestError("only n = 1 is served", "n")
    if body.logprobs:
        raise RequestError("logprobs are not served", "logprobs")
    if prompt_tokens >= context_window:
        raise RequestError(f"the prompt ({prompt_tokens} tokens) fills the {context_window} tokens a request may "
                           f"hold here (the model's context window, or the server's --max-model-len)", "messages")
    asked = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    if asked is None:
        asked = min(limit, context_window - prompt_tokens)
    elif asked < 1:
        raise RequestError(f"{param} must be at least 1, got {asked}", param)
    elif asked > limit:
        raise RequestError(f"{param} is {asked}, over this server's limit of {limit}", param)
    if body.temperature < 0:
        raise RequestError(f"temperature must be >= 0, got {body.temperature}", "temperature")
    if not 0 < body.top_p <= 1:
        raise RequestError(f"top_p must be in (0, 1], got {body.top_p}", "top_p")
    seed = secrets.randbits(63) if body.seed is None else body.seed
    return SamplingParams(asked, body.temperature, top_p=body.top_p, seed=seed)


def stop_strings(body: ChatCompletionRequest) -> tuple[str, ...]:
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if any(not s for s in stop):
        raise RequestError("stop strings must not be empty", "stop")
    return tuple(stop)
