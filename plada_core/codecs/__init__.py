"""Payload body codecs beyond the paper's, registered in ``plada_core.payload.CODECS``.

A codec module here exposes ``encode_body`` and ``decode_body`` with the signatures ``payload.Codec``
documents. It raises :class:`CorruptBody` for bytes it cannot decode; ``payload`` turns that into a
``PayloadError`` carrying the same message. Modules here never import ``payload`` (it imports them).
"""

from __future__ import annotations

__all__ = ["CorruptBody"]


class CorruptBody(ValueError):
    """A body that no encoder wrote: the message names what is wrong with it."""
