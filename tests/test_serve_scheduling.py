"""ModelTurns: callers get the model in the order they asked for it."""

from __future__ import annotations

import threading
import time

from sanawm.serve.scheduling import ModelTurns


def test_turns_are_first_come_first_served():
    turns = ModelTurns()
    order: list[int] = []
    threads = []
    with turns.turn():  # hold the model while five callers line up, one after another
        for k in range(5):
            thread = threading.Thread(target=lambda k=k: _take(turns, order, k))
            thread.start()
            threads.append(thread)
            deadline = time.monotonic() + 10
            while len(turns._waiting) < k + 1:  # caller k is queued before k+1 starts
                assert time.monotonic() < deadline
                time.sleep(0.001)
    for thread in threads:
        thread.join(timeout=10)
    assert order == [0, 1, 2, 3, 4]


def test_a_caller_that_loops_does_not_starve_the_others():
    turns = ModelTurns()
    log: list[str] = []
    stop = threading.Event()

    def greedy():
        while not stop.is_set():
            with turns.turn():
                log.append("greedy")
                time.sleep(0.002)

    thread = threading.Thread(target=greedy)
    thread.start()
    try:
        for _ in range(5):
            with turns.turn():
                log.append("other")
    finally:
        stop.set()
        thread.join(timeout=10)
    # Every "other" turn came right after at most one greedy turn.
    others = [i for i, who in enumerate(log) if who == "other"]
    assert len(others) == 5
    assert all(b - a <= 2 for a, b in zip([-1, *others], others))


def _take(turns: ModelTurns, order: list[int], k: int) -> None:
    with turns.turn():
        order.append(k)
