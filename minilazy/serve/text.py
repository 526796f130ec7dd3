"""Tokens to text while they are produced: the new text of each token, and stop strings.

The whole answer is decoded again at every token (a token's text can depend on its neighbours), and
only what can no longer change is handed out: text that might be the start of a stop string, or an
unfinished multi-byte character (decoded as U+FFFD), waits for the next token or the end.
"""

from __future__ import annotations

from typing import Callable

REPLACEMENT = "\ufffd"


class TextStream:
    def __init__(self, decode: Callable[[list[int]], str], stop: tuple[str, ...] = ()):
        self.decode, self.stop = decode, tuple(s for s in stop if s)
        self.tokens: list[int] = []
        self.text = ""  # the answer so far, cut before a stop string once one is found
        self.sent = 0  # characters of `text` handed out

    def push(self, token: int) -> tuple[str, bool]:
        """Add a token; returns the text that can be handed out now and whether a stop string ended the answer."""
        self.tokens.append(token)
        text = self.decode(self.tokens)
        found = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if found:
            self.text = text[: min(found)]
            return self.flush(), True
        self.text = text
        safe = len(text) - self.held_back(text)
        delta = text[self.sent : safe] if safe > self.sent else ""
        self.sent = max(self.sent, safe)
        return delta, False

    def held_back(self, text: str) -> int:
        """How many trailing characters may still change: a stop string's beginning or an unfinished character."""
        hold = len(text) - len(text.rstrip(REPLACEMENT))
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        return hold

    def flush(self) -> str:
        """The text not handed out yet (at the end of the answer)."""
        delta = self.text[self.sent :]
        self.sent = len(self.text)
        return delta
