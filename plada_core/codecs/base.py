"""What every payload body codec is: a pair of functions registered under a wire id, and the error it raises.

Kept apart from the registry (``plada_core.codecs``) so that the codec modules, which the registry imports,
can import these without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Codec", "CorruptBody"]


class CorruptBody(ValueError):
    """A body that no encoder wrote: the message names what is wrong with it.

    The container reports it as the ``PayloadError`` that :meth:`report` words. A subclass changes ``fix``
    where re-sending is not the remedy, or ``report`` where its message already says everything.
    """

    fix = "re-send the payload"

    def report(self, codec: str) -> str:
        """The message a caller sees for this failure in a body of ``codec``."""
        return f"codec {codec!r}: {self}; {self.fix}"


@dataclass(frozen=True)
class Codec:
    """How a body is written and read. Register new codecs in ``CODECS`` under a unique ``codec_id``.

    ``encode_body(indices, labels, *, n_reference, n_classes) -> bytes`` receives validated, sorted arrays.
    ``decode_body(body, *, k, n_reference, n_classes) -> (indices, labels)`` receives untrusted bytes and a
    checked header; it must keep memory bounded by what (k, N, C) allow. It may raise anything: the caller
    turns every failure into a PayloadError (a :class:`CorruptBody` with its own wording) and re-validates the
    arrays it returns.

    A codec that codes against the pool's *layout* (its block sizes, ``plada_core.io.pool.read_layout``)
    gives ``check_layout(layout, n_reference) -> sizes``, which raises ValueError naming what does not fit;
    both body functions then also receive ``layout=`` (the checked sizes).
    """

    codec_id: int
    encode_body: Callable[..., bytes]
    decode_body: Callable[..., tuple[np.ndarray, np.ndarray]]
    check_layout: Callable[[Any, int], np.ndarray] | None = None

    @property
    def needs_layout(self) -> bool:
        """Whether encoding and decoding need the pool's layout."""
        return self.check_layout is not None
