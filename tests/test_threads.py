"""The write-behind thread keeps finished work when its handling fails or the wait for it is interrupted."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from vidstyle.threads import WriteBehind


def test_items_queued_behind_a_failure_are_salvaged() -> None:
    handled: list[int] = []
    salvaged: list[int] = []
    release = threading.Event()

    def handle(item: int) -> None:
        if item == 1:
            release.wait(5)  # holds the worker until every item is queued behind this one
            raise OSError("encoder stopped")
        handled.append(item)

    sink = WriteBehind(handle, depth=4, salvage=salvaged.append)
    for item in range(4):
        sink.submit(item)
    release.set()
    with pytest.raises(OSError, match="encoder stopped"):
        sink.finish()
    assert handled == [0]
    assert salvaged == [2, 3]


def test_without_salvage_items_behind_a_failure_are_dropped() -> None:
    seen: list[int] = []

    def handle(item: int) -> None:
        seen.append(item)
        if item == 0:
            raise ValueError("bad")

    sink = WriteBehind(handle, depth=4)
    sink.submit(0)
    time.sleep(0.2)
    with pytest.raises(ValueError):
        sink.submit(1)
    with pytest.raises(ValueError):
        sink.finish()
    assert seen == [0]


def test_an_interrupt_while_finishing_waits_for_the_queued_items() -> None:
    handled: list[int] = []

    def slow(item: int) -> None:
        time.sleep(0.3)
        handled.append(item)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    main = threading.get_ident()
    try:
        sink = WriteBehind(slow, depth=4)
        for item in range(4):
            sink.submit(item)
        # Ctrl-C lands while finish() waits for the worker (the same as the CLI's first-Ctrl-C handler raising).
        threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGINT)).start()
        with pytest.raises(KeyboardInterrupt):
            sink.finish()
        assert handled == [0, 1, 2, 3]  # all of them, and only then the interrupt
    finally:
        signal.signal(signal.SIGINT, previous)
