"""Codec "context-rc": exact round trips, a frozen format, and clean, bounded failure on hostile bytes.

Hostile bodies are wrapped in a header with a valid checksum (``forge``), so they reach the codec's own
decoder instead of stopping at the checksum, which is what an attacker can do.
"""

from __future__ import annotations

import hashlib
import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plada_core.codecs.context_rc import min_body_length
from plada_core.codecs.rangecoder import RangeDecoder, RangeEncoder, StreamError, new_table
from plada_core.payload import CODECS, HEADER_SIZE, PayloadError, decode_payload, encode_payload, read_header
from plada_core.simulator import simulate_layout, simulate_selections

FP = "0123456789abcdef" * 4
BIG = 2**63 - 1
CODEC = "context-rc"
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def encode(indices, labels, n: int, c: int, codec: str = CODEC) -> bytes:
    return encode_payload(indices, labels, n_reference=n, n_classes=c, fingerprint=FP, codec=codec)


def forge(body: bytes, *, n: int, k: int, c: int) -> bytes:
    """A context-rc payload with a valid checksum around any body and counts."""
    fields = struct.pack("<6sBB32sQQII", b"PLADA\x00", 1, 2, bytes.fromhex(FP), n, k, c, len(body))
    return fields + hashlib.blake2b(fields + body, digest_size=8).digest() + body


def body_of(payload: bytes) -> bytes:
    return payload[HEADER_SIZE:]


def assert_contract(payload, n: int, k: int, c: int) -> None:
    """What any successful decode must deliver, even of forged bytes."""
    assert payload.k == k and payload.codec == CODEC
    assert np.all(np.diff(payload.indices) > 0)
    assert np.all((payload.indices >= 0) & (payload.indices < n))
    assert np.all((payload.labels >= 0) & (payload.labels < c))


def decodes_or_fails_cleanly(data: bytes, n: int, k: int, c: int) -> None:
    try:
        payload = decode_payload(data)
    except PayloadError:
        return
    assert_contract(payload, n, k, c)


@st.composite
def selections(draw, max_n: int = 3000):
    """(indices, labels, n, c): clustered in blocks with noisy labels, or scattered, or both."""
    n = draw(st.integers(1, max_n))
    c = draw(st.sampled_from([1, 2, 3, 10, 100, 1000, 1_000_000]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    density = draw(st.sampled_from([0.0, 0.01, 0.2, 0.7, 1.0]))
    blocks = np.sort(rng.choice(n + 1, size=min(n + 1, int(rng.integers(1, 8))), replace=False))
    block_of = np.searchsorted(blocks, np.arange(n), side="right")
    block_density = rng.random(blocks.size + 1) * density
    chosen = np.flatnonzero(rng.random(n) < block_density[block_of])
    mode = rng.integers(0, c, blocks.size + 1)[block_of[chosen]]
    noise = rng.random(chosen.size) < draw(st.sampled_from([0.0, 0.1, 0.5]))
    labels = np.where(noise, rng.integers(0, c, chosen.size), mode)
    return chosen, labels, n, c


# ---------------------------------------------------------------- round trips


@SETTINGS
@given(selection=selections())
def test_round_trip(selection):
    indices, labels, n, c = selection
    payload = decode_payload(encode(indices, labels, n, c))
    np.testing.assert_array_equal(payload.indices, indices)
    np.testing.assert_array_equal(payload.labels, labels)
    assert (payload.codec, payload.n_reference, payload.n_classes) == (CODEC, n, c)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_round_trip_extreme_values(data):
    n = data.draw(st.sampled_from([2**32 + 5, 2**62, BIG]))
    chosen = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=40))
    labels = data.draw(st.lists(st.integers(0, 999_999), min_size=len(chosen), max_size=len(chosen)))
    payload = decode_payload(encode(chosen, labels, n, 1_000_000))
    order = np.argsort(chosen)
    assert payload.indices.tolist() == np.asarray(chosen, dtype=np.int64)[order].tolist()
    assert payload.labels.tolist() == np.asarray(labels, dtype=np.int64)[order].tolist()


@pytest.mark.parametrize(
    ("indices", "labels", "n", "c"),
    [
        ([], [], 10, 3),
        ([0], [0], 1, 1),
        ([0, BIG - 1], [0, 999_999], BIG, 1_000_000),
        (list(range(100)), [5] * 100, 100, 7),  # full pool, one label: padded up to min_body_length
        (list(range(0, 100_000, 2)), [1] * 50_000, 100_000, 2),
    ],
)
def test_edge_selections_round_trip(indices, labels, n, c):
    data = encode(indices, labels, n, c)
    payload = decode_payload(data)
    assert payload.indices.tolist() == indices and payload.labels.tolist() == labels
    assert len(body_of(data)) >= min_body_length(len(indices))


def test_empty_selection_has_an_empty_body():
    assert body_of(encode([], [], 10, 3)) == b""


def test_trivial_selection_is_padded_to_the_work_bound():
    data = encode(np.arange(10_000), np.zeros(10_000, dtype=int), 10_000, 1)
    body = body_of(data)
    assert len(body) == min_body_length(10_000) == (10_000 - 64 + 7) // 8
    assert body.endswith(bytes(100))  # the stream itself is a few bytes; the rest is zero padding


def test_encoding_is_deterministic_and_order_free():
    rng = np.random.default_rng(1)
    indices = rng.choice(5000, 300, replace=False)
    labels = rng.integers(0, 9, 300)
    order = rng.permutation(300)
    assert encode(indices, labels, 5000, 9) == encode(indices[order], labels[order], 5000, 9)


def test_header_names_the_codec():
    header = read_header(encode([1, 5], [0, 1], 10, 2))
    assert (header["codec"], header["codec_id"]) == (CODEC, 2)
    assert CODECS[CODEC].codec_id == 2


# Frozen format: this payload must decode the same forever. If the model changes, register a new codec id.
GOLDEN_BODY = bytes.fromhex("c0ad8758ea56718d57c9f7d7b33d0a591baff684585f143200")


def golden_selection() -> tuple[list[int], list[int]]:
    indices = [3, 4, 5, 9, 40, 41, 43, 700, 701, 702, 703, 9000, 9002, 9003, 9010, 65_000]
    labels = [1, 1, 1, 0, 2, 2, 2, 7, 7, 3, 7, 4, 4, 4, 4, 9]
    return indices, labels


def test_golden_payload_still_decodes():
    indices, labels = golden_selection()
    payload = decode_payload(forge(GOLDEN_BODY, n=100_000, k=len(indices), c=10))
    assert payload.indices.tolist() == indices and payload.labels.tolist() == labels


def test_encoder_still_writes_the_golden_payload():
    indices, labels = golden_selection()
    assert body_of(encode(indices, labels, 100_000, 10)) == GOLDEN_BODY


# ---------------------------------------------------------------- size and speed


def test_smaller_than_the_paper_codec_on_a_simulated_pool():
    layout = simulate_layout(0, n_reference=500_000, n_blocks=800)
    for selection in simulate_selections((0.01, 0.001), n_classes=50, layout=layout).values():
        args = (selection.indices, selection.labels, selection.n_reference, 50)
        assert len(encode(*args)) < 0.9 * len(encode(*args, codec="paper-zstd19"))


def test_encode_and_decode_fast_at_paper_scale():
    # ~142 k of ImageNet-21K's 14.2 M (1 % keep) in realistic blocks: the issue asks for "a few seconds"
    selection = simulate_selections((0.01,), n_classes=100)[0.01]
    start = time.perf_counter()
    data = encode(selection.indices, selection.labels, selection.n_reference, 100)
    assert decode_payload(data).k == selection.k
    assert time.perf_counter() - start < 8.0  # ~1.5 s measured on one core; generous for shared CI


# ---------------------------------------------------------------- hostile bytes


@pytest.fixture(scope="module")
def sample() -> bytes:
    rng = np.random.default_rng(7)
    indices = np.unique(np.concatenate([np.arange(1000, 1400), rng.choice(20_000, 200, replace=False)]))
    labels = np.where(rng.random(indices.size) < 0.9, 3, rng.integers(0, 20, indices.size))
    return encode(indices, labels, 20_000, 20)


def test_every_truncation_is_rejected(sample):
    header = read_header(sample)
    body = body_of(sample)
    for end in range(0, len(sample), 7):
        with pytest.raises(PayloadError, match="truncated"):
            decode_payload(sample[:end])
    for end in range(len(body)):  # past the checksum too: a truncated body in a re-checksummed payload
        with pytest.raises(PayloadError):
            decode_payload(forge(body[:end], n=header["n_reference"], k=header["k"], c=header["n_classes"]))


@SETTINGS
@given(data=st.data())
def test_bit_flips_are_rejected_or_decode_within_contract(sample, data):
    header = read_header(sample)
    flipped = bytearray(sample)
    for bit in data.draw(st.lists(st.integers(0, 8 * len(sample) - 1), min_size=1, max_size=4, unique=True)):
        flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(PayloadError):  # the checksum sees every flip
        decode_payload(bytes(flipped))
    n, k, c = header["n_reference"], header["k"], header["n_classes"]
    decodes_or_fails_cleanly(forge(bytes(flipped[HEADER_SIZE:]), n=n, k=k, c=c), n, k, c)


@SETTINGS
@given(data=st.data())
def test_mutated_bodies_fail_cleanly(sample, data):
    """Inserted, deleted and overwritten byte ranges inside a valid-checksum payload."""
    body = bytearray(body_of(sample))
    start = data.draw(st.integers(0, len(body)))
    stop = data.draw(st.integers(start, min(len(body), start + 16)))
    body[start:stop] = data.draw(st.binary(max_size=16))
    header = read_header(sample)
    n, c = header["n_reference"], header["n_classes"]
    k = data.draw(st.sampled_from([header["k"], header["k"] + 1, header["k"] - 1, 0, 1]))
    decodes_or_fails_cleanly(forge(bytes(body), n=n, k=k, c=c), n, k, c)


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=200), n=st.sampled_from([1, 7, 5000, 2**40, BIG]), k=st.integers(0, 2000),
       c=st.sampled_from([1, 2, 10, 1_000_000]))
def test_random_bodies_fail_cleanly_and_fast(body, n, k, c):
    k = min(k, n)
    start = time.perf_counter()
    decodes_or_fails_cleanly(forge(body, n=n, k=k, c=c), n, k, c)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("body", "n", "k", "c", "match"),
    [
        (b"", 10, 1, 3, "at least 4 bytes"),
        (b"\x00\x00", 10, 1, 3, "at least 4 bytes"),
        (b"\xff\xff\xff\xff", 10, 1, 3, "ff ff ff ff"),
        (b"\x00", 10, 0, 3, "k=0 but the body has 1 bytes"),
        (bytes(10), 2**62, 2**40, 3, r"k=1099511627776 images need a body of at least"),
        (bytes(10), 20_000, 200, 3, "need a body of at least 17 bytes, got 10"),
    ],
)
def test_forged_bodies_name_the_problem(body, n, k, c, match):
    with pytest.raises(PayloadError, match=match):
        decode_payload(forge(body, n=n, k=k, c=c))


def test_trailing_bytes_and_non_zero_padding_are_rejected(sample):
    header = read_header(sample)
    n, k, c = header["n_reference"], header["k"], header["n_classes"]
    with pytest.raises(PayloadError, match="not the zero padding"):
        decode_payload(forge(body_of(sample) + b"\x00", n=n, k=k, c=c))
    padded = body_of(encode(np.arange(2000), np.zeros(2000, dtype=int), 2000, 1))
    with pytest.raises(PayloadError, match="not the zero padding"):
        decode_payload(forge(padded[:-1] + b"\x01", n=2000, k=2000, c=1))


def test_index_past_the_pool_is_rejected():
    data = encode([5, 9], [0, 0], 10, 1)
    with pytest.raises(PayloadError, match="is >= N=8"):
        decode_payload(forge(body_of(data), n=8, k=2, c=1))


def test_label_past_the_classes_is_rejected():
    data = encode([5], [6], 10, 7)  # 3 label bits; C=6 leaves 6 and 7 unused
    with pytest.raises(PayloadError, match=r"label 6 is outside \[0, 6\)"):
        decode_payload(forge(body_of(data), n=10, k=1, c=6))


@pytest.mark.parametrize("fill", [0x00, 0x55, 0xFE])
def test_largest_k_a_body_allows_decodes_in_bounded_time(fill):
    """The decompression-bomb shape: the most images a 4 KB body may claim, all from filler bytes."""
    body = bytes([fill]) * 4096
    k = 8 * len(body) + 64
    start = time.perf_counter()
    decodes_or_fails_cleanly(forge(body, n=BIG, k=k, c=1_000_000), BIG, k, 1_000_000)
    assert time.perf_counter() - start < 2.0


# ---------------------------------------------------------------- the range coder itself


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_bits=st.integers(0, 3000), skew=st.floats(0.0, 1.0))
def test_range_coder_round_trip(seed, n_bits, skew):
    rng = np.random.default_rng(seed)
    bits = (rng.random(n_bits) < skew).astype(int).tolist()
    contexts = rng.integers(0, 4, n_bits).tolist()
    widths = rng.integers(1, 17, n_bits).tolist()
    values = [int(rng.integers(0, 1 << w)) for w in widths]
    encoder, table = RangeEncoder(), new_table(4)
    for bit, context, width, value in zip(bits, contexts, widths, values):
        encoder.bit(table, context, bit)
        if context == 0:
            encoder.uniform(width, value)
    stream = encoder.finish()
    decoder, table = RangeDecoder(stream), new_table(4)
    for bit, context, width, value in zip(bits, contexts, widths, values):
        assert decoder.bit(table, context) == bit
        if context == 0:
            assert decoder.uniform(width) == value
    assert decoder.position == len(stream)  # a decoder reads the whole stream and nothing more


def test_range_coder_compresses_predictable_bits():
    encoder, table = RangeEncoder(), new_table(1)
    for _ in range(100_000):
        encoder.bit(table, 0, 0)
    assert len(encoder.finish()) < 100_000 * 0.0015 / 8 + 16  # ~0.0014 bits per bit at the probability floor


def test_range_decoder_reports_the_end_of_the_stream():
    decoder, table = RangeDecoder(bytes([0x80, 0, 0, 0])), new_table(1)
    with pytest.raises(StreamError, match="ends after 4 bytes"):
        for _ in range(100):
            decoder.bit(table, 0)
