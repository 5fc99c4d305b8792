"""Codec "paper-zstd19" (id 1): the paper's delta/RLE + Zstd-19 baseline.

Two streams of LEB128 varints (7 bits per byte, low group first, high bit = "more bytes follow", minimal
length, at most 10 bytes):

- stream 1, indices in increasing order as tagged deltas. The deltas are ``d_0 = idx_0`` (absolute) and
  ``d_i = idx_i - idx_(i-1)``. Each varint ``v`` is one token: ``v & 1 == 0`` means one delta ``v >> 1``;
  ``v & 1 == 1`` means a run of ``v >> 1`` (>= 1) deltas equal to 1, i.e. consecutive indices. The encoder
  turns every maximal run of delta-1 steps into one run token. Example: ``[5, 6, 7, 8, 20]`` has deltas
  ``5,1,1,1,12`` and is written as the tokens ``10, 7, 24``; ``[1, 2, 3]`` is the single run token ``7``
  (the running sum starts at 0). Tagging each token (rather than following a delta
  with an optional count) keeps every varint self-describing, so decoding is fully vectorised.
- stream 2, labels in index order, run-length coded as ``(label, run length >= 1)`` varint pairs.

body = zstd level 19 (one frame) of ``varint(len(stream 1)) + stream 1 + stream 2``. The decoder bounds the
decompressed size by the largest raw body any valid (N, k, C) could produce and streams the frame in small
pieces (``zstd_frame``), so a bomb is rejected after at most 2 MiB of extra output.
"""

from __future__ import annotations

import numpy as np
import zstandard

from plada_core.codecs.base import CorruptBody
from plada_core.codecs.zstd_frame import bounded_decompress

__all__ = ["decode_body", "encode_body"]


class _Rejected(CorruptBody):
    """This codec's messages name the problem and the fix themselves, so they reach the caller unchanged."""

    def report(self, codec: str) -> str:
        return str(self)


# ---------------------------------------------------------------- varints (vectorised LEB128)


def _varint_size(value: int) -> int:
    return max(1, -(-value.bit_length() // 7))


def _encode_varints(values: np.ndarray) -> bytes:
    """LEB128 of every uint64 in ``values``, concatenated, without a Python loop over the values."""
    values = np.asarray(values, dtype=np.uint64)
    if values.size == 0:
        return b""
    sizes = np.ones(values.shape, dtype=np.int64)
    for group in range(1, 10):
        sizes += (values >> np.uint64(7 * group)) > 0
    owner = np.repeat(np.arange(values.size), sizes)
    position = np.arange(owner.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    groups = (values[owner] >> (position.astype(np.uint64) * np.uint64(7))) & np.uint64(0x7F)
    more = (position < sizes[owner] - 1).astype(np.uint64) << np.uint64(7)
    return (groups | more).astype(np.uint8).tobytes()


def _decode_varints(buf: np.ndarray, stream: str) -> np.ndarray:
    """Inverse of :func:`_encode_varints` for a buffer that must hold whole, minimal, 64-bit varints only."""
    if buf.size == 0:
        return np.empty(0, dtype=np.uint64)
    ends = np.flatnonzero(buf < 0x80)
    if ends.size == 0 or ends[-1] != buf.size - 1:
        raise _Rejected(f"{stream} ends inside a varint; the payload is corrupt, re-send it")
    starts = np.concatenate(([0], ends[:-1] + 1))
    sizes = ends - starts + 1
    last = buf[ends]
    if sizes.max() > 10 or np.any((sizes == 10) & (last > 1)):
        raise _Rejected(f"{stream} holds a varint wider than 64 bits; the payload is corrupt, re-send it")
    if np.any((sizes > 1) & (last == 0)):
        raise _Rejected(f"{stream} holds a non-minimal varint; the payload was not written by PLADA")
    shifts = (np.arange(buf.size) - np.repeat(starts, sizes)).astype(np.uint64) * np.uint64(7)
    return np.add.reduceat((buf & 0x7F).astype(np.uint64) << shifts, starts)


def _decode_one_varint(buf: bytes, stream: str) -> tuple[int, int]:
    """The first varint of ``buf`` and its size in bytes (for the short length prefix)."""
    value = 0
    for position, byte in enumerate(buf[:10]):
        value |= (byte & 0x7F) << (7 * position)
        if byte < 0x80:
            return value, position + 1
    raise _Rejected(f"{stream} is truncated or corrupt; re-send the payload")


def _check_run_total(counts: np.ndarray, total: int, what: str) -> None:
    """Run lengths must sum to exactly ``total``, checked before ``np.repeat`` allocates from them."""
    if counts.size and counts.max() > total:
        raise _Rejected(f"{what} has a run of {int(counts.max())}, more than k={total}; the payload is corrupt")
    # float sum first: an exact uint64 sum of forged counts could wrap around to look right
    if counts.sum(dtype=np.float64) > total + 0.5 or int(counts.sum(dtype=np.uint64)) != total:
        raise _Rejected(f"{what} describes {int(counts.sum(dtype=np.float64))} items but k={total}; corrupt")


# ---------------------------------------------------------------- encoding


def _index_tokens(indices: np.ndarray) -> np.ndarray:
    """Tagged delta tokens of sorted indices (format in the module docstring)."""
    deltas = np.diff(indices, prepend=0).astype(np.uint64)
    ones = deltas == 1
    starts_token = ~ones | ~np.concatenate(([False], ones[:-1]))
    starts = np.flatnonzero(starts_token)
    lengths = np.diff(starts, append=indices.size).astype(np.uint64)
    return np.where(ones[starts], (lengths << np.uint64(1)) | np.uint64(1), deltas[starts] << np.uint64(1))


def _label_pairs(labels: np.ndarray) -> np.ndarray:
    """Interleaved (label, run length) pairs of the label sequence."""
    if labels.size == 0:
        return np.empty(0, dtype=np.uint64)
    starts = np.flatnonzero(np.diff(labels, prepend=labels[0] - 1))
    pairs = np.empty(2 * starts.size, dtype=np.uint64)
    pairs[0::2] = labels[starts]
    pairs[1::2] = np.diff(starts, append=labels.size)
    return pairs


def encode_body(indices: np.ndarray, labels: np.ndarray, *, n_reference: int, n_classes: int) -> bytes:
    """The body for sorted, validated ``indices`` and their ``labels``."""
    stream1 = _encode_varints(_index_tokens(indices))
    raw = _encode_varints(np.array([len(stream1)], dtype=np.uint64)) + stream1 + _encode_varints(_label_pairs(labels))
    # no zstd checksum or dictionary: the container checksum covers the body, and bytes are what we pay for
    return zstandard.ZstdCompressor(level=19, write_checksum=False).compress(raw)


# ---------------------------------------------------------------- decoding


def _max_raw_size(k: int, n_reference: int, n_classes: int) -> int:
    """Largest raw body any valid (N, k, C) can give: the decompression cap.

    Per index at most one token of ``2*delta + 1 < 2N + 1``; per label at most one (label, run) pair.
    """
    per_item = _varint_size(2 * n_reference + 1) + _varint_size(n_classes) + _varint_size(k)
    return 10 + k * per_item


def _decode_index_tokens(tokens: np.ndarray, k: int, n_reference: int) -> np.ndarray:
    runs = (tokens & np.uint64(1)).astype(bool)
    values = tokens >> np.uint64(1)
    if np.any(runs & (values == 0)):
        raise _Rejected("index stream holds an empty run; the payload was not written by PLADA")
    counts = np.where(runs, values, np.uint64(1))
    _check_run_total(counts, k, "index stream")
    indices = np.cumsum(np.repeat(np.where(runs, np.uint64(1), values), counts.astype(np.int64)), dtype=np.uint64)
    # checked in uint64 on purpose: a forged delta can wrap the sum, and a wrap shows up as a decrease
    bad = np.flatnonzero(indices[1:] <= indices[:-1])
    if bad.size:
        raise _Rejected(f"indices are not strictly increasing at position {int(bad[0]) + 1}; payload corrupt")
    if k and indices[-1] >= n_reference:
        raise _Rejected(f"index {int(indices[-1])} is >= N={n_reference}; payload corrupt or for another pool")
    return indices.astype(np.int64)


def _decode_label_pairs(pairs: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    if pairs.size % 2:
        raise _Rejected("label stream has an odd number of varints (a label without a run length); corrupt")
    values, runs = pairs[0::2], pairs[1::2]
    if np.any(values >= n_classes):
        raise _Rejected(f"label {int(values.max())} is outside [0, {n_classes}); the payload is corrupt")
    if np.any(runs == 0):
        raise _Rejected("label stream holds a run of length 0; the payload was not written by PLADA")
    _check_run_total(runs, k, "label stream")
    return np.repeat(values.astype(np.int32), runs.astype(np.int64))


def decode_body(body: bytes, *, k: int, n_reference: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and labels from an untrusted body; raises :class:`CorruptBody` naming the problem and the fix."""
    raw = bounded_decompress(body, _max_raw_size(k, n_reference, n_classes), what="body", allowance="k, N and C",
                             error=_Rejected)
    length, offset = _decode_one_varint(raw, "index stream length")
    if offset + length > len(raw):
        raise _Rejected(f"index stream claims {length} bytes but only {len(raw) - offset} remain; corrupt")
    buf = np.frombuffer(raw, dtype=np.uint8)
    indices = _decode_index_tokens(_decode_varints(buf[offset : offset + length], "index stream"), k, n_reference)
    labels = _decode_label_pairs(_decode_varints(buf[offset + length :], "label stream"), k, n_classes)
    return indices, labels
