"""The bytes that travel: a selection of reference-pool indices plus one hard label each.

A payload tells a client "train on these images of the pool you already hold, with these labels". It is
decoded from untrusted bytes, so every way the bytes can be wrong (truncated, flipped, forged, built for
another pool, a decompression bomb) ends in a :class:`PayloadError` whose message says what is wrong and
what to do, never in an ``IndexError`` or a ``ZstdError`` and never in unbounded memory.

Container format (all integers little endian; a 72-byte header, then the body)::

    offset size  field
     0      6    magic            b"PLADA\\x00"
     6      1    format version   u8, currently 1
     7      1    codec id         u8, see CODECS (1 = "paper-zstd19", 2 = "context-rc", 3 = "context-rc2",
                                  4 = "layout-rc")
     8     32    fingerprint      raw sha256 of the reference pool (hex in reference.json)
    40      8    N                u64, pool size; indices are < N (and N < 2**63, so they fit int64)
    48      8    k                u64, number of selected images, k <= N
    56      4    C                u32, number of classes, 1 <= C <= 1_000_000
    60      4    body length      u32, bytes that follow the header; nothing may follow the body
    64      8    checksum         blake2b(digest_size=8) over bytes [0, 64) + body
    72      -    body             codec-specific

The checksum detects accidents (bit flips, truncation). It is not a signature: anyone can forge a payload
with a valid checksum, which is why the body decoder validates everything itself.

Codec "paper-zstd19" (id 1), the paper's delta/RLE + Zstd-19 baseline. Two streams of LEB128 varints
(7 bits per byte, low group first, high bit = "more bytes follow", minimal length, at most 10 bytes):

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
pieces, so a bomb is rejected after at most 2 MiB of extra output.

Codec "context-rc" (id 2): an adaptive binary range coder under context models of gaps and labels, about
20 % smaller than "paper-zstd19" on clustered selections; format in ``plada_core.codecs.context_rc``.
Its decoder's work is bounded by the body length, not by the header's k.

Codec "context-rc2" (id 3): context-rc's gaps and bounds, with labels coded against a learned list of the
labels each class is confused with; about 22 % smaller than "paper-zstd19" on the simulator. Format in
``plada_core.codecs.context_rc2``.

Codec "layout-rc" (id 4): positions coded block by block against the pool's *layout* (its contiguous class
blocks, which the client holds with the pool), labels with context-rc2's model told where blocks start; about
25 % smaller than "paper-zstd19" on the simulator. Encoding and decoding need ``layout=`` (block sizes, see
``plada_core.io.pool.read_layout``); the body starts with the layout's digest, so a client with another layout
gets a PayloadError, not wrong labels. Format in ``plada_core.codecs.layout_rc``.
"""

from __future__ import annotations

import hashlib
import operator
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import zstandard

from plada_core.codecs import CorruptBody, context_rc, context_rc2, layout_rc

__all__ = [
    "AUTO",
    "CODECS",
    "HEADER_SIZE",
    "Codec",
    "Payload",
    "PayloadError",
    "decode_payload",
    "encode_payload",
    "get_codec",
    "needs_layout",
    "read_header",
    "uses_layout",
]

AUTO = "auto"  # encode_payload's codec name for "every codec that can run, keep the smallest payload"
MAGIC = b"PLADA\x00"
FORMAT_VERSION = 1
MAX_CLASSES = 1_000_000
MAX_REFERENCE = 2**63 - 1  # indices are returned as int64
_FIELDS = struct.Struct("<6sBB32sQQII")  # everything the checksum covers in the header
_CHECKSUM_SIZE = 8
HEADER_SIZE = _FIELDS.size + _CHECKSUM_SIZE
_U32_MAX = 2**32 - 1


class PayloadError(ValueError):
    """The bytes are not a payload this code can decode; the message names the problem and the fix."""


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on arrays is ambiguous; use np.array_equal
class Payload:
    """A decoded payload: ``labels[i]`` is the class of pool image ``indices[i]``.

    ``indices`` (int64) strictly increase, ``labels`` are int32; both arrays are read-only.
    """

    indices: np.ndarray
    labels: np.ndarray
    n_reference: int
    n_classes: int
    fingerprint: str
    codec: str

    @property
    def k(self) -> int:
        """Number of selected images."""
        return int(self.indices.shape[0])


@dataclass(frozen=True)
class Codec:
    """How a body is written and read. Register new codecs in ``CODECS`` under a unique ``codec_id``.

    ``encode_body(indices, labels, *, n_reference, n_classes) -> bytes`` receives validated, sorted arrays.
    ``decode_body(body, *, k, n_reference, n_classes) -> (indices, labels)`` receives untrusted bytes and a
    checked header; it must keep memory bounded by what (k, N, C) allow. It may raise anything: the caller
    turns every failure into a PayloadError and re-validates the arrays it returns. A codec with
    ``needs_layout`` also receives ``layout=`` (the pool's block sizes) on both sides.
    """

    codec_id: int
    encode_body: Callable[..., bytes]
    decode_body: Callable[..., tuple[np.ndarray, np.ndarray]]
    needs_layout: bool = False


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
        raise PayloadError(f"{stream} ends inside a varint; the payload is corrupt, re-send it")
    starts = np.concatenate(([0], ends[:-1] + 1))
    sizes = ends - starts + 1
    last = buf[ends]
    if sizes.max() > 10 or np.any((sizes == 10) & (last > 1)):
        raise PayloadError(f"{stream} holds a varint wider than 64 bits; the payload is corrupt, re-send it")
    if np.any((sizes > 1) & (last == 0)):
        raise PayloadError(f"{stream} holds a non-minimal varint; the payload was not written by PLADA")
    shifts = (np.arange(buf.size) - np.repeat(starts, sizes)).astype(np.uint64) * np.uint64(7)
    return np.add.reduceat((buf & 0x7F).astype(np.uint64) << shifts, starts)


def _decode_one_varint(buf: bytes, stream: str) -> tuple[int, int]:
    """The first varint of ``buf`` and its size in bytes (for the short length prefix)."""
    value = 0
    for position, byte in enumerate(buf[:10]):
        value |= (byte & 0x7F) << (7 * position)
        if byte < 0x80:
            return value, position + 1
    raise PayloadError(f"{stream} is truncated or corrupt; re-send the payload")


def _check_run_total(counts: np.ndarray, total: int, what: str) -> None:
    """Run lengths must sum to exactly ``total``, checked before ``np.repeat`` allocates from them."""
    if counts.size and counts.max() > total:
        raise PayloadError(f"{what} has a run of {int(counts.max())}, more than k={total}; the payload is corrupt")
    # float sum first: an exact uint64 sum of forged counts could wrap around to look right
    if counts.sum(dtype=np.float64) > total + 0.5 or int(counts.sum(dtype=np.uint64)) != total:
        raise PayloadError(f"{what} describes {int(counts.sum(dtype=np.float64))} items but k={total}; corrupt")


# ---------------------------------------------------------------- codec "paper-zstd19"


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


def _zstd19_encode(indices: np.ndarray, labels: np.ndarray, *, n_reference: int, n_classes: int) -> bytes:
    stream1 = _encode_varints(_index_tokens(indices))
    raw = _encode_varints(np.array([len(stream1)], dtype=np.uint64)) + stream1 + _encode_varints(_label_pairs(labels))
    # no zstd checksum or dictionary: the container checksum covers the body, and bytes are what we pay for
    return zstandard.ZstdCompressor(level=19, write_checksum=False).compress(raw)


def _max_raw_size(k: int, n_reference: int, n_classes: int) -> int:
    """Largest raw body any valid (N, k, C) can give: the decompression cap.

    Per index at most one token of ``2*delta + 1 < 2N + 1``; per label at most one (label, run) pair.
    """
    per_item = _varint_size(2 * n_reference + 1) + _varint_size(n_classes) + _varint_size(k)
    return 10 + k * per_item


_FEED_BYTES = 64  # compressed bytes per step; 64 bytes expand to at most 16 RLE blocks (2 MiB): the overshoot
_MAX_WINDOW = 1 << 24  # level 19 uses at most 8 MiB; refuse frames that ask for more decoder memory


def _bounded_decompress(body: bytes, limit: int) -> bytes:
    """Decompress exactly one zstd frame filling ``body``, refusing output beyond ``limit`` bytes."""
    decoder = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW).decompressobj()
    view, pieces, size = memoryview(body), [], 0
    for start in range(0, len(view), _FEED_BYTES):
        try:
            piece = decoder.decompress(view[start : start + _FEED_BYTES])
        except zstandard.ZstdError as err:
            raise PayloadError(f"body is not valid zstd data ({err}); the payload is corrupt, re-send it") from err
        size += len(piece)
        if size > limit:
            raise PayloadError(
                f"body decompresses to more than {limit} bytes, the most k, N and C allow: "
                "refusing a decompression bomb; do not trust this payload's source"
            )
        pieces.append(piece)
        if decoder.eof:
            if decoder.unused_data or start + _FEED_BYTES < len(view):
                raise PayloadError("trailing bytes after the zstd frame inside the body; the payload is corrupt")
            return b"".join(pieces)
    raise PayloadError("body ends inside its zstd frame; the payload is truncated, re-send it")


def _decode_index_tokens(tokens: np.ndarray, k: int, n_reference: int) -> np.ndarray:
    runs = (tokens & np.uint64(1)).astype(bool)
    values = tokens >> np.uint64(1)
    if np.any(runs & (values == 0)):
        raise PayloadError("index stream holds an empty run; the payload was not written by PLADA")
    counts = np.where(runs, values, np.uint64(1))
    _check_run_total(counts, k, "index stream")
    indices = np.cumsum(np.repeat(np.where(runs, np.uint64(1), values), counts.astype(np.int64)), dtype=np.uint64)
    # checked in uint64 on purpose: a forged delta can wrap the sum, and a wrap shows up as a decrease
    bad = np.flatnonzero(indices[1:] <= indices[:-1])
    if bad.size:
        raise PayloadError(f"indices are not strictly increasing at position {int(bad[0]) + 1}; payload corrupt")
    if k and indices[-1] >= n_reference:
        raise PayloadError(f"index {int(indices[-1])} is >= N={n_reference}; payload corrupt or for another pool")
    return indices.astype(np.int64)


def _decode_label_pairs(pairs: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    if pairs.size % 2:
        raise PayloadError("label stream has an odd number of varints (a label without a run length); corrupt")
    values, runs = pairs[0::2], pairs[1::2]
    if np.any(values >= n_classes):
        raise PayloadError(f"label {int(values.max())} is outside [0, {n_classes}); the payload is corrupt")
    if np.any(runs == 0):
        raise PayloadError("label stream holds a run of length 0; the payload was not written by PLADA")
    _check_run_total(runs, k, "label stream")
    return np.repeat(values.astype(np.int32), runs.astype(np.int64))


def _zstd19_decode(body: bytes, *, k: int, n_reference: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    raw = _bounded_decompress(body, _max_raw_size(k, n_reference, n_classes))
    length, offset = _decode_one_varint(raw, "index stream length")
    if offset + length > len(raw):
        raise PayloadError(f"index stream claims {length} bytes but only {len(raw) - offset} remain; corrupt")
    buf = np.frombuffer(raw, dtype=np.uint8)
    indices = _decode_index_tokens(_decode_varints(buf[offset : offset + length], "index stream"), k, n_reference)
    labels = _decode_label_pairs(_decode_varints(buf[offset + length :], "label stream"), k, n_classes)
    return indices, labels


CODECS: dict[str, Codec] = {
    "paper-zstd19": Codec(codec_id=1, encode_body=_zstd19_encode, decode_body=_zstd19_decode),
    "context-rc": Codec(codec_id=2, encode_body=context_rc.encode_body, decode_body=context_rc.decode_body),
    "context-rc2": Codec(codec_id=3, encode_body=context_rc2.encode_body, decode_body=context_rc2.decode_body),
    "layout-rc": Codec(codec_id=4, encode_body=layout_rc.encode_body, decode_body=layout_rc.decode_body,
                       needs_layout=True),
}


def get_codec(name: str) -> Codec:
    """The registered codec called ``name``."""
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; valid codecs: {sorted(CODECS)}")
    return CODECS[name]


def uses_layout(codec: str) -> bool:
    """Whether encoding with ``codec`` (a registered name or ``AUTO``) can use the pool's layout."""
    if codec == AUTO:
        return any(entry.needs_layout for entry in CODECS.values())
    return codec in CODECS and CODECS[codec].needs_layout


def _codec_name(codec_id: int) -> str:
    for name, codec in CODECS.items():
        if codec.codec_id == codec_id:
            return name
    known = {codec.codec_id: name for name, codec in CODECS.items()}
    raise PayloadError(
        f"unknown codec id {codec_id} (this build knows {known}); upgrade plada to a version that has it"
    )


# ---------------------------------------------------------------- encoding


def _fingerprint_bytes(fingerprint: str) -> bytes:
    if not isinstance(fingerprint, str) or len(fingerprint) != 64:
        raise ValueError(f"fingerprint must be 64 hex characters (sha256 of the pool), got {fingerprint!r}")
    try:
        return bytes.fromhex(fingerprint)
    except ValueError:
        raise ValueError(f"fingerprint must be 64 hex characters (sha256 of the pool), got {fingerprint!r}") from None


def _as_int_vector(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integers, got dtype {array.dtype}")
    return array


def _check_range(values: np.ndarray, name: str, upper: int, upper_name: str) -> None:
    """Every value in [0, upper); the error names the first offender."""
    outside = values >= upper
    if values.dtype.kind == "i":
        outside |= values < 0
    bad = np.flatnonzero(outside)
    if bad.size:
        first = int(bad[0])
        raise ValueError(
            f"{name}[{first}] = {int(values[first])} is outside [0, {upper_name}={upper}) "
            f"({bad.size} values are)"
        )


def _as_count(value, name: str, low: int, high: int) -> int:
    try:
        count = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if not low <= count <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {count}")
    return count


def encode_payload(
    indices,
    labels,
    *,
    n_reference: int,
    n_classes: int,
    fingerprint: str,
    codec: str = "paper-zstd19",
    layout=None,
) -> bytes:
    """Payload bytes for ``labels[i]`` on pool image ``indices[i]``; the pairs may come in any order.

    ``layout`` (the pool's block sizes, ``plada_core.io.pool.read_layout``) is required by codecs that code
    against it ("layout-rc") and ignored by the others. ``codec=AUTO`` encodes with every codec that can run
    (those needing a layout only when one is given) and returns the smallest payload; ties go to the codec
    registered first, so the choice is deterministic.
    """
    if codec == AUTO:
        names = [name for name, entry in CODECS.items() if layout is not None or not entry.needs_layout]
        payloads = [encode_payload(indices, labels, n_reference=n_reference, n_classes=n_classes,
                                   fingerprint=fingerprint, codec=name, layout=layout) for name in names]
        return min(payloads, key=len)
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; valid codecs: {sorted(CODECS)} or {AUTO!r}")
    chosen = CODECS[codec]
    fingerprint_raw = _fingerprint_bytes(fingerprint)
    n_reference = _as_count(n_reference, "n_reference", 1, MAX_REFERENCE)
    n_classes = _as_count(n_classes, "n_classes", 1, MAX_CLASSES)
    indices, labels = _as_int_vector(indices, "indices"), _as_int_vector(labels, "labels")
    if indices.shape != labels.shape:
        raise ValueError(f"got {indices.size} indices but {labels.size} labels; pass one label per index")
    _check_range(indices, "indices", n_reference, "n_reference")
    _check_range(labels, "labels", n_classes, "n_classes")
    order = np.argsort(indices, kind="stable")
    indices, labels = indices[order].astype(np.int64), labels[order].astype(np.int32)
    duplicates = np.flatnonzero(np.diff(indices) == 0)
    if duplicates.size:
        raise ValueError(f"index {int(indices[duplicates[0]])} is selected more than once; select each image once")
    extra = {}
    if chosen.needs_layout:
        if layout is None:
            raise ValueError(f"codec {codec!r} codes positions against the pool's block layout: pass layout= "
                             "(the block sizes, plada_core.io.pool.read_layout), or choose another codec")
        extra["layout"] = layout_rc.check_layout(layout, n_reference)
    body = chosen.encode_body(indices, labels, n_reference=n_reference, n_classes=n_classes, **extra)
    if len(body) > _U32_MAX:
        raise ValueError(f"body of {len(body)} bytes does not fit the u32 length field; select fewer images")
    fields = _FIELDS.pack(
        MAGIC, FORMAT_VERSION, chosen.codec_id, fingerprint_raw, n_reference, indices.size, n_classes,
        len(body),
    )
    return fields + _checksum(fields, body) + body


def _checksum(fields: bytes, body: bytes) -> bytes:
    digest = hashlib.blake2b(fields, digest_size=_CHECKSUM_SIZE)
    digest.update(body)
    return digest.digest()


# ---------------------------------------------------------------- decoding


def _check_framing(data: bytes) -> None:
    """Magic and length: the checks that say "this is not (all of) a PLADA payload"."""
    if data[: len(MAGIC)] != MAGIC[: min(len(data), len(MAGIC))]:
        raise PayloadError(
            f"not a PLADA payload: starts with {bytes(data[:len(MAGIC)])!r}, expected {MAGIC!r}; "
            "check that you passed the payload file, not a manifest or a compressed copy"
        )
    if len(data) < HEADER_SIZE:
        raise PayloadError(
            f"payload truncated: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header; re-send it"
        )


def _parse_fields(data: bytes) -> dict:
    magic, version, codec_id, fingerprint, n, k, c, body_length = _FIELDS.unpack_from(data)
    if version != FORMAT_VERSION:
        raise PayloadError(
            f"unknown payload format version {version} (this build reads version {FORMAT_VERSION}); "
            "upgrade plada to read it, or re-encode the payload with this version"
        )
    end = HEADER_SIZE + body_length
    if len(data) < end:
        raise PayloadError(
            f"payload truncated: header announces a {body_length}-byte body but only {len(data) - HEADER_SIZE} "
            "bytes follow the header; re-send the complete payload"
        )
    if len(data) > end:
        raise PayloadError(
            f"{len(data) - end} bytes of trailing garbage after the body; send the payload bytes exactly, "
            "without padding or concatenation"
        )
    stored = bytes(data[_FIELDS.size : HEADER_SIZE])
    if stored != _checksum(bytes(data[: _FIELDS.size]), bytes(data[HEADER_SIZE:])):
        raise PayloadError("checksum mismatch: the payload was corrupted in transit or storage; re-send it")
    return {
        "format_version": version,
        "codec": _codec_name(codec_id),
        "codec_id": codec_id,
        "fingerprint": fingerprint.hex(),
        "n_reference": n,
        "k": k,
        "n_classes": c,
        "body_length": body_length,
    }


def _check_counts(header: dict) -> None:
    n, k, c = header["n_reference"], header["k"], header["n_classes"]
    if not 1 <= n <= MAX_REFERENCE:
        raise PayloadError(f"header says N={n}, outside [1, 2**63 - 1]; the payload is corrupt or forged")
    if k > n:
        raise PayloadError(f"header says k={k} selected images but the pool has only N={n}; corrupt or forged")
    if not 1 <= c <= MAX_CLASSES:
        raise PayloadError(f"header says C={c} classes, outside [1, {MAX_CLASSES}]; corrupt or forged")


def read_header(data: bytes) -> dict:
    """The validated header of a complete payload, without decoding the body.

    Keys: format_version, codec, codec_id, fingerprint (hex), n_reference, k, n_classes, body_length.
    Checks magic, version, codec, length and checksum, so it needs the whole payload, not just 72 bytes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PayloadError(f"payload must be bytes, got {type(data).__name__}; read the file in binary mode")
    data = bytes(data)
    _check_framing(data)
    header = _parse_fields(data)
    _check_counts(header)
    return header


def _abbrev(fingerprint: str) -> str:
    return f"{fingerprint[:12]}…"


def _check_fingerprint(actual: str, expected: str) -> None:
    expected = _fingerprint_bytes(expected).hex()  # a malformed argument is the caller's bug: ValueError
    if actual != expected:
        raise PayloadError(
            "payload was made for a different reference pool: payload fingerprint "
            f"{_abbrev(actual)}, local pool fingerprint {_abbrev(expected)}; decode it on a client holding the "
            "pool it was built for, or rebuild the payload for this pool"
        )


def _validate_decoded(indices: np.ndarray, labels: np.ndarray, header: dict) -> tuple[np.ndarray, np.ndarray]:
    """The contract every codec's output must meet, checked again so a buggy codec cannot slip through."""
    k, n, c = header["k"], header["n_reference"], header["n_classes"]
    indices, labels = np.asarray(indices, dtype=np.int64), np.asarray(labels, dtype=np.int32)
    if indices.shape != (k,) or labels.shape != (k,):
        raise PayloadError(f"body holds {indices.size} indices and {labels.size} labels but k={k}; corrupt")
    if k and (indices[0] < 0 or indices[-1] >= n or np.any(np.diff(indices) <= 0)):
        raise PayloadError(f"body indices are not strictly increasing within [0, N={n}); corrupt")
    if k and (labels.min() < 0 or labels.max() >= c):
        raise PayloadError(f"body labels are outside [0, C={c}); corrupt")
    indices.flags.writeable = False
    labels.flags.writeable = False
    return indices, labels


def _local_layout(header: dict, layout) -> np.ndarray:
    if layout is None:
        raise PayloadError(
            f"the payload uses codec {header['codec']!r}, which codes positions against the pool's block layout; "
            "pass the local pool's layout (plada_core.io.pool.read_layout) to decode it"
        )
    try:
        return layout_rc.check_layout(layout, header["n_reference"])
    except ValueError as err:
        raise PayloadError(f"the local layout does not fit this payload: {err}") from None


def needs_layout(data: bytes) -> bool:
    """Whether decoding ``data`` needs the pool's layout (its codec codes against it). Bytes whose header does not
    parse say False: :func:`decode_payload` then raises the PayloadError that names the problem."""
    try:
        return CODECS[read_header(data)["codec"]].needs_layout
    except PayloadError:
        return False


def decode_payload(
    data: bytes, *, expected_fingerprint: str | None = None, expected_n_reference: int | None = None, layout=None
) -> Payload:
    """Decode and fully validate untrusted payload bytes.

    Pass the local pool's ``expected_fingerprint``: a payload built for another pool would silently label
    the wrong images. ``expected_n_reference`` (the local N) also caps memory: a forged header can claim any
    N and k <= N, and decoding allocates O(k). ``layout`` (the local pool's block sizes) is needed only for
    payloads whose codec codes against it (``read_header(data)["codec"]`` tells; see ``needs_layout``).
    """
    header = read_header(data)
    if expected_fingerprint is not None:
        _check_fingerprint(header["fingerprint"], expected_fingerprint)
    if expected_n_reference is not None and header["n_reference"] != expected_n_reference:
        raise PayloadError(
            f"payload was made for a pool of N={header['n_reference']} images but the local pool has "
            f"N={expected_n_reference}; decode it against the pool it was built for"
        )
    body = bytes(data)[HEADER_SIZE:]
    codec = CODECS[header["codec"]]
    extra = {"layout": _local_layout(header, layout)} if codec.needs_layout else {}
    try:
        indices, labels = codec.decode_body(
            body, k=header["k"], n_reference=header["n_reference"], n_classes=header["n_classes"], **extra
        )
    except PayloadError:
        raise
    except layout_rc.LayoutMismatch as err:
        raise PayloadError(f"codec {header['codec']!r}: {err}; decode it on a client holding the pool (and "
                           "layout) it was built for, or rebuild the payload for this pool") from err
    except CorruptBody as err:
        raise PayloadError(f"codec {header['codec']!r}: {err}; re-send the payload") from err
    except Exception as err:  # untrusted bytes: any codec failure is the payload's fault, not the caller's
        raise PayloadError(f"codec {header['codec']!r} could not decode the body: {err!r}; corrupt") from err
    indices, labels = _validate_decoded(indices, labels, header)
    return Payload(indices, labels, header["n_reference"], header["n_classes"], header["fingerprint"], header["codec"])
