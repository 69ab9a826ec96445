"""The write-behind thread keeps finished work when its handling fails or the wait for it is interrupted."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

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
    deadline = time.monotonic() + 10
    with pytest.raises(ValueError):  # once the worker has failed (an item submitted before that is dropped)
        while time.monotonic() < deadline:
            sink.submit(1)
            time.sleep(0.01)
    with pytest.raises(ValueError):
        sink.finish()
    assert seen == [0]


def _interrupt_handler(delivered: threading.Event) -> Callable[[int, object], None]:
    """Ctrl-C's default handler, which also says when it ran: the items wait for it, so the interrupt lands while
    they are being handled however late the timer fires on a busy machine."""
    def handler(signum: int, frame: object) -> None:
        delivered.set()
        raise KeyboardInterrupt

    return handler


def test_an_interrupt_while_finishing_waits_for_the_queued_items() -> None:
    handled: list[int] = []
    delivered = threading.Event()

    def slow(item: int) -> None:
        assert delivered.wait(10)
        handled.append(item)

    previous = signal.signal(signal.SIGINT, _interrupt_handler(delivered))
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


def test_after_an_interrupt_the_items_left_are_only_salvaged() -> None:
    """A stop lands while the last frames are written: those still queued are saved, not encoded into a file that
    the stop discards."""
    handled: list[int] = []
    salvaged: list[int] = []
    delivered = threading.Event()

    def slow(item: int) -> None:
        assert delivered.wait(10)
        time.sleep(0.3)  # the interrupt raised in finish() is caught there, which then salvages the rest
        handled.append(item)

    previous = signal.signal(signal.SIGINT, _interrupt_handler(delivered))
    try:
        sink = WriteBehind(slow, depth=4, salvage=salvaged.append)
        for item in range(4):
            sink.submit(item)
        threading.Timer(0.1, signal.pthread_kill, (threading.get_ident(), signal.SIGINT)).start()
        with pytest.raises(KeyboardInterrupt):
            sink.finish()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert handled == [0] and salvaged == [1, 2, 3]


def test_an_interrupt_is_held_no_longer_than_the_limit_when_an_item_is_stuck() -> None:
    """An encoder that stopped reading blocks its item; the interrupt is raised after the limit, so that the
    caller's clean-up (killing the encoder) can unblock it, and what is queued behind it is then salvaged."""
    unblock = threading.Event()
    salvaged: list[int] = []

    def stuck(item: int) -> None:
        if not unblock.wait(10):
            raise AssertionError("never unblocked")
        raise BrokenPipeError("the encoder was killed")

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        sink = WriteBehind(stuck, depth=4, salvage=salvaged.append, hold_limit=0.5)
        for item in range(3):
            sink.submit(item)
        threading.Timer(0.1, signal.pthread_kill, (threading.get_ident(), signal.SIGINT)).start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            sink.finish()
        assert time.monotonic() - started < 3
    finally:
        signal.signal(signal.SIGINT, previous)
    unblock.set()  # the caller's clean-up kills the encoder
    deadline = time.monotonic() + 5
    while salvaged != [1, 2] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert salvaged == [1, 2]


def test_once_the_caller_stops_the_rest_is_only_salvaged() -> None:
    handled: list[int] = []
    salvaged: list[int] = []

    began, stopped = threading.Event(), threading.Event()

    def slow(item: int) -> None:
        began.set()
        assert stopped.wait(10)
        handled.append(item)

    sink = WriteBehind(slow, depth=4, salvage=salvaged.append)
    for item in range(4):
        sink.submit(item)
    assert began.wait(10)  # item 0 is being handled
    sink.salvage_rest()
    stopped.set()
    sink.finish()
    assert handled == [0] and salvaged == [1, 2, 3]
