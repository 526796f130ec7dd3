"""Serving: an engine with continuous batching under a KV budget, and an OpenAI-compatible HTTP server over it."""

from minilazy.serve.engine import Engine, EngineStats
from minilazy.serve.scheduler import QueueFull
from minilazy.serve.sequence import Sequence, SequenceEvent

__all__ = ["Engine", "EngineStats", "QueueFull", "Sequence", "SequenceEvent"]
