"""The payload container's header: its fields, framing, checksum and the class-names section (versions 2, 3).

``read_header`` validates everything but the codec body (layout in ``plada_core.payload``'s docstring and
``docs/payload-format.md``); ``plada_core.payload`` encodes and decodes whole payloads on top of it.
"""

from __future__ import annotations

import hashlib
import struct

from plada_core.codecs import codec_names, names_section

__all__ = ["FORMAT_VERSION", "HEADER_SIZE", "MAGIC", "MAX_CLASSES", "MAX_REFERENCE", "PayloadError", "checksum",
           "FIELDS", "U32_MAX", "read_header"]

MAGIC = b"PLADA\x00"
FORMAT_VERSION = 3  # the newest written, with a student recipe; 2 is written without one, 1 without class names
_VERSIONS = (1, 2, 3)
MAX_CLASSES = 1_000_000
MAX_REFERENCE = 2**63 - 1  # indices are returned as int64
FIELDS = struct.Struct("<6sBB32sQQII")  # everything the checksum covers in the header
_CHECKSUM_SIZE = 8
HEADER_SIZE = FIELDS.size + _CHECKSUM_SIZE
U32_MAX = 2**32 - 1


class PayloadError(ValueError):
    """The bytes are not a payload this code can decode; the message names the problem and the fix."""


def checksum(*parts: bytes) -> bytes:
    digest = hashlib.blake2b(digest_size=_CHECKSUM_SIZE)
    for part in parts:
        digest.update(part)
    return digest.digest()


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


def _codec_name(codec_id: int) -> str:
    names = codec_names()
    if codec_id not in names:
        raise PayloadError(
            f"unknown codec id {codec_id} (this build knows {names}); upgrade plada to a version that has it"
        )
    return names[codec_id]


def _section_framing(data: bytes, version: int) -> tuple[int, int]:
    """(encoding, size with its prefix) of a version-2/3 payload's class-names section; (0, 0) in version 1."""
    if version == 1:
        return 0, 0
    if len(data) < HEADER_SIZE + names_section.PREFIX.size:
        raise PayloadError(
            f"payload truncated: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header and the "
            f"{names_section.PREFIX.size}-byte class-names prefix of a format {version} payload; re-send it"
        )
    encoding, stored_length = names_section.PREFIX.unpack_from(data, HEADER_SIZE)
    return encoding, names_section.PREFIX.size + stored_length


def _parse_fields(data: bytes) -> tuple[dict, tuple[int, bytes] | None]:
    """The header's fields, and a version-2/3 payload's class-names section (encoding, stored bytes)."""
    magic, version, codec_id, fingerprint, n, k, c, body_length = FIELDS.unpack_from(data)
    if version not in _VERSIONS:
        raise PayloadError(
            f"unknown payload format version {version} (this build reads versions {_VERSIONS}); "
            "upgrade plada to read it, or re-encode the payload with this version"
        )
    encoding, section_size = _section_framing(data, version)
    body_start = HEADER_SIZE + section_size
    end = body_start + body_length
    if len(data) < end:
        names = f"a {section_size}-byte class-names section and " if version >= 2 else ""
        raise PayloadError(
            f"payload truncated: header announces {names}a {body_length}-byte body but only "
            f"{len(data) - HEADER_SIZE} bytes follow the header; re-send the complete payload"
        )
    if len(data) > end:
        raise PayloadError(
            f"{len(data) - end} bytes of trailing garbage after the body; send the payload bytes exactly, "
            "without padding or concatenation"
        )
    stored = bytes(data[FIELDS.size : HEADER_SIZE])
    if stored != checksum(bytes(data[: FIELDS.size]), bytes(data[HEADER_SIZE:])):
        raise PayloadError("checksum mismatch: the payload was corrupted in transit or storage; re-send it")
    stored_start = HEADER_SIZE + names_section.PREFIX.size
    section = (encoding, bytes(data[stored_start:body_start])) if version >= 2 else None
    return {
        "format_version": version,
        "codec": _codec_name(codec_id),
        "codec_id": codec_id,
        "fingerprint": fingerprint.hex(),
        "n_reference": n,
        "k": k,
        "n_classes": c,
        "body_length": body_length,
    }, section


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

    Keys: format_version, codec, codec_id, fingerprint (hex), n_reference, k, n_classes, body_length,
    class_names (a tuple; None in format 1), task, version and student_recipe (the publisher's recommended
    student, format 3; each None when absent). Checks magic, version,
    codec, length and checksum and validates the class names, so it needs the whole payload, not 72 bytes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PayloadError(f"payload must be bytes, got {type(data).__name__}; read the file in binary mode")
    data = bytes(data)
    _check_framing(data)
    header, section = _parse_fields(data)
    _check_counts(header)
    names = _decode_names(section, header["n_classes"], recipe=header["format_version"] >= 3)
    return {**header, "class_names": names.class_names, "task": names.task, "version": names.version,
            "student_recipe": names.recipe}  # fmt: skip


def _decode_names(section: tuple[int, bytes] | None, n_classes: int, recipe: bool) -> names_section.Names:
    if section is None:
        return names_section.Names(None, None, None)
    try:
        return names_section.decode_section(*section, n_classes, recipe=recipe)
    except names_section.NamesProblem as err:
        raise PayloadError(err.report()) from None
