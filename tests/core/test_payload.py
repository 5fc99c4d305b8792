"""Payload format: exact round trips, the documented byte layout, and clean failure on hostile bytes.

Forged payloads are built here from the format description (own varint writer, own header packing), so the
tests pin the documented format rather than whatever the encoder happens to do.
"""

from __future__ import annotations

import hashlib
import struct
import time

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plada_core.payload import (
    CODECS,
    HEADER_SIZE,
    Payload,
    PayloadError,
    decode_payload,
    encode_payload,
    get_codec,
    read_header,
)

FP = "0123456789abcdef" * 4
OTHER_FP = "fedcba9876543210" * 4
BIG = 2**63 - 1  # the largest N; also lets forged bodies with huge varints pass the decompression cap
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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


def small_payload() -> bytes:
    return encode_payload([3, 4, 5, 9, 40], [1, 1, 0, 2, 2], n_reference=50, n_classes=3, fingerprint=FP)


def selection(rng: np.random.Generator, n: int, k: int, clustered: bool) -> np.ndarray:
    if not clustered or k == 0:
        return rng.choice(n, size=k, replace=False)
    start = int(rng.integers(0, n - k + 1))
    block = np.arange(start, start + k)  # one contiguous synset-like block, then thinned a little
    keep = rng.random(k) < 0.8
    extra = rng.choice(np.setdiff1d(np.arange(n), block[keep]), size=k - int(keep.sum()), replace=False)
    return np.concatenate([block[keep], extra])


def assert_round_trip(indices, labels, n: int, c: int) -> Payload:
    payload = decode_payload(encode_payload(indices, labels, n_reference=n, n_classes=c, fingerprint=FP))
    order = np.argsort(np.asarray(indices, dtype=np.int64), kind="stable")
    np.testing.assert_array_equal(payload.indices, np.asarray(indices, dtype=np.int64)[order])
    np.testing.assert_array_equal(payload.labels, np.asarray(labels, dtype=np.int64)[order])
    assert payload.indices.dtype == np.int64 and payload.labels.dtype == np.int32
    assert (payload.n_reference, payload.n_classes, payload.fingerprint, payload.codec) == (n, c, FP, "paper-zstd19")
    assert payload.k == len(order)
    return payload


# ---------------------------------------------------------------- round trips


@SETTINGS
@given(
    n=st.integers(1, 3000),
    fraction=st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.0]),
    c=st.integers(1, 300),
    clustered=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_random_selections(n, fraction, c, clustered, seed):
    rng = np.random.default_rng(seed)
    k = round(n * fraction)
    indices = selection(rng, n, k, clustered)
    labels = np.sort(rng.integers(0, c, k)) if clustered else rng.integers(0, c, k)  # runs and no runs
    assert_round_trip(indices, labels, n, c)


@SETTINGS
@given(data=st.data(), n=st.integers(1, 500), c=st.integers(1, 20))
def test_input_order_does_not_matter(data, n, c):
    chosen = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
    labels = data.draw(st.lists(st.integers(0, c - 1), min_size=len(chosen), max_size=len(chosen)))
    pairs = list(zip(chosen, labels))
    shuffled = data.draw(st.permutations(pairs))
    encode = lambda ps: encode_payload(  # noqa: E731
        [i for i, _ in ps], [label for _, label in ps], n_reference=n, n_classes=c, fingerprint=FP
    )
    assert encode(pairs) == encode(shuffled) == encode(sorted(pairs))
    assert_round_trip(chosen, labels, n, c)


def test_empty_and_full_selection():
    assert assert_round_trip([], [], 10, 3).k == 0
    assert_round_trip(np.arange(1000)[::-1], np.arange(1000) % 7, 1000, 7)


def test_extreme_values_round_trip():
    top = np.array([0, 1, BIG - 2, BIG - 1], dtype=np.uint64)
    assert_round_trip(top, [0, 999_999, 5, 999_999], BIG, 1_000_000)


def test_accepts_any_integer_dtype_and_uppercase_fingerprint():
    data = encode_payload(np.array([7, 2], dtype=np.uint16), np.array([1, 0], dtype=np.int8), n_reference=8,
                          n_classes=2, fingerprint=FP.upper())
    payload = decode_payload(data, expected_fingerprint=FP.upper())
    assert payload.indices.tolist() == [2, 7] and payload.labels.tolist() == [0, 1] and payload.fingerprint == FP


def test_decoded_arrays_are_read_only():
    payload = decode_payload(small_payload())
    with pytest.raises(ValueError, match="read-only"):
        payload.indices[0] = 1


# ---------------------------------------------------------------- the documented byte layout


def test_body_is_the_documented_streams():
    data = encode_payload([20, 6, 5, 8, 7], [1, 2, 2, 0, 0], n_reference=100, n_classes=3, fingerprint=FP)
    # deltas 5,1,1,1,12 -> tokens 10 (delta 5), 7 (run of 3 ones), 24 (delta 12); labels by index: 2,2,0,0,1
    expected_raw = raw_body([10, 7, 24], [2, 2, 0, 2, 1, 1])
    assert zstandard.ZstdDecompressor().decompress(data[HEADER_SIZE:]) == expected_raw
    assert data == forge(data[HEADER_SIZE:], n=100, k=5, c=3)


def test_index_zero_and_leading_run():
    # idx 0 has absolute delta 0; [1, 2, 3] alone is a single run token (the run starts from 0)
    assert_round_trip([0, 1, 2], [0, 0, 0], 3, 1)
    data = encode_payload([1, 2, 3], [0, 0, 0], n_reference=4, n_classes=1, fingerprint=FP)
    assert zstandard.ZstdDecompressor().decompress(data[HEADER_SIZE:]) == raw_body([7], [0, 3])


def test_read_header_fields():
    header = read_header(small_payload())
    assert header == {
        "format_version": 1, "codec": "paper-zstd19", "codec_id": 1, "fingerprint": FP, "n_reference": 50,
        "k": 5, "n_classes": 3, "body_length": len(small_payload()) - HEADER_SIZE,
    }


def test_codec_registry():
    assert get_codec("paper-zstd19").codec_id == 1
    assert len({codec.codec_id for codec in CODECS.values()}) == len(CODECS)
    with pytest.raises(ValueError, match=r"unknown codec 'lzma'.*paper-zstd19"):
        get_codec("lzma")


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


def test_every_truncation_is_rejected():
    data = small_payload()
    for end in range(len(data)):
        with pytest.raises(PayloadError, match="truncated"):
            decode_payload(data[:end])


def test_every_single_bit_flip_is_rejected():
    data = small_payload()
    for bit in range(8 * len(data)):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(PayloadError):
            decode_payload(bytes(flipped))


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


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 2000))
def test_random_bit_flip_in_random_payload(seed, n):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(0, n + 1))
    data = bytearray(encode_payload(rng.choice(n, k, replace=False), rng.integers(0, 5, k), n_reference=n,
                                    n_classes=5, fingerprint=FP))
    bit = int(rng.integers(0, 8 * len(data)))
    data[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(PayloadError):
        decode_payload(bytes(data))


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


def test_non_bytes_input():
    with pytest.raises(PayloadError, match="must be bytes, got str"):
        decode_payload("PLADA")


GOOD_BODY = zstd(raw_body([6, 5], [1, 2, 2, 1]))  # indices 3, 4, 5 (delta 3, run of 2); labels 1, 1, 2


@pytest.mark.parametrize(
    ("forged", "match"),
    [
        (forge(GOOD_BODY, n=10, k=3, c=3, version=2), "unknown payload format version 2.*upgrade plada"),
        (
            forge(GOOD_BODY, n=10, k=3, c=3, codec_id=9),
            r"unknown codec id 9 \(this build knows "
            r"\{1: 'paper-zstd19', 2: 'context-rc', 3: 'context-rc2', 4: 'layout-rc'\}",
        ),
        (forge(GOOD_BODY, n=10, k=11, c=3), "k=11 selected images but the pool has only N=10"),
        (forge(GOOD_BODY, n=0, k=0, c=3), "N=0"),
        (forge(GOOD_BODY, n=10, k=3, c=0), "C=0 classes"),
        (forge(GOOD_BODY, n=10, k=3, c=1_000_001), "C=1000001 classes"),
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
def test_forged_payloads_are_rejected(forged, match):
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


def test_wrong_pool_is_rejected():
    data = small_payload()
    assert decode_payload(data, expected_fingerprint=FP).k == 5
    with pytest.raises(PayloadError, match=r"different reference pool.*0123456789ab….*fedcba987654…"):
        decode_payload(data, expected_fingerprint=OTHER_FP)
    with pytest.raises(PayloadError, match="pool of N=50 images but the local pool has N=49"):
        decode_payload(data, expected_n_reference=49)


def test_malformed_expected_fingerprint_is_a_caller_error():
    with pytest.raises(ValueError, match="fingerprint must be 64 hex"):
        decode_payload(small_payload(), expected_fingerprint="sha256:abc")
