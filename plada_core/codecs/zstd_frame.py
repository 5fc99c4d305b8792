"""One Zstd frame from untrusted bytes, decompressed in small pieces under a cap: the bomb guard that the
"paper-zstd19" body and the payload's class-names section share.

The frame must fill the input exactly (no trailing bytes, no second frame) and may not ask for a window
above 16 MiB. Input is fed 64 bytes at a time; 64 compressed bytes expand to at most 16 RLE blocks (2 MiB),
so a bomb is rejected after at most that much output beyond the cap.
"""

from __future__ import annotations

import zstandard

__all__ = ["bounded_decompress"]

_FEED_BYTES = 64  # compressed bytes per step: bounds the overshoot past the cap (module docstring)
_MAX_WINDOW = 1 << 24  # level 19 uses at most 8 MiB; refuse frames that ask for more decoder memory


def bounded_decompress(data: bytes, limit: int, *, what: str, allowance: str, error: type[Exception]) -> bytes:
    """Decompress exactly one zstd frame filling ``data``, refusing output beyond ``limit`` bytes.

    Failures raise ``error`` with a message about ``what`` (say "body"); ``allowance`` says what sets the cap
    (say "k, N and C"), for the bomb message.
    """
    decoder = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW).decompressobj()
    view, pieces, size = memoryview(data), [], 0
    for start in range(0, len(view), _FEED_BYTES):
        try:
            piece = decoder.decompress(view[start : start + _FEED_BYTES])
        except zstandard.ZstdError as err:
            raise error(f"{what} is not valid zstd data ({err}); the payload is corrupt, re-send it") from err
        size += len(piece)
        if size > limit:
            raise error(
                f"{what} decompresses to more than {limit} bytes, the most {allowance} allow: "
                "refusing a decompression bomb; do not trust this payload's source"
            )
        pieces.append(piece)
        if decoder.eof:
            if decoder.unused_data or start + _FEED_BYTES < len(view):
                raise error(f"trailing bytes after the zstd frame inside the {what}; the payload is corrupt")
            return b"".join(pieces)
    raise error(f"{what} ends inside its zstd frame; the payload is truncated, re-send it")
