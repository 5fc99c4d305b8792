"""Range-coded codecs ("context-rc", "context-rc2"): exact round trips, frozen formats, and clean, bounded
failure on hostile bytes. Every property test runs for each of them.

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
from plada_core.codecs.rangecoder import MeteredEncoder, RangeDecoder, RangeEncoder, StreamError, new_table
from plada_core.payload import CODECS, HEADER_SIZE, PayloadError, decode_payload, encode_payload, read_header
from plada_core.simulator import simulate_layout, simulate_selections

FP = "0123456789abcdef" * 4
BIG = 2**63 - 1
RC_CODECS = ["context-rc", "context-rc2"]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def encode(indices, labels, n: int, c: int, codec: str) -> bytes:
    return encode_payload(indices, labels, n_reference=n, n_classes=c, fingerprint=FP, codec=codec)


def forge(body: bytes, *, n: int, k: int, c: int, codec: str) -> bytes:
    """A ``codec`` payload with a valid checksum around any body and counts."""
    codec_id = CODECS[codec].codec_id
    fields = struct.pack("<6sBB32sQQII", b"PLADA\x00", 1, codec_id, bytes.fromhex(FP), n, k, c, len(body))
    return fields + hashlib.blake2b(fields + body, digest_size=8).digest() + body


def body_of(payload: bytes) -> bytes:
    return payload[HEADER_SIZE:]


def assert_contract(payload, n: int, k: int, c: int, codec: str) -> None:
    """What any successful decode must deliver, even of forged bytes."""
    assert payload.k == k and payload.codec == codec
    assert np.all(np.diff(payload.indices) > 0)
    assert np.all((payload.indices >= 0) & (payload.indices < n))
    assert np.all((payload.labels >= 0) & (payload.labels < c))


def decodes_or_fails_cleanly(data: bytes, n: int, k: int, c: int, codec: str) -> None:
    try:
        payload = decode_payload(data)
    except PayloadError:
        return
    assert_contract(payload, n, k, c, codec)


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


@pytest.mark.parametrize("codec", RC_CODECS)
@SETTINGS
@given(selection=selections())
def test_round_trip(codec, selection):
    indices, labels, n, c = selection
    payload = decode_payload(encode(indices, labels, n, c, codec))
    np.testing.assert_array_equal(payload.indices, indices)
    np.testing.assert_array_equal(payload.labels, labels)
    assert (payload.codec, payload.n_reference, payload.n_classes) == (codec, n, c)


@pytest.mark.parametrize("codec", RC_CODECS)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_round_trip_extreme_values(codec, data):
    n = data.draw(st.sampled_from([2**32 + 5, 2**62, BIG]))
    chosen = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=40))
    labels = data.draw(st.lists(st.integers(0, 999_999), min_size=len(chosen), max_size=len(chosen)))
    payload = decode_payload(encode(chosen, labels, n, 1_000_000, codec))
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
@pytest.mark.parametrize("codec", RC_CODECS)
def test_edge_selections_round_trip(codec, indices, labels, n, c):
    data = encode(indices, labels, n, c, codec)
    payload = decode_payload(data)
    assert payload.indices.tolist() == indices and payload.labels.tolist() == labels
    assert len(body_of(data)) >= min_body_length(len(indices))


@pytest.mark.parametrize("codec", RC_CODECS)
def test_empty_selection_has_an_empty_body(codec):
    assert body_of(encode([], [], 10, 3, codec)) == b""


@pytest.mark.parametrize("codec", RC_CODECS)
def test_trivial_selection_is_padded_to_the_work_bound(codec):
    data = encode(np.arange(10_000), np.zeros(10_000, dtype=int), 10_000, 1, codec)
    body = body_of(data)
    assert len(body) == min_body_length(10_000) == (10_000 - 64 + 7) // 8
    assert body.endswith(bytes(100))  # the stream itself is a few bytes; the rest is zero padding


@pytest.mark.parametrize("codec", RC_CODECS)
def test_encoding_is_deterministic_and_order_free(codec):
    rng = np.random.default_rng(1)
    indices = rng.choice(5000, 300, replace=False)
    labels = rng.integers(0, 9, 300)
    order = rng.permutation(300)
    assert encode(indices, labels, 5000, 9, codec) == encode(indices[order], labels[order], 5000, 9, codec)


@pytest.mark.parametrize(("codec", "codec_id"), [("context-rc", 2), ("context-rc2", 3)])
def test_header_names_the_codec(codec, codec_id):
    header = read_header(encode([1, 5], [0, 1], 10, 2, codec))
    assert (header["codec"], header["codec_id"]) == (codec, codec_id)
    assert CODECS[codec].codec_id == codec_id


# Frozen formats: these payloads must decode the same forever. If a model changes, register a new codec id.
GOLDEN = {  # codec: (indices, labels, body) with N = 100,000 and C = 10
    "context-rc": (
        [3, 4, 5, 9, 40, 41, 43, 700, 701, 702, 703, 9000, 9002, 9003, 9010, 65_000],
        [1, 1, 1, 0, 2, 2, 2, 7, 7, 3, 7, 4, 4, 4, 4, 9],
        bytes.fromhex("c0ad8758ea56718d57c9f7d7b33d0a591baff684585f143200"),
    ),
    "context-rc2": (  # blocks of 1s confused with 2, 5s confused with 6, 1s again: every label path is taken
        [*range(10, 30), *range(5000, 5012), *range(20_000, 20_010), 90_000],
        [1, 1, 1, 2, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 8, 1, 1]
        + [5, 5, 6, 5, 5, 5, 6, 5, 5, 2, 5, 5] + [1, 1, 2, 1, 1, 1, 1, 2, 1, 1] + [9],
        bytes.fromhex("e629acd63462d8c9f13f091199171808f4727817717f711949763600"),
    ),
}


@pytest.mark.parametrize("codec", RC_CODECS)
def test_golden_payload_still_decodes(codec):
    indices, labels, body = GOLDEN[codec]
    payload = decode_payload(forge(body, n=100_000, k=len(indices), c=10, codec=codec))
    assert payload.indices.tolist() == indices and payload.labels.tolist() == labels


@pytest.mark.parametrize("codec", RC_CODECS)
def test_encoder_still_writes_the_golden_payload(codec):
    indices, labels, body = GOLDEN[codec]
    assert body_of(encode(indices, labels, 100_000, 10, codec)) == body


# ---------------------------------------------------------------- size and speed


def test_smaller_than_the_paper_codec_on_a_simulated_pool():
    layout = simulate_layout(0, n_reference=500_000, n_blocks=800)
    for selection in simulate_selections((0.01, 0.001), n_classes=50, layout=layout).values():
        args = (selection.indices, selection.labels, selection.n_reference, 50)
        paper, rc, rc2 = (len(encode(*args, codec)) for codec in ("paper-zstd19", "context-rc", "context-rc2"))
        assert rc < 0.9 * paper
        assert rc2 < rc  # the confusion lists pay off even on this small pool


@pytest.fixture(scope="module")
def paper_scale_selection():
    # ~142 k of ImageNet-21K's 14.2 M (1 % keep) in realistic blocks: the issue asks for "a few seconds"
    return simulate_selections((0.01,), n_classes=100)[0.01]


@pytest.mark.parametrize("codec", RC_CODECS)
def test_encode_and_decode_fast_at_paper_scale(codec, paper_scale_selection):
    selection = paper_scale_selection
    start = time.perf_counter()
    data = encode(selection.indices, selection.labels, selection.n_reference, 100, codec)
    assert decode_payload(data).k == selection.k
    assert time.perf_counter() - start < 8.0  # ~1.5 s (context-rc2 ~2 s) measured on one core; generous for CI


# ---------------------------------------------------------------- hostile bytes


@pytest.fixture(scope="module", params=RC_CODECS)
def sample(request) -> tuple[str, bytes]:
    """(codec, a valid payload of it): a dense block with a usual label, noise, and scattered images."""
    rng = np.random.default_rng(7)
    indices = np.unique(np.concatenate([np.arange(1000, 1400), rng.choice(20_000, 200, replace=False)]))
    labels = np.where(rng.random(indices.size) < 0.9, 3, rng.integers(0, 20, indices.size))
    return request.param, encode(indices, labels, 20_000, 20, request.param)


def test_every_truncation_is_rejected(sample):
    codec, data = sample
    header = read_header(data)
    body = body_of(data)
    for end in range(0, len(data), 7):
        with pytest.raises(PayloadError, match="truncated"):
            decode_payload(data[:end])
    for end in range(len(body)):  # past the checksum too: a truncated body in a re-checksummed payload
        with pytest.raises(PayloadError):
            decode_payload(forge(body[:end], n=header["n_reference"], k=header["k"], c=header["n_classes"],
                                 codec=codec))


@SETTINGS
@given(data=st.data())
def test_bit_flips_are_rejected_or_decode_within_contract(sample, data):
    codec, payload = sample
    header = read_header(payload)
    flipped = bytearray(payload)
    for bit in data.draw(st.lists(st.integers(0, 8 * len(payload) - 1), min_size=1, max_size=4, unique=True)):
        flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(PayloadError):  # the checksum sees every flip
        decode_payload(bytes(flipped))
    n, k, c = header["n_reference"], header["k"], header["n_classes"]
    decodes_or_fails_cleanly(forge(bytes(flipped[HEADER_SIZE:]), n=n, k=k, c=c, codec=codec), n, k, c, codec)


@SETTINGS
@given(data=st.data())
def test_mutated_bodies_fail_cleanly(sample, data):
    """Inserted, deleted and overwritten byte ranges inside a valid-checksum payload."""
    codec, payload = sample
    body = bytearray(body_of(payload))
    start = data.draw(st.integers(0, len(body)))
    stop = data.draw(st.integers(start, min(len(body), start + 16)))
    body[start:stop] = data.draw(st.binary(max_size=16))
    header = read_header(payload)
    n, c = header["n_reference"], header["n_classes"]
    k = data.draw(st.sampled_from([header["k"], header["k"] + 1, header["k"] - 1, 0, 1]))
    decodes_or_fails_cleanly(forge(bytes(body), n=n, k=k, c=c, codec=codec), n, k, c, codec)


@pytest.mark.parametrize("codec", RC_CODECS)
@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=200), n=st.sampled_from([1, 7, 5000, 2**40, BIG]), k=st.integers(0, 2000),
       c=st.sampled_from([1, 2, 10, 1_000_000]))
def test_random_bodies_fail_cleanly_and_fast(codec, body, n, k, c):
    k = min(k, n)
    start = time.perf_counter()
    decodes_or_fails_cleanly(forge(body, n=n, k=k, c=c, codec=codec), n, k, c, codec)
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
@pytest.mark.parametrize("codec", RC_CODECS)
def test_forged_bodies_name_the_problem(codec, body, n, k, c, match):
    with pytest.raises(PayloadError, match=match):
        decode_payload(forge(body, n=n, k=k, c=c, codec=codec))


def test_trailing_bytes_and_non_zero_padding_are_rejected(sample):
    codec, payload = sample
    header = read_header(payload)
    n, k, c = header["n_reference"], header["k"], header["n_classes"]
    with pytest.raises(PayloadError, match="not the zero padding"):
        decode_payload(forge(body_of(payload) + b"\x00", n=n, k=k, c=c, codec=codec))
    padded = body_of(encode(np.arange(2000), np.zeros(2000, dtype=int), 2000, 1, codec))
    with pytest.raises(PayloadError, match="not the zero padding"):
        decode_payload(forge(padded[:-1] + b"\x01", n=2000, k=2000, c=1, codec=codec))


@pytest.mark.parametrize("codec", RC_CODECS)
def test_index_past_the_pool_is_rejected(codec):
    data = encode([5, 9], [0, 0], 10, 1, codec)
    with pytest.raises(PayloadError, match="is >= N=8"):
        decode_payload(forge(body_of(data), n=8, k=2, c=1, codec=codec))


@pytest.mark.parametrize("codec", RC_CODECS)
def test_label_past_the_classes_is_rejected(codec):
    data = encode([5], [6], 10, 7, codec)  # 3 label bits; C=6 leaves 6 and 7 unused
    with pytest.raises(PayloadError, match=r"label 6 is outside \[0, 6\)"):
        decode_payload(forge(body_of(data), n=10, k=1, c=6, codec=codec))


@pytest.mark.parametrize("fill", [0x00, 0x55, 0xFE])
@pytest.mark.parametrize("codec", RC_CODECS)
def test_largest_k_a_body_allows_decodes_in_bounded_time(codec, fill):
    """The decompression-bomb shape: the most images a 4 KB body may claim, all from filler bytes."""
    body = bytes([fill]) * 4096
    k = 8 * len(body) + 64
    start = time.perf_counter()
    decodes_or_fails_cleanly(forge(body, n=BIG, k=k, c=1_000_000, codec=codec), BIG, k, 1_000_000, codec)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("codec", RC_CODECS)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), labels=st.sampled_from([2, 5, 100]))
def test_noisy_labels_round_trip_through_every_candidate_path(codec, seed, labels):
    """Long runs of one label with confusions, uniform noise and block changes: every label path is taken."""
    rng = np.random.default_rng(seed)
    k = 3000
    gaps = np.where(rng.random(k) < 0.02, rng.integers(256, 5000, k), rng.integers(1, 4, k))
    indices = np.cumsum(gaps) - 1
    mode = rng.integers(0, labels, k)[np.cumsum(gaps >= 256)]
    confused = (mode + rng.integers(1, 3, k)) % labels
    noise = rng.random(k)
    values = np.where(noise < 0.7, mode, np.where(noise < 0.9, confused, rng.integers(0, labels, k)))
    n = int(indices[-1]) + 1
    payload = decode_payload(encode(indices, values, n, labels, codec))
    np.testing.assert_array_equal(payload.indices, indices)
    np.testing.assert_array_equal(payload.labels, values)


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


def test_metered_encoder_writes_the_same_stream_and_counts_its_bits():
    rng = np.random.default_rng(3)
    bits = (rng.random(20_000) < 0.1).astype(int).tolist()
    streams, metered = [], None
    for coder in (RangeEncoder(), MeteredEncoder()):
        table = new_table(1)
        for bit in bits:
            coder.bit(table, 0, bit)
        coder.uniform(12, 77)
        streams.append(coder.finish())
        metered = coder
    assert streams[0] == streams[1]
    assert 8 * len(streams[1]) - 40 < metered.bits < 8 * len(streams[1])  # the ideal length, less the flush

