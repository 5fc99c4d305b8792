"""Retries of storage operations: which errors are worth another try, and the whole-operation retry loop.

The outermost of the three retry layers described in ``storage`` (botocore per request, s3fs per call, this per
operation). Missing objects and denied access are permanent and fail at once.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["TransientStorageError", "is_transient", "retrying"]

log = logging.getLogger("plada_core.io.storage")  # the operator reads retries as storage's log lines
T = TypeVar("T")

# Answers that are the same however often we ask: retrying them only delays a clear error.
_PERMANENT = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)


def _transient_types() -> tuple[type[BaseException], ...]:
    types: tuple[type[BaseException], ...] = (OSError, TimeoutError)
    try:  # botocore's connection errors are not OSErrors; it is only installed with s3fs
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError

        types += (BotoConnectionError, HTTPClientError)
    except ImportError:
        pass
    return types


_TRANSIENT = _transient_types()


class TransientStorageError(OSError):
    """Storage stayed unreachable or kept failing through every retry; re-running later may well succeed."""


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying (connection drops, timeouts, server errors), False for missing/denied."""
    return isinstance(exc, _TRANSIENT) and not isinstance(exc, _PERMANENT)


def _retries() -> int:
    raw = os.environ.get("PLADA_STORAGE_RETRIES", "3")
    try:
        return max(0, int(raw))
    except ValueError:
        raise ValueError(f"PLADA_STORAGE_RETRIES must be a whole number of retries, got {raw!r}") from None


def retrying(what: str, url: str, call: Callable[[], T], base_delay: float = 0.5) -> T:
    """``call()``, retried on transient errors after 0.5, 1, 2 … s (±25 % jitter, so workers do not retry in step).

    A transient error that outlasts the retries is raised as ``TransientStorageError`` (an ``OSError``, also for
    botocore's own connection errors), so a caller's retry policy can tell a flaky store from bad data.
    """
    retries = _retries()
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == retries:
                raise TransientStorageError(
                    f"{what} {url} failed {attempt + 1} time(s), last with {type(exc).__name__}: {exc}. "
                    "Check the endpoint and the network, or raise PLADA_STORAGE_RETRIES."
                ) from exc
            delay = base_delay * 2**attempt * random.uniform(0.75, 1.25)
            log.warning(
                "%s %s: %s: %s; retry %d of %d in %.1f s",
                what,
                url,
                type(exc).__name__,
                exc,
                attempt + 1,
                retries,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")
