"""Codec "paper-zstd19": the documented streams inside the zstd frame, speed at paper scale, and the messages
its decoder gives for hostile streams, frames and bombs (what every codec must survive is in
``test_codec_contract.py``).

Forged bodies are built here from the format description (own varint writer, own header packing), so the tests
pin the documented format rather than whatever the encoder happens to do.
"""

from __future__ import annotations

import hashlib
import struct
import time

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from plada_core.payload import HEADER_SIZE, PayloadError, decode_payload, encode_payload

FP = "0123456789abcdef" * 4
BIG = 2**63 - 1  # the largest N; also lets forged bodies with huge varints pass the decompression cap


# ---------------------------------------------------------------- helpers: the format, written out by hand


def varints(*values: int) -> bytes:
    out = bytearray()
    for value in values:
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                break
    return bytes(out)


def raw_body(tokens: list[int], pairs: list[int]) -> bytes:
    stream1 = varints(*tokens)
    return varints(len(stream1)) + stream1 + varints(*pairs)


def zstd(raw: bytes, **kwargs) -> bytes:
    return zstandard.ZstdCompressor(level=19, **kwargs).compress(raw)


def forge(body: bytes, *, n: int, k: int, c: int, version: int = 1, codec_id: int = 1, fp: str = FP) -> bytes:
    """A payload with a valid checksum around any body and header values: what an attacker can send."""
    fields = struct.pack("<6sBB32sQQII", b"PLADA\x00", version, codec_id, bytes.fromhex(fp), n, k, c, len(body))
    return fields + hashlib.blake2b(fields + body, digest_size=8).digest() + body


# ---------------------------------------------------------------- the documented byte layout


def test_body_is_the_documented_streams():
    data = encode_payload([20, 6, 5, 8, 7], [1, 2, 2, 0, 0], n_reference=100, n_classes=3, fingerprint=FP)
    # deltas 5,1,1,1,12 -> tokens 10 (delta 5), 7 (run of 3 ones), 24 (delta 12); labels by index: 2,2,0,0,1
    expected_raw = raw_body([10, 7, 24], [2, 2, 0, 2, 1, 1])
    assert zstandard.ZstdDecompressor().decompress(data[HEADER_SIZE:]) == expected_raw
    assert data == forge(data[HEADER_SIZE:], n=100, k=5, c=3)


def test_index_zero_and_leading_run():
    # idx 0 has absolute delta 0 (token 0), then a run of 2; [1, 2, 3] alone is a single run token (the run
    # starts from 0)
    data = encode_payload([0, 1, 2], [0, 0, 0], n_reference=3, n_classes=1, fingerprint=FP)
    assert zstandard.ZstdDecompressor().decompress(data[HEADER_SIZE:]) == raw_body([0, 5], [0, 3])
    data = encode_payload([1, 2, 3], [0, 0, 0], n_reference=4, n_classes=1, fingerprint=FP)
    assert zstandard.ZstdDecompressor().decompress(data[HEADER_SIZE:]) == raw_body([7], [0, 3])


def test_encode_and_decode_fast_at_paper_scale():
    # ~150 k of ImageNet-21K's 14.2 M: 80 % inside 150 synset-sized blocks, the rest anywhere
    rng = np.random.default_rng(0)
    blocks = (rng.choice(14_200, 150, replace=False)[:, None] * 1000 + np.arange(1000)).ravel()
    indices = np.unique(np.concatenate([rng.choice(blocks, 120_000, replace=False), rng.choice(14_200_000, 30_000)]))
    labels = rng.integers(0, 10, indices.size)
    start = time.perf_counter()
    data = encode_payload(indices, labels, n_reference=14_200_000, n_classes=10, fingerprint=FP)
    assert decode_payload(data).k == indices.size
    assert time.perf_counter() - start < 3.0


# ---------------------------------------------------------------- hostile streams and frames


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=64), n=st.sampled_from([1, 50, 2**20, BIG]), k=st.integers(0, 20), c=st.integers(1, 9))
def test_forged_bodies_fail_cleanly_or_decode_valid(raw, n, k, c):
    """Past the checksum, arbitrary raw streams must give a PayloadError or a payload meeting the contract."""
    try:
        payload = decode_payload(forge(zstd(raw), n=n, k=min(k, n), c=c))
    except PayloadError:
        return
    assert payload.k == min(k, n) and np.all(np.diff(payload.indices) > 0)
    assert np.all((payload.indices >= 0) & (payload.indices < n)) and np.all(payload.labels < c)


GOOD_BODY = zstd(raw_body([6, 5], [1, 2, 2, 1]))  # indices 3, 4, 5 (delta 3, run of 2); labels 1, 1, 2


@pytest.mark.parametrize(
    ("forged", "match"),
    [
        (forge(GOOD_BODY, n=10, k=3, c=1), r"label 2 is outside \[0, 1\)"),
        (forge(GOOD_BODY, n=5, k=3, c=3), "index 5 is >= N=5"),
        (forge(GOOD_BODY, n=10, k=4, c=3), "index stream describes 3 items but k=4"),
        (forge(zstd(raw_body([6, 0], [1, 2])), n=10, k=2, c=3), "not strictly increasing at position 1"),
        # two deltas of 2**63 - 1 wrap the uint64 sum back below the previous index
        (forge(zstd(raw_body([2**64 - 2, 2**64 - 2, 8], [0, 3])), n=BIG, k=3, c=3), "not strictly increasing at posi"),
        (forge(zstd(raw_body([6, 1], [1, 2])), n=10, k=2, c=3), "empty run"),
        (forge(zstd(raw_body([6, 5], [1, 2, 2, 1, 0])), n=10, k=3, c=3), "odd number of varints"),
        (forge(zstd(raw_body([6, 5], [1, 2, 2, 1, 0, 0])), n=10, k=3, c=3), "run of length 0"),
        (forge(zstd(raw_body([6, 5], [1, 2, 2, 2])), n=10, k=3, c=3), "label stream describes 4 items but k=3"),
        (forge(zstd(raw_body([6, 5], [1, 2, 2, 1]) + b"\x80"), n=10, k=3, c=3), "label stream ends inside a varint"),
        (forge(zstd(varints(2) + b"\x86\x00" + varints(1, 1)), n=10, k=1, c=3), "non-minimal varint"),
        (forge(zstd(varints(11) + b"\xff" * 10 + b"\x01" + varints(1, 1)), n=BIG, k=1, c=3), "wider than 64 bits"),
        (forge(zstd(varints(9) + varints(6)), n=10, k=1, c=3), "index stream claims 9 bytes"),
        (forge(zstd(b""), n=10, k=0, c=3), "index stream length is truncated"),
        (forge(GOOD_BODY + b"junk", n=10, k=3, c=3), "trailing bytes after the zstd frame"),
        (forge(GOOD_BODY + GOOD_BODY, n=10, k=3, c=3), "trailing bytes after the zstd frame"),
        (forge(GOOD_BODY[:-2], n=10, k=3, c=3), "ends inside its zstd frame"),
        (forge(b"not zstd at all", n=10, k=3, c=3), "not valid zstd data"),
        (forge(b"", n=10, k=3, c=3), "ends inside its zstd frame"),
    ],
)
def test_forged_streams_are_rejected(forged, match):
    with pytest.raises(PayloadError, match=match):
        decode_payload(forged)


def test_forge_helper_builds_valid_payloads():
    payload = decode_payload(forge(GOOD_BODY, n=10, k=3, c=3))
    assert payload.indices.tolist() == [3, 4, 5] and payload.labels.tolist() == [1, 1, 2]


def test_huge_forged_run_is_rejected_before_allocating():
    # a 2-byte run token claiming 2**40 images must fail on the count check, not in np.repeat
    body = zstd(raw_body([(2**40 << 1) | 1], [0, 2**40]))
    with pytest.raises(PayloadError, match="k=3"):
        decode_payload(forge(body, n=2**41, k=3, c=1))


@pytest.fixture(scope="module")
def bomb_frames() -> list[bytes]:
    zeros = b"\x00" * 100_000_000
    with_size = zstandard.ZstdCompressor(level=1).compress(zeros)
    without_size = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(zeros)
    return [with_size, without_size]


def test_decompression_bomb_is_rejected_fast(bomb_frames):
    for frame in bomb_frames:
        assert len(frame) < 10_000  # 100 MB in a few KB
        start = time.perf_counter()
        with pytest.raises(PayloadError, match="decompression bomb"):
            decode_payload(forge(frame, n=1000, k=10, c=3))
        assert time.perf_counter() - start < 1.0


def test_frame_asking_for_a_huge_window_is_rejected():
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=30, write_content_size=False)
    compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()  # size unknown: window kept
    frame = compressor.compress(b"x" * 1000) + compressor.flush()
    with pytest.raises(PayloadError, match="not valid zstd data"):
        decode_payload(forge(frame, n=10_000, k=1000, c=3))
