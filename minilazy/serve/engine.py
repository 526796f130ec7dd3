"""The serving engine: continuous batching over one model and one KV storage allocated at start.

Each `step()` happens at a step boundary of the running batch:

1. cancelled sequences leave (their row and bytes go back to the scheduler);
2. the scheduler admits the waiting sequences that fit the KV budget; admitted sequences are prefilled,
   each into its own cache row in one-row chunks of `prefill_chunk` tokens, oldest first, at most
   `prefill_chunk` tokens a step (so a long prompt takes several steps, and running sequences decode
   between them); a sequence whose prompt is done samples its first token;
3. every running sequence takes one decode step, all in one batched forward pass over the rows in use
   (rows that are free in between take no token), and samples its next token with its own sampler.

A sequence ends at a stop token (not reported as a token), a stop string, `max_new_tokens`, or a
cancel, and gives its row back at once. Alone, a request gets exactly the tokens `generate()` gives it:
the same prefill, the same decode steps, the same sampler seeded the same way.

With a `LazyRuntime` (a lazy plan, FastV or VTW) the storage is `LazyRows`: a request is priced at the
bytes of the cache `generate()` would allocate for it with that runtime, so the same budget admits more
sequences, and a prefill and a decode step run the runtime's own layers over the rows.

`submit` and `cancel` may be called from any thread; `step` runs on one (minilazy/serve/worker.py).
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass

import torch

from minilazy.errors import InputError
from minilazy.generate import PREFILL_CHUNK, Request, decode_step
from minilazy.lazy.runtime import LazyRuntime
from minilazy.mrope import MRopePositions
from minilazy.model import Model
from minilazy.sampler import SamplingParams
from minilazy.serve.lazy_rows import LazyRows
from minilazy.serve.prefill import Prefill
from minilazy.serve.rows import CacheRows
from minilazy.serve.scheduler import Scheduler
from minilazy.serve.sequence import CANCELLED, ERROR, LENGTH, STOP, Sequence, SequenceEvent
from minilazy.serve.text import TextStream


@dataclass
class EngineStats:
    running: int
    running_peak: int  # the most sequences that have run at once since start
    waiting: int
    kv_bytes_used: int  # reserved by running sequences
    kv_budget_bytes: int
    kv_storage_bytes: int  # allocated at start: rows x slots
    tokens_generated: int
    finished: dict[str, int]  # sequences ended, by finish reason


class Engine:
    def __init__(self, model: Model, budget_bytes: int, max_batch: int, stop_ids=(), max_queue: int = 64,
                 prefill_chunk: int = PREFILL_CHUNK, runtime: LazyRuntime | None = None, max_len: int | None = None):
        """`budget_bytes` of KV the running sequences may reserve; `max_batch` cache rows (sequences running
        at once), each of `max_len` slots (default: the context window or the budget at the plain model's price
        per token, whichever is shorter); `runtime`: a lazy plan, FastV or VTW (default: the plain model)."""
        self.model, self.prefill_chunk = model, prefill_chunk
        self.stop_ids = frozenset(stop_ids)
        self.context_window = model.config.text.max_position_embeddings
        per_token = CacheRows.bytes_per_token_of(model)
        if max_len is not None and max_len < 2:
            raise InputError(f"a cache row of {max_len} slot(s) (--max-model-len) is too short for any request")
        slots = min(self.context_window, budget_bytes // per_token, max_len or self.context_window)
        if slots < 2:
            raise InputError(f"a KV budget of {budget_bytes:,} bytes holds {slots} token(s) of this model "
                             f"({per_token:,} bytes each): too small for any request")
        if runtime is None:
            self.rows = CacheRows(model, max_batch, slots)
        else:
            self.rows = LazyRows(model, runtime, max_batch, slots, prefill_chunk)
        self.scheduler = Scheduler(budget_bytes, max_batch, max_queue)
        self.lock = threading.Condition()  # guards the scheduler's queues; submit and cancel notify it
        self.prefilling: deque[Sequence] = deque()  # admitted, prompt not all prefilled yet (oldest first)
        self.tokens_generated = 0
        self.finished: Counter[str] = Counter()

    @property
    def longest_request(self) -> int:
        """The most tokens (prompt plus answer) a request may hold: a cache row, never longer than the context
        window."""
        return self.rows.slots

    def check(self, request: Request, params: SamplingParams) -> int:
        """The KV bytes `request` needs; raises InputError for a request that can never run."""
        prompt = len(request.input_ids)
        if prompt == 0:
            raise InputError("empty prompt: nothing to generate from")
        if prompt + params.max_new_tokens > self.context_window:
            raise InputError(f"prompt ({prompt} tokens) plus {params.max_new_tokens} new tokens exceeds the model's "
                             f"context window of {self.context_window} tokens")
        need = self.rows.need(request, params.max_new_tokens)
        if need > self.scheduler.budget_bytes:
            raise InputError(f"the request needs {need:,} bytes of KV cache ({prompt} prompt tokens plus "
                             f"{params.max_new_tokens} new), more than the whole budget of "
                             f"{self.scheduler.budget_bytes:,} bytes")
        if prompt + params.max_new_tokens > self.rows.slots:
            raise InputError(f"prompt ({prompt} tokens) plus {params.max_new_tokens} new tokens exceeds the "
                             f"{self.rows.slots} slots of a cache row (--max-model-len, or what the KV budget "
                             f"holds at the plain model's price)")
        return need

    def submit(self, request: Request, params: SamplingParams, text: TextStream | None = None,
               on_event=None, ignore_eos: bool = False) -> Sequence:
        """Queue a request (raises InputError if it can never run, QueueFull if the queue is full);
        `ignore_eos`: stop tokens do not end it, only `max_new_tokens` (and stop strings) do."""
        seq = Sequence(request, params, self.check(request, params), text, on_event, ignore_eos=ignore_eos)
        with self.lock:
            self.scheduler.add(seq)
            self.lock.notify_all()
        return seq

    def cancel(self, seq: Sequence) -> None:
        """End `seq` at the next step boundary (from any thread); its row and bytes go back then."""
        seq.cancelled = True
        with self.lock:
            self.lock.notify_all()

    def has_work(self) -> bool:
        with self.lock:
            return bool(self.scheduler.waiting or self.scheduler.running)

    def wait_for_work(self, timeout: float) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: self.scheduler.waiting or self.scheduler.running, timeout)

    @torch.inference_mode()
    def step(self) -> None:
        with self.lock:
            for seq in [*self.scheduler.waiting, *self.scheduler.running.values()]:
                if seq.cancelled:
                    self.finish(seq, CANCELLED)
            self.prefilling.extend(self.scheduler.admit())
        self.prefill_step()
        running = [seq for seq in self.scheduler.running.values() if seq.pending is not None]
        if running:
            self.decode(running)

    def run_until_idle(self) -> None:
        while self.has_work():
            self.step()

    def prefill_step(self) -> None:
        """Prefill chunks, oldest admitted request first, up to `prefill_chunk` tokens in all (one chunk at
        least); a request whose prompt is done samples its first token and joins the decode steps."""
        tokens = 0
        while self.prefilling:
            seq = self.prefilling[0]
            if seq.prefill is None:  # its images go through the vision tower now: only if its chunk fits
                if tokens and tokens + min(self.prefill_chunk, seq.prompt_tokens) > self.prefill_chunk:
                    return
                try:
                    seq.prefill = Prefill(self.model, self.rows, seq, self.prefill_chunk)
                except InputError:  # a prompt its images cannot fill, which the checks let through: it alone ends
                    self.finish(seq, ERROR)
                    continue
            job = seq.prefill
            if tokens and tokens + job.next_tokens > self.prefill_chunk:  # FastV's prefill takes the prompt whole
                return
            tokens += job.next_tokens
            job.run_chunk()
            if job.done:
                self.prefilling.popleft()
                self.rows.prefilled(seq.row)
                seq.prefill, seq.kv_len, seq.rope_delta = None, seq.prompt_tokens, job.rope_delta
                self.accept(seq, job.logits())

    def decode(self, seqs: list[Sequence]) -> None:
        """One token for every sequence of `seqs` in one forward pass over the rows in use."""
        device, n_rows = self.model.device, self.scheduler.rows_in_use
        rows = torch.tensor([seq.row for seq in seqs], device=device)
        tokens = torch.zeros(n_rows, dtype=torch.long, device=device)
        kv_len = torch.zeros(n_rows, dtype=torch.long, device=device)
        live = torch.zeros(n_rows, dtype=torch.bool, device=device)
        tokens[rows] = torch.tensor([seq.pending for seq in seqs], device=device)
        kv_len[rows] = torch.tensor([seq.kv_len for seq in seqs], device=device)
        live[rows] = True
        mrope = None
        if self.model.config.multimodal_rope:
            delta = torch.zeros(n_rows, dtype=torch.long, device=device)
            delta[rows] = torch.tensor([seq.rope_delta for seq in seqs], device=device)
            mrope = MRopePositions.after_prompts(delta)
        logits = decode_step(self.model, tokens, kv_len, self.rows.decode_setup(n_rows), live, mrope)  # [n_rows, V]
        for seq in seqs:
            seq.kv_len += 1
            self.accept(seq, logits[seq.row : seq.row + 1])

    def accept(self, seq: Sequence, logits: torch.Tensor) -> None:
        """Sample `seq`'s next token from `logits [1, V]`, report it, and end the sequence if it is done."""
        token = int(seq.sampler(logits)[0])
        if token in self.stop_ids and not seq.ignore_eos:
            return self.finish(seq, STOP)
        seq.tokens.append(token)
        self.tokens_generated += 1
        delta, stopped = seq.text.push(token) if seq.text is not None else ("", False)
        seq.emit(SequenceEvent(token, delta))
        if stopped:
            self.finish(seq, STOP)
        elif len(seq.tokens) >= seq.params.max_new_tokens:
            self.finish(seq, LENGTH)
        else:
            seq.pending = token

    def finish(self, seq: Sequence, reason: str) -> None:
        """End `seq`: its row and bytes go back now; the last event carries any text held back."""
        row = seq.row
        if seq in self.prefilling:
            self.prefilling.remove(seq)
        seq.prefill = None
        with self.lock:
            self.scheduler.release(seq)
        if row >= 0:
            self.rows.release(row)
        seq.finish_reason, seq.pending = reason, None
        self.finished[reason] += 1
        rest = seq.text.flush() if seq.text is not None and reason != CANCELLED else ""
        seq.emit(SequenceEvent(None, rest, reason))

    def abort(self, reason: str) -> None:
        """End every waiting and running sequence with `reason` (after a failed step, or at shutdown)."""
        with self.lock:
            for seq in [*self.scheduler.waiting, *self.scheduler.running.values()]:
                self.finish(seq, reason)

    def stats(self) -> EngineStats:
        with self.lock:
            s = self.scheduler
            return EngineStats(len(s.running), s.running_peak, len(s.waiting), s.used_bytes, s.budget_bytes,
                               self.rows.nbytes, self.tokens_generated, dict(self.finished))
