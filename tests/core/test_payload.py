"""Payload container: the documented header, the codec registry, "auto", input validation, and clean failure on
bytes that are not a payload. What every codec's body must survive is in ``test_codec_contract.py``; each codec's
format is in its own ``test_payload_<codec>.py``.

Forged payloads are built here from the format description (own header packing), so the tests pin the
documented format rather than whatever the encoder happens to do.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plada_core.codecs import AUTO, CODECS, codec_names, get_codec, uses_layout
from plada_core.payload import HEADER_SIZE, PayloadError, decode_payload, encode_payload, needs_layout, read_header
from plada_core.simulator import simulate_layout, simulate_selections

FP = "0123456789abcdef" * 4


def forge(body: bytes, *, n: int, k: int, c: int, version: int = 1, codec_id: int = 1, fp: str = FP) -> bytes:
    """A payload with a valid checksum around any body and header values: what an attacker can send."""
    fields = struct.pack("<6sBB32sQQII", b"PLADA\x00", version, codec_id, bytes.fromhex(fp), n, k, c, len(body))
    return fields + hashlib.blake2b(fields + body, digest_size=8).digest() + body


def small_payload() -> bytes:
    return encode_payload([3, 4, 5, 9, 40], [1, 1, 0, 2, 2], n_reference=50, n_classes=3, fingerprint=FP)


def test_accepts_any_integer_dtype_and_uppercase_fingerprint():
    data = encode_payload(np.array([7, 2], dtype=np.uint16), np.array([1, 0], dtype=np.int8), n_reference=8,
                          n_classes=2, fingerprint=FP.upper())
    payload = decode_payload(data, expected_fingerprint=FP.upper())
    assert payload.indices.tolist() == [2, 7] and payload.labels.tolist() == [0, 1] and payload.fingerprint == FP


def test_header_is_the_documented_layout():
    data = small_payload()
    assert data == forge(data[HEADER_SIZE:], n=50, k=5, c=3)  # magic, version, codec id, fingerprint, N, k, C, length


def test_read_header_fields():
    header = read_header(small_payload())
    assert header == {
        "format_version": 1, "codec": "paper-zstd19", "codec_id": 1, "fingerprint": FP, "n_reference": 50,
        "k": 5, "n_classes": 3, "body_length": len(small_payload()) - HEADER_SIZE,
        "class_names": None, "task": None, "version": None, "student_recipe": None,  # format 1: no names section
    }


def test_codec_registry():
    assert get_codec("paper-zstd19").codec_id == 1
    assert len({codec.codec_id for codec in CODECS.values()}) == len(CODECS)
    with pytest.raises(ValueError, match=r"unknown codec 'lzma'.*paper-zstd19"):
        get_codec("lzma")
    # wire ids are forever: a payload names its codec by id
    assert codec_names() == {1: "paper-zstd19", 2: "context-rc", 3: "context-rc2", 4: "layout-rc"}


# ---------------------------------------------------------------- encode rejects bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(indices=[1, 4, 1], labels=[0, 0, 0]), "index 1 is selected more than once"),
        (dict(indices=[-3, 2], labels=[0, 0]), r"indices\[0\] = -3 is outside \[0, n_reference=10\)"),
        (dict(indices=[2, 10], labels=[0, 0]), r"indices\[1\] = 10 is outside"),
        (dict(indices=[2, 3], labels=[0, 4]), r"labels\[1\] = 4 is outside \[0, n_classes=4\)"),
        (dict(indices=[2, 3], labels=[-1, 0]), r"labels\[0\] = -1"),
        (dict(indices=[2, 3], labels=[0]), "2 indices but 1 labels"),
        (dict(indices=[2.0, 3.0], labels=[0, 0]), "indices must be integers, got dtype float64"),
        (dict(indices=[[2, 3]], labels=[[0, 0]]), "one-dimensional"),
        (dict(fingerprint="abc"), "fingerprint must be 64 hex characters.*'abc'"),
        (dict(fingerprint="z" * 64), "fingerprint must be 64 hex"),
        (dict(codec="gzip"),
         r"unknown codec 'gzip'; valid codecs: \['context-rc', 'context-rc2', 'layout-rc', 'paper-zstd19'\] or 'auto'"),
        (dict(n_classes=0), r"n_classes must be in \[1, 1000000\], got 0"),
        (dict(n_classes=1_000_001), "n_classes must be in"),
        (dict(n_reference=0, indices=[], labels=[]), "n_reference must be in"),
        (dict(n_reference=10.0), "n_reference must be an integer, got 10.0"),
    ],
)
def test_encode_rejects(kwargs, match):
    args = dict(indices=[2, 3], labels=[0, 1], n_reference=10, n_classes=4, fingerprint=FP) | kwargs
    with pytest.raises(ValueError, match=match):
        encode_payload(**args)


# ---------------------------------------------------------------- decode rejects hostile bytes


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_bytes=st.integers(0, 300))
def test_random_bytes_after_magic_raise_only_payload_error(seed, n_bytes):
    noise = np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes()
    with pytest.raises(PayloadError):
        decode_payload(b"PLADA\x00" + noise)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: b"PK\x03\x04" + d[4:], "not a PLADA payload"),
        (lambda d: d + b"\x00", "1 bytes of trailing garbage"),
        (lambda d: d[:-8] + bytes(8 ^ b for b in d[-8:]), "checksum mismatch"),
        (lambda d: d[:HEADER_SIZE - 8] + bytes(8) + d[HEADER_SIZE:], "checksum mismatch"),
    ],
)
def test_framing_errors(mutate, match):
    with pytest.raises(PayloadError, match=match):
        decode_payload(mutate(small_payload()))


def test_non_bytes_input():
    with pytest.raises(PayloadError, match="must be bytes, got str"):
        decode_payload("PLADA")


@pytest.mark.parametrize(
    ("forged", "match"),
    [
        (forge(b"", n=10, k=0, c=3, version=4), r"unknown payload format version 4 .*\(1, 2, 3\).*upgrade plada"),
        (forge(b"", n=10, k=0, c=3, version=0), "unknown payload format version 0"),
        (
            forge(b"", n=10, k=0, c=3, codec_id=9),
            r"unknown codec id 9 \(this build knows "
            r"\{1: 'paper-zstd19', 2: 'context-rc', 3: 'context-rc2', 4: 'layout-rc'\}",
        ),
    ],
)
def test_unknown_versions_and_codecs_are_rejected(forged, match):
    with pytest.raises(PayloadError, match=match):
        decode_payload(forged)


def test_malformed_expected_fingerprint_is_a_caller_error():
    with pytest.raises(ValueError, match="fingerprint must be 64 hex"):
        decode_payload(small_payload(), expected_fingerprint="sha256:abc")


# ---------------------------------------------------------------- "auto" and the layout


def test_auto_keeps_the_smallest_payload_of_the_codecs_that_can_run():
    layout = simulate_layout(0, n_reference=200_000, n_blocks=300)
    sel = simulate_selections((0.01,), n_classes=50, layout=layout)[0.01]

    def encode(codec: str, layout) -> bytes:
        return encode_payload(sel.indices, sel.labels, n_reference=sel.n_reference, n_classes=50, fingerprint=FP,
                              codec=codec, layout=layout)

    sizes = {codec: len(encode(codec, layout.sizes)) for codec in CODECS}
    with_layout, without = encode(AUTO, layout.sizes), encode(AUTO, None)
    assert len(with_layout) == min(sizes.values()) and read_header(with_layout)["codec"] == "layout-rc"
    assert len(without) == min(size for codec, size in sizes.items() if codec != "layout-rc")  # no layout: not tried
    assert read_header(without)["codec"] == "context-rc2"
    assert uses_layout(AUTO) and uses_layout("layout-rc") and not uses_layout("context-rc2") and not uses_layout("gzip")
    assert needs_layout(with_layout) and not needs_layout(without) and not needs_layout(b"garbage")
