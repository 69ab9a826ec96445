"""Threads at the edges of the pipeline: a bounded read-ahead and a bounded write-behind.

Both follow one pattern: a bounded queue (memory stays constant), an end marker, a stop event checked while
waiting, exceptions from the worker re-raised in the caller, and join in `finally`.
"""

from __future__ import annotations

import queue
import threading
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
    """Run `handle(item)` for each submitted item, in order, on one worker thread."""

    def __init__(self, handle: Callable[[T], None], depth: int = 4) -> None:
        self._handle = handle
        self._items: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="vidstyle-write-behind", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._items.get()
            if item is _END:
                return
            if self._error is None:
                try:
                    self._handle(item)  # type: ignore[arg-type]
                except BaseException as exc:  # noqa: BLE001 - re-raised in the submitting thread
                    self._error = exc

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, item: T) -> None:
        self._raise_pending()
        while self._thread.is_alive():
            try:
                self._items.put(item, timeout=_POLL)
                return
            except queue.Full:
                self._raise_pending()
        self._raise_pending()

    def finish(self) -> None:
        """Wait until every submitted item is handled; re-raise the worker's error if any."""
        if self._thread.is_alive():
            self._items.put(_END)
            self._thread.join()
        self._raise_pending()
