"""One request's life in the serving engine: its prompt and sampling, its cache row, what it has produced.

A `Sequence` is made by `Engine.submit` and goes waiting -> running (it owns a cache row and a share of
the KV budget) -> finished. The engine reports each produced token, and the end, as a `SequenceEvent`
through the sequence's `on_event` callback, called on the engine's thread.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from minilazy.generate import Request
from minilazy.sampler import Sampler, SamplingParams
from minilazy.serve.text import TextStream

if TYPE_CHECKING:
    from minilazy.serve.prefill import Prefill

STOP, LENGTH, CANCELLED, ERROR = "stop", "length", "cancelled", "error"  # why a sequence finished

_ids = itertools.count()


@dataclass
class SequenceEvent:
    """A produced token (`token`, the text it adds) or, with `finish_reason`, the end (and any text held back)."""

    token: int | None
    text: str = ""
    finish_reason: str | None = None


@dataclass(eq=False)
class Sequence:
    request: Request
    params: SamplingParams
    kv_bytes: int  # what the scheduler reserves for it while it runs: prompt plus max_new_tokens slots
    text: TextStream | None = None  # detokenizes and watches for stop strings; None: tokens only
    on_event: Callable[[SequenceEvent], None] | None = None
    ignore_eos: bool = False  # stop tokens are produced like any other; only max_new_tokens ends it
    id: int = field(default_factory=lambda: next(_ids))
    row: int = -1  # its cache row while it runs
    kv_len: int = 0  # tokens in its cache row, once prefilled
    rope_delta: int = 0  # multimodal RoPE: a generated token at slot n has position n + rope_delta (minilazy/mrope.py)
    prefill: Prefill | None = None  # its prefill while the prompt is taken in chunks
    tokens: list[int] = field(default_factory=list)  # produced so far (a stop token is not one of them)
    pending: int | None = None  # the last token produced, which the next decode step feeds back
    finish_reason: str | None = None
    cancelled: bool = False  # set from any thread; the engine ends the sequence at its next step
    sampler: Sampler = field(init=False)

    def __post_init__(self):
        self.sampler = Sampler(self.params)

    @property
    def prompt_tokens(self) -> int:
        return len(self.request.input_ids)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def emit(self, event: SequenceEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)
