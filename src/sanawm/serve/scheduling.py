"""Sharing one model between live sessions and offline jobs.

The model runs one chunk at a time: every user of it takes `ModelTurns` around each chunk.
Turns are handed out first come, first served (Python's `Lock` is not fair: a thread that
releases and re-acquires in a loop can starve the others), so N sessions advance in
round-robin and peak activation memory is that of one chunk, whatever N is.
"""

from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager


class ModelTurns:
    """A FIFO lock: `with turns.turn(): ...` waits for every earlier caller to finish."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: deque[object] = deque()
        self._busy = False

    @contextmanager
    def turn(self):
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
            self._cond.wait_for(lambda: not self._busy and self._waiting[0] is ticket)
            self._waiting.popleft()
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
