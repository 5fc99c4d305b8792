"""The adaptive binary range coder under every range-coded codec: exact round trips of any bit/uniform sequence,
the documented stream format and cost bounds, and clean failure on streams no encoder wrote."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plada_core.codecs.rangecoder import MeteredEncoder, RangeDecoder, RangeEncoder, StreamError, new_table

# one coded step: ("bit", context, bit) or ("uniform", width, value)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("bit"), st.integers(0, 3), st.integers(0, 1)),
        st.integers(1, 16).flatmap(lambda w: st.tuples(st.just("uniform"), st.just(w), st.integers(0, (1 << w) - 1))),
    ),
    max_size=400,
)


def encode(sequence, coder=None) -> tuple[bytes, list[int]]:
    coder, table = coder or RangeEncoder(), new_table(4)
    for kind, a, b in sequence:
        assert (coder.bit(table, a, b) if kind == "bit" else coder.uniform(a, b)) == b  # returns what it coded
    return coder.finish(), table


def decode(stream: bytes, sequence) -> tuple[list[int], list[int], RangeDecoder]:
    decoder, table = RangeDecoder(stream), new_table(4)
    values = [decoder.bit(table, a) if kind == "bit" else decoder.uniform(a) for kind, a, _ in sequence]
    return values, table, decoder


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


@settings(max_examples=100, deadline=None)
@given(sequence=steps)
def test_any_sequence_round_trips_and_both_sides_adapt_alike(sequence):
    stream, encoder_table = encode(sequence)
    values, decoder_table, decoder = decode(stream, sequence)
    assert values == [b for _, _, b in sequence]
    assert decoder_table == encoder_table  # the probabilities moved identically on both sides
    assert decoder.position == len(stream)
    assert len(stream) >= 4  # the shortest stream the decoder accepts
    assert encode(sequence)[0] == stream  # deterministic


@settings(max_examples=100, deadline=None)
@given(sequence=steps)
def test_metered_encoder_writes_the_same_stream(sequence):
    plain, _ = encode(sequence)
    coder = MeteredEncoder()
    metered, _ = encode(sequence, coder)
    assert metered == plain
    assert coder.bits >= 0
    # a coder pays at least the ideal length (range truncation only adds), and the flush adds more
    assert coder.bits <= 8 * len(plain)


def test_range_coder_compresses_predictable_bits():
    encoder, table = RangeEncoder(), new_table(1)
    for _ in range(100_000):
        encoder.bit(table, 0, 0)
    assert len(encoder.finish()) < 100_000 * 0.0015 / 8 + 16  # ~0.0014 bits per bit at the probability floor


def test_one_bit_never_costs_more_than_about_ten_bits():
    """The probability floor (63 / 2**16) bounds what a surprise costs, however long a context was sure."""
    table, metered = new_table(1), MeteredEncoder()
    for _ in range(10_000):
        metered.bit(table, 0, 0)
    before = metered.bits
    metered.bit(table, 0, 1)
    assert 9.0 < metered.bits - before < -math.log2(63 / 2**16) + 1e-9
    stream = metered.finish()
    decoder, table = RangeDecoder(stream), new_table(1)
    assert [decoder.bit(table, 0) for _ in range(10_001)] == [0] * 10_000 + [1]


def test_uniform_values_cost_their_width():
    rng = np.random.default_rng(5)
    encoder, values = RangeEncoder(), rng.integers(0, 1 << 16, 5000).tolist()
    for value in values:
        encoder.uniform(16, value)
    stream = encoder.finish()
    assert 2 * len(values) <= len(stream) <= 2 * len(values) + 5
    decoder = RangeDecoder(stream)
    assert [decoder.uniform(16) for _ in values] == values


def test_range_decoder_reports_the_end_of_the_stream():
    decoder, table = RangeDecoder(bytes([0x80, 0, 0, 0])), new_table(1)
    with pytest.raises(StreamError, match="ends after 4 bytes"):
        for _ in range(100):
            decoder.bit(table, 0)


@pytest.mark.parametrize(("data", "match"), [(b"", "at least 4 bytes, got 0"), (b"\x00\x00\x00", "got 3"),
                                             (b"\xff\xff\xff\xff", "ff ff ff ff")])
def test_streams_no_encoder_writes_are_rejected(data, match):
    with pytest.raises(StreamError, match=match):
        RangeDecoder(data)


def test_a_uniform_value_in_the_unused_tail_of_the_range_is_rejected():
    # code 0xfffffffe with a range of 0xffffffff: 16-bit steps of 0xffff put it at value 0x10000
    with pytest.raises(StreamError, match="16-bit uniform value decodes to 65536, out of range"):
        RangeDecoder(b"\xff\xff\xff\xfe").uniform(16)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64), sequence=steps)
def test_arbitrary_bytes_decode_or_raise_stream_error(data, sequence):
    """Whatever the bytes, a decoder gives values in range or a StreamError, never anything else."""
    try:
        values, _, decoder = decode(data, sequence)
    except StreamError:
        return
    assert all(0 <= value < (2 if kind == "bit" else 1 << a) for value, (kind, a, _) in zip(values, sequence))
    assert decoder.position <= len(data)


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
