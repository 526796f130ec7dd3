"""Admission under a KV budget: which waiting sequences may run, and the bytes and rows they hold.

A sequence reserves, for as long as it runs, the KV bytes of its prompt plus `max_new_tokens` slots (so a
running sequence never has to be stopped for memory) and one cache row. Waiting sequences are admitted
first come, first served: the oldest waits until the budget has room for it, and none behind it overtakes
it (a long request is not starved by short ones). Rows and bytes come back the moment a sequence
finishes or is cancelled.
"""

from __future__ import annotations

import heapq
from collections import deque

from minilazy.serve.sequence import Sequence


class QueueFull(Exception):
    """The waiting queue is at its limit: the client should retry later."""


class Scheduler:
    def __init__(self, budget_bytes: int, rows: int, max_queue: int):
        if budget_bytes < 1 or rows < 1 or max_queue < 0:
            raise ValueError(f"need a positive budget and row count and max_queue >= 0, got {budget_bytes}, "
                             f"{rows}, {max_queue}")
        self.budget_bytes, self.max_queue = budget_bytes, max_queue
        self.used_bytes = 0
        self.running_peak = 0  # the most sequences running at once so far
        self.free_rows = list(range(rows))  # a heap: the lowest free row first keeps the batch's rows packed
        self.waiting: deque[Sequence] = deque()
        self.running: dict[int, Sequence] = {}  # row -> sequence

    def add(self, seq: Sequence) -> None:
        """Queue `seq`; raises QueueFull when `max_queue` sequences already wait."""
        if len(self.waiting) >= self.max_queue:
            raise QueueFull(f"{len(self.waiting)} requests are already waiting")
        self.waiting.append(seq)

    def admit(self) -> list[Sequence]:
        """Move the waiting sequences that fit (in order, stopping at the first that does not) to running rows."""
        admitted = []
        while self.waiting and self.free_rows and self.used_bytes + self.waiting[0].kv_bytes <= self.budget_bytes:
            seq = self.waiting.popleft()
            seq.row = heapq.heappop(self.free_rows)
            self.used_bytes += seq.kv_bytes
            self.running[seq.row] = seq
            admitted.append(seq)
        self.running_peak = max(self.running_peak, len(self.running))
        return admitted

    def release(self, seq: Sequence) -> None:
        """Give back a running sequence's row and bytes, or take a waiting one off the queue."""
        if seq.row >= 0 and self.running.get(seq.row) is seq:
            del self.running[seq.row]
            heapq.heappush(self.free_rows, seq.row)
            self.used_bytes -= seq.kv_bytes
            seq.row = -1
        elif seq in self.waiting:
            self.waiting.remove(seq)

    @property
    def rows_in_use(self) -> int:
        """Rows a batched step must cover: up to the highest running row (idle rows below it take no token)."""
        return max(self.running) + 1 if self.running else 0
