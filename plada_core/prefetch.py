"""``prefetch``: run an iterator in a background thread, a few items ahead, so that reading and decoding (Python,
GIL-bound) overlap with model work in torch kernels (which release the GIL).

Used by scoring (the next batches are read and decoded while the model runs on this one) and by the client's
shard streams without DataLoader workers (``StreamLoader(prefetch_batches=...)``), both on by default only for a
CUDA model: on a CPU torch's threads already use every core, and the thread then slows the step it feeds.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator, TypeVar

__all__ = ["prefetch"]

T = TypeVar("T")
_DONE = object()


def prefetch(iterator: Iterator[T], depth: int = 2, name: str = "plada-prefetch") -> Iterator[T]:
    """The items of ``iterator``, in order, produced by a background thread at most ``depth`` items ahead.

    Exceptions of the producer are re-raised in the consumer at the point they occurred; a consumer that stops early
    (breaks, or is closed) stops the producer at its next item, and the thread is joined.
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be >= 1, got {depth!r}")
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(exc)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while (item := out.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
