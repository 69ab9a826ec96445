"""Threads at the edges of the pipeline: a bounded read-ahead and a bounded write-behind.

Both follow one pattern: a bounded queue (memory stays constant), an end marker, a stop event checked while
waiting, exceptions from the worker re-raised in the caller, and join in `finally`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()
_POLL = 0.1


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def read_ahead(source: Iterable[T], depth: int = 4) -> Iterator[T]:
    """Iterate `source` on a worker thread, up to `depth` items ahead of the consumer."""
    items: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        iterator = iter(source)
        try:
            for item in iterator:
                if not put(item):
                    break
            else:
                put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(_Failure(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # ends the generator here, on its own thread: that is where its ffmpeg is stopped

    worker = threading.Thread(target=work, name="vidstyle-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


class WriteBehind(Generic[T]):
    """Run `handle(item)` for each submitted item, in order, on one worker thread.

    Once `handle` has failed, the items still queued go to `salvage` instead (where given): what is worth keeping
    of them when the rest of their handling can no longer be done, such as a finished frame's checkpoint after
    its encoder died.
    """

    def __init__(self, handle: Callable[[T], None], depth: int = 4,
                 salvage: Callable[[T], None] | None = None, hold_limit: float = 30.0) -> None:
        self._handle, self._salvage, self._hold_limit = handle, salvage, hold_limit
        self._items: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._salvage_only = threading.Event()  # set by an interrupt: the rest is only salvaged
        self._closing = threading.Event()  # no more items come: the worker ends once the queue is empty
        # Set as the worker ends. Waited on instead of Thread.join: a join that a signal handler's exception cuts
        # short marks the thread as ended while it still runs (CPython's bpo-45274 fix).
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._work, name="vidstyle-write-behind", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            self._handle_items()
        finally:
            self._done.set()

    def _handle_items(self) -> None:
        while True:
            try:
                item = self._items.get(timeout=_POLL)
            except queue.Empty:
                if self._closing.is_set():
                    return  # all submitted items handled
                continue
            if self._error is None and not self._salvage_only.is_set():
                try:
                    self._handle(item)  # type: ignore[arg-type]
                except BaseException as exc:  # noqa: BLE001 - re-raised in the submitting thread
                    self._error = exc
            elif self._salvage is not None:
                try:
                    self._salvage(item)  # type: ignore[arg-type]
                except Exception:  # noqa: BLE001, S110 - the first error is the one reported; this is likely its echo
                    pass

    def salvage_rest(self) -> None:
        """From now on the items are only salvaged: their full handling is of no use any more (the caller stops)."""
        if self._salvage is not None:
            self._salvage_only.set()

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, item: T) -> None:
        self._raise_pending()
        while not self._done.is_set():
            try:
                self._items.put(item, timeout=_POLL)
                return
            except queue.Full:
                self._raise_pending()
        self._raise_pending()

    def finish(self) -> None:
        """Wait until every submitted item is handled; re-raise the worker's error if any.

        A Ctrl-C or SIGTERM that lands while waiting is held until the worker is done, then raised: the items
        already submitted are finished work (frames to checkpoint), and the caller's clean-up on the way out
        (killing the encoder) would otherwise fail the worker under them. From then on the items left are only
        salvaged (where there is a salvage step: the frames saved, not encoded into a file the stop discards), and
        the interrupt is held `hold_limit` seconds at most: an item stuck in its handling (an encoder that stopped
        reading) would otherwise hold it for ever, and the caller's clean-up is what unblocks it.
        """
        held: BaseException | None = None
        deadline = float("inf")

        def hold(exc: BaseException) -> None:
            nonlocal held, deadline
            if held is None:
                held, deadline = exc, time.monotonic() + self._hold_limit
                self.salvage_rest()

        self._closing.set()
        while not self._done.is_set() and time.monotonic() <= deadline:
            try:
                self._done.wait(_POLL)
            except BaseException as exc:  # noqa: BLE001 - raised below, once the worker is done
                hold(exc)
        if held is not None:
            raise held
        self._thread.join()
        self._raise_pending()
