"""The bytes that travel: a selection of reference-pool indices plus one hard label each.

A payload tells a client "train on these images of the pool you already hold, with these labels". It is
decoded from untrusted bytes, so every way the bytes can be wrong (truncated, flipped, forged, built for
another pool, a decompression bomb) ends in a :class:`PayloadError` whose message says what is wrong and
what to do, never in an ``IndexError`` or a ``ZstdError`` and never in unbounded memory.

Container format (all integers little endian; a 72-byte header, in versions 2 and 3 the class-names section, then
the body; ``docs/payload-format.md`` is the full reference)::

    offset size  field
     0      6    magic            b"PLADA\\x00"
     6      1    format version   u8: 1 (no names), 2 (with the class-names section) or 3 (names + recipe)
     7      1    codec id         u8, see plada_core.codecs.CODECS (1 = "paper-zstd19", 2 = "context-rc",
                                  3 = "context-rc2", 4 = "layout-rc")
     8     32    fingerprint      raw sha256 of the reference pool (hex in reference.json)
    40      8    N                u64, pool size; indices are < N (and N < 2**63, so they fit int64)
    48      8    k                u64, number of selected images, k <= N
    56      4    C                u32, number of classes, 1 <= C <= 1_000_000
    60      4    body length      u32, bytes of the body, which ends the payload
    64      8    checksum         blake2b(digest_size=8) over every other byte: [0, 64) + [72, end)
    72      -    versions 2, 3:   the class-names section, ``plada_core.codecs.names_section``: encoding u8,
                                  length u32, stored bytes (task, version, in version 3 the student recipe,
                                  and the C class names)
     -      -    body             codec-specific, body length bytes

Version 3 is written when a ``student_recipe`` is given (with class names), version 2 when only ``class_names``
are, version 1 (byte for byte what older builds write and read) when neither is, so callers that pass no names or
no recipe keep their bytes; every version decodes.

The checksum detects accidents (bit flips, truncation). It is not a signature: anyone can forge a payload
with a valid checksum, which is why the section and body decoders validate everything themselves.

The body is the codec's: ``plada_core.codecs`` lists the registered codecs, and each codec's module documents
its format. This module only frames it, checks the header, and re-validates whatever a codec decodes.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

# re-exported so that callers importing them from here keep working; their home is plada_core.codecs
from plada_core.codecs import AUTO, CODECS, PAPER_CODEC, Codec, CorruptBody, get_codec, names_section, uses_layout
from plada_core.payload_header import (
    FIELDS,
    HEADER_SIZE,
    MAGIC,
    MAX_CLASSES,
    MAX_REFERENCE,
    U32_MAX,
    PayloadError,
    checksum,
    read_header,
)

__all__ = ["AUTO", "CODECS", "HEADER_SIZE", "PAPER_CODEC", "Codec", "Payload", "PayloadError", "decode_payload",
           "encode_payload", "get_codec", "needs_layout", "read_header", "uses_layout"]

@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on arrays is ambiguous; use np.array_equal
class Payload:
    """A decoded payload: ``labels[i]`` is the class of pool image ``indices[i]``.

    ``indices`` (int64) strictly increase, ``labels`` are int32; both arrays are read-only. A format-2 payload
    names its classes (label ``i`` is ``class_names[i]``) and, when the publisher gave them, its task and release
    version; a format-1 payload has None in all three. A format-3 payload also carries ``student_recipe``: the
    student the publisher recommends (``{"model": ..., "preprocess": {...}, "train": {"epochs": ..., ...}}``, the
    recipe its predicted accuracy was measured with, and once measured that accuracy under ``predicted``:
    ``plada_core.recipe``; payloads published before training settings travelled have no ``train``).
    """

    indices: np.ndarray
    labels: np.ndarray
    n_reference: int
    n_classes: int
    fingerprint: str
    codec: str
    class_names: tuple[str, ...] | None = None
    task: str | None = None
    version: str | None = None
    format_version: int = 1
    student_recipe: dict | None = None

    @property
    def k(self) -> int:
        """Number of selected images."""
        return int(self.indices.shape[0])


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
    codec: str = PAPER_CODEC,
    layout=None,
    class_names=None,
    task: str | None = None,
    version: str | None = None,
    student_recipe: dict | None = None,
) -> bytes:
    """Payload bytes for ``labels[i]`` on pool image ``indices[i]``; the pairs may come in any order.

    With ``class_names`` (one per class, label ``i`` named ``class_names[i]``) the payload is format version 2
    and also carries the ``task`` and release ``version`` when given (release names, as in
    ``plada_core.io.releases``); without, it is format version 1, as older builds write it. Names that cannot
    travel (empty, over 256 bytes of UTF-8, with control characters) raise ValueError. A ``student_recipe``
    (``{"model": name, "preprocess": {...}}``, limits in ``plada_core.codecs.names_section``) makes it format 3.

    ``layout`` (the pool's block sizes, ``plada_core.io.pool.read_layout``) is required by codecs that code
    against it ("layout-rc") and ignored by the others. ``codec=AUTO`` encodes with every codec that can run
    (those needing a layout only when one is given) and returns the smallest payload; ties go to the codec
    registered first, so the choice is deterministic.
    """
    if codec == AUTO:
        names = [name for name, entry in CODECS.items() if layout is not None or not entry.needs_layout]
        payloads = [encode_payload(indices, labels, n_reference=n_reference, n_classes=n_classes,
                                   fingerprint=fingerprint, codec=name, layout=layout, class_names=class_names,
                                   task=task, version=version, student_recipe=student_recipe) for name in names]
        return min(payloads, key=len)
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; valid codecs: {sorted(CODECS)} or {AUTO!r}")
    chosen = CODECS[codec]
    fingerprint_raw = _fingerprint_bytes(fingerprint)
    n_reference = _as_count(n_reference, "n_reference", 1, MAX_REFERENCE)
    n_classes = _as_count(n_classes, "n_classes", 1, MAX_CLASSES)
    section = _names_section(class_names, n_classes, task, version, student_recipe)
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
        extra["layout"] = chosen.check_layout(layout, n_reference)
    body = chosen.encode_body(indices, labels, n_reference=n_reference, n_classes=n_classes, **extra)
    if len(body) > U32_MAX:
        raise ValueError(f"body of {len(body)} bytes does not fit the u32 length field; select fewer images")
    format_version = (3 if student_recipe is not None else 2) if section else 1
    fields = FIELDS.pack(
        MAGIC, format_version, chosen.codec_id, fingerprint_raw, n_reference, indices.size, n_classes, len(body)
    )
    return fields + checksum(fields, section, body) + section + body


def _names_section(class_names, n_classes: int, task, version, recipe) -> bytes:
    """The version-2/3 section, or b"" (version 1) without class names."""
    if class_names is None:
        if task is not None or version is not None or recipe is not None:
            raise ValueError("task, version and student recipe travel with the class names (payload format 2/3): "
                             "pass class_names too, or leave them out")  # fmt: skip
        return b""
    return names_section.encode_section(class_names, n_classes, task, version, recipe)


# ---------------------------------------------------------------- decoding


def _abbrev(fingerprint: str) -> str:
    return f"{fingerprint[:12]}…"


def _check_fingerprint(actual: str, expected: str) -> None:
    expected = _fingerprint_bytes(expected).hex()  # a malformed argument is the caller's bug: ValueError
    if actual != expected:
        raise PayloadError(
            "payload was made for a different reference pool: payload fingerprint "
            f"{_abbrev(actual)}, local pool fingerprint {_abbrev(expected)}; decode it on a client holding the "
            "pool it was built for, or rebuild the payload for this pool (`plada reference build` from the same "
            "sources' files, in the same order, gives the same pool; for imagefolder:, npz: and parquet: sources "
            "the folder or file must also have the same name, which image keys start with)"
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


def _local_layout(codec: Codec, header: dict, layout) -> np.ndarray:
    if layout is None:
        raise PayloadError(
            f"the payload uses codec {header['codec']!r}, which codes positions against the pool's block layout; "
            "pass the local pool's layout (plada_core.io.pool.read_layout) to decode it"
        )
    try:
        return codec.check_layout(layout, header["n_reference"])
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
    body = bytes(data)[len(data) - header["body_length"] :]  # nothing follows the body
    codec = CODECS[header["codec"]]
    extra = {"layout": _local_layout(codec, header, layout)} if codec.needs_layout else {}
    try:
        indices, labels = codec.decode_body(
            body, k=header["k"], n_reference=header["n_reference"], n_classes=header["n_classes"], **extra
        )
    except CorruptBody as err:
        raise PayloadError(err.report(header["codec"])) from err
    except Exception as err:  # untrusted bytes: any codec failure is the payload's fault, not the caller's
        raise PayloadError(f"codec {header['codec']!r} could not decode the body: {err!r}; corrupt") from err
    indices, labels = _validate_decoded(indices, labels, header)
    return Payload(indices, labels, header["n_reference"], header["n_classes"], header["fingerprint"], header["codec"],
                   header["class_names"], header["task"], header["version"], header["format_version"],
                   header["student_recipe"])
