"""The thread that drives the engine: one step after another while there is work, asleep otherwise.

The HTTP handlers only submit, cancel and read events; every forward pass happens on this thread. A
step that fails ends the sequences in flight with finish reason "error" (their clients get an error)
and the loop goes on serving new requests.
"""

from __future__ import annotations

import sys
import threading
import traceback

from minilazy.serve.engine import Engine
from minilazy.serve.sequence import CANCELLED, ERROR

IDLE_WAIT = 0.5  # seconds asleep between checks for a stop request when there is no work


class EngineThread:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.loop, name="minilazy-engine", daemon=True)

    def start(self) -> EngineThread:
        self.thread.start()
        return self

    def loop(self) -> None:
        while not self.stopping.is_set():
            if not self.engine.wait_for_work(IDLE_WAIT):
                continue
            try:
                self.engine.step()
            except Exception:  # a bug or a bad input the checks missed: fail these requests, keep serving
                traceback.print_exc(file=sys.stderr)
                self.engine.abort(ERROR)

    def stop(self) -> None:
        """Finish the current step, end every request left (cancelled) and join the thread."""
        self.stopping.set()
        with self.engine.lock:
            self.engine.lock.notify_all()
        self.thread.join()
        self.engine.abort(CANCELLED)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()
