"""Codec "layout-rc": exact round trips against a pool layout, the layout contract (missing, foreign, malformed),
a frozen format, size against context-rc2, and clean, bounded failure on hostile bytes.

Hostile bodies are wrapped in a header with a valid checksum (``forge``) and, where the point is to reach the
range decoder, start with the right layout digest: what an attacker who knows the pool can send.
"""

from __future__ import annotations

import hashlib
import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plada_core.codecs.layout_rc import DIGEST_SIZE, code_lengths, layout_digest, merge_short_blocks
from plada_core.payload import (
    AUTO,
    CODECS,
    HEADER_SIZE,
    PayloadError,
    decode_payload,
    encode_payload,
    needs_layout,
    read_header,
    uses_layout,
)
from plada_core.simulator import simulate_layout, simulate_selections

FP = "0123456789abcdef" * 4
CODEC = "layout-rc"
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def encode(indices, labels, n: int, c: int, layout, codec: str = CODEC) -> bytes:
    return encode_payload(indices, labels, n_reference=n, n_classes=c, fingerprint=FP, codec=codec, layout=layout)


def forge(body: bytes, *, n: int, k: int, c: int) -> bytes:
    fields = struct.pack("<6sBB32sQQII", b"PLADA\x00", 1, CODECS[CODEC].codec_id, bytes.fromhex(FP), n, k, c, len(body))
    return fields + hashlib.blake2b(fields + body, digest_size=8).digest() + body


def decodes_or_fails_cleanly(data: bytes, layout, n: int, k: int, c: int) -> None:
    try:
        payload = decode_payload(data, layout=layout)
    except PayloadError:
        return
    assert payload.k == k and payload.codec == CODEC
    assert np.all(np.diff(payload.indices) > 0)
    assert np.all((payload.indices >= 0) & (payload.indices < n))
    assert np.all((payload.labels >= 0) & (payload.labels < c))


def random_layout(rng: np.random.Generator, n: int) -> np.ndarray:
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, int(rng.integers(0, 12))), replace=False))
    return np.diff(np.concatenate(([0], cuts, [n])))


@st.composite
def selections(draw, max_n: int = 3000):
    """(indices, labels, n, c, layout): blocks of varied density and purity, the layout their boundaries or not."""
    n = draw(st.integers(1, max_n))
    c = draw(st.sampled_from([1, 2, 10, 100, 1_000_000]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    layout = random_layout(rng, n)
    block_of = np.repeat(np.arange(layout.size), layout)
    density = rng.random(layout.size) * draw(st.sampled_from([0.0, 0.01, 0.3, 1.0]))
    chosen = np.flatnonzero(rng.random(n) < density[block_of])
    mode = rng.integers(0, c, layout.size)[block_of[chosen]]
    noise = rng.random(chosen.size) < draw(st.sampled_from([0.0, 0.2, 0.7]))
    labels = np.where(noise, rng.integers(0, c, chosen.size), mode)
    if draw(st.booleans()):  # a layout unrelated to where the selection clusters still round-trips
        layout = random_layout(rng, n)
    return chosen, labels, n, c, layout


# ---------------------------------------------------------------- round trips


@SETTINGS
@given(selections())
def test_round_trip(selection):
    indices, labels, n, c, layout = selection
    payload = decode_payload(encode(indices, labels, n, c, layout), layout=layout)
    assert payload.indices.tolist() == indices.tolist() and payload.labels.tolist() == labels.tolist()
    assert payload.codec == CODEC


@pytest.mark.parametrize(
    ("indices", "labels", "n", "c", "layout"),
    [
        ([], [], 10, 3, [10]),  # nothing kept: the body is the layout digest alone
        ([0], [0], 1, 1, [1]),
        ([*range(50)], [2] * 50, 50, 3, [20, 30]),  # every image kept: positions cost nothing
        ([0, 9, 10, 19], [0, 1, 1, 0], 20, 2, [10, 10]),  # first and last image of each block
        ([2**40 - 2, 2**40 - 1], [5, 4], 2**40, 1_000_000, [2**39, 2**39]),  # huge pool and class count
    ],
)
def test_edge_selections_round_trip(indices, labels, n, c, layout):
    payload = decode_payload(encode(indices, labels, n, c, layout), layout=layout)
    assert payload.indices.tolist() == indices and payload.labels.tolist() == labels


def test_runs_shorter_than_8_are_merged_into_one_block():
    merged = merge_short_blocks(np.array([3, 2, 10, 1, 1, 1, 9, 7, 8, 2**40]))
    assert merged.tolist() == [5, 10, 3, 9, 7, 8, 2**40]
    assert merge_short_blocks(np.array([1])).tolist() == [1] and merge_short_blocks(np.array([8])).tolist() == [8]


def test_empty_selection_body_is_the_layout_digest():
    data = encode([], [], 10, 3, [4, 6])
    assert data[HEADER_SIZE:] == layout_digest(np.array([4, 6]))


def test_full_blocks_are_padded_to_the_work_bound():
    data = encode(np.arange(2000), np.zeros(2000, dtype=int), 2000, 1, [2000])
    assert len(data) - HEADER_SIZE == DIGEST_SIZE + (2000 - 64) // 8  # one bit per image beyond the first 64


def test_code_lengths_add_up_to_the_body():
    sel = simulate_selections((0.01,), n_classes=50, layout=simulate_layout(0, n_reference=200_000, n_blocks=300))[0.01]
    positions, labels = code_lengths(sel.indices, sel.labels, n_reference=sel.n_reference, n_classes=50,
                                     layout=sel.layout.sizes)
    body_bits = 8 * (len(encode(sel.indices, sel.labels, sel.n_reference, 50, sel.layout.sizes)) - HEADER_SIZE
                     - DIGEST_SIZE)
    assert positions > 0 and labels > 0
    assert positions + labels == pytest.approx(body_bits, abs=48)  # the coder's flush bytes


# ---------------------------------------------------------------- the layout contract


def test_encoding_needs_a_layout_that_fits_the_pool():
    with pytest.raises(ValueError, match="codes positions against the pool's block layout: pass layout="):
        encode_payload([1], [0], n_reference=10, n_classes=2, fingerprint=FP, codec=CODEC)
    with pytest.raises(ValueError, match="sum to 9 but the pool has N=10"):
        encode([1], [0], 10, 2, [4, 5])
    with pytest.raises(ValueError, match="layout block 1 has size 0"):
        encode([1], [0], 10, 2, [10, 0])
    with pytest.raises(ValueError, match="integer block sizes"):
        encode([1], [0], 10, 2, [4.0, 6.0])
    assert len(encode([1], [0], 10, 2, None, codec="context-rc2")) > HEADER_SIZE  # other codecs ignore it


def test_decoding_names_a_missing_or_foreign_layout():
    data = encode([1, 2, 7], [0, 0, 1], 10, 2, [5, 5])
    with pytest.raises(PayloadError, match="pass the local pool's layout"):
        decode_payload(data)
    with pytest.raises(PayloadError, match="coded against another pool layout .*decode it on a client holding"):
        decode_payload(data, layout=[4, 6])  # same N, other blocks: never silently wrong labels
    with pytest.raises(PayloadError, match="local layout does not fit this payload: .*sum to 12"):
        decode_payload(data, layout=[6, 6])
    assert decode_payload(data, layout=np.array([5, 5], dtype=np.uint32)).indices.tolist() == [1, 2, 7]


def test_auto_keeps_the_smallest_payload_of_the_codecs_that_can_run():
    layout = simulate_layout(0, n_reference=200_000, n_blocks=300)
    sel = simulate_selections((0.01,), n_classes=50, layout=layout)[0.01]
    args = (sel.indices, sel.labels, sel.n_reference, 50)
    sizes = {codec: len(encode(*args, layout.sizes, codec=codec)) for codec in CODECS}
    with_layout, without = encode(*args, layout.sizes, codec=AUTO), encode(*args, None, codec=AUTO)
    assert len(with_layout) == min(sizes.values()) and read_header(with_layout)["codec"] == CODEC
    assert len(without) == min(size for codec, size in sizes.items() if codec != CODEC)  # no layout: not tried
    assert read_header(without)["codec"] == "context-rc2"
    assert uses_layout(AUTO) and uses_layout(CODEC) and not uses_layout("context-rc2") and not uses_layout("gzip")
    assert needs_layout(with_layout) and not needs_layout(without) and not needs_layout(b"garbage")


def test_header_names_the_codec():
    header = read_header(encode([1, 5], [0, 1], 10, 2, [10]))
    assert (header["codec"], header["codec_id"]) == (CODEC, 4)


# Frozen format: this payload must decode the same forever. If the model changes, register a new codec id.
GOLDEN_LAYOUT = [30, 70, 3, 2, 1, 4994, 4900, 89_990, 10]
GOLDEN = (  # N = 100,000, C = 10: a small block, an empty one, short ones merged, a dense run across them,
    # a sparse block, a full one
    [3, 4, 5, 9, *range(100, 118), 2000, 4000, *range(5100, 5134)] + [*range(99_990, 100_000)],
    [1, 1, 1, 0] + [2] * 18 + [3, 2] + [4] * 30 + [5, 4, 6, 4] + [9] * 9 + [8],
    bytes.fromhex("f8f4cff43c98d9f363023809bbebab218cae9a4477f24e350a1a7198776b00b69ae3528000"),
)


def test_golden_payload_still_decodes():
    indices, labels, body = GOLDEN
    payload = decode_payload(forge(body, n=100_000, k=len(indices), c=10), layout=GOLDEN_LAYOUT)
    assert payload.indices.tolist() == indices and payload.labels.tolist() == labels


def test_encoder_still_writes_the_golden_payload():
    indices, labels, body = GOLDEN
    assert encode(indices, labels, 100_000, 10, GOLDEN_LAYOUT)[HEADER_SIZE:] == body


# ---------------------------------------------------------------- size


def test_smaller_than_context_rc2_on_a_simulated_pool():
    layout = simulate_layout(0, n_reference=500_000, n_blocks=800)
    for keep, selection in simulate_selections((0.01, 0.001), n_classes=50, layout=layout).items():
        args = (selection.indices, selection.labels, selection.n_reference, 50, layout.sizes)
        rc2, lrc = (len(encode(*args, codec=codec)) for codec in ("context-rc2", CODEC))
        assert lrc < (0.97 if keep == 0.01 else 1.0) * rc2  # 500 images at 0.1 %: the digest and 800 zero bits weigh


# ---------------------------------------------------------------- hostile bytes


@pytest.fixture(scope="module")
def sample() -> tuple[bytes, np.ndarray]:
    """(a valid payload, its layout): a dense block with a usual label, noise, and scattered images."""
    rng = np.random.default_rng(7)
    layout = np.array([1000, 400, 3600, 15_000])
    indices = np.unique(np.concatenate([np.arange(1000, 1400), rng.choice(20_000, 200, replace=False)]))
    labels = np.where(rng.random(indices.size) < 0.9, 3, rng.integers(0, 20, indices.size))
    return encode(indices, labels, 20_000, 20, layout), layout


def test_every_truncation_is_rejected(sample):
    data, layout = sample
    header = read_header(data)
    body = data[HEADER_SIZE:]
    for end in range(0, len(data), 7):
        with pytest.raises(PayloadError, match="truncated"):
            decode_payload(data[:end], layout=layout)
    for end in range(len(body)):
        with pytest.raises(PayloadError):
            decode_payload(forge(body[:end], n=header["n_reference"], k=header["k"], c=header["n_classes"]),
                           layout=layout)


@SETTINGS
@given(data=st.data())
def test_bit_flips_are_rejected_or_decode_within_contract(sample, data):
    payload, layout = sample
    header = read_header(payload)
    flipped = bytearray(payload)
    for bit in data.draw(st.lists(st.integers(8 * HEADER_SIZE, 8 * len(payload) - 1), min_size=1, max_size=4,
                                  unique=True)):
        flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(PayloadError):  # the checksum sees every flip
        decode_payload(bytes(flipped), layout=layout)
    n, k, c = header["n_reference"], header["k"], header["n_classes"]
    decodes_or_fails_cleanly(forge(bytes(flipped[HEADER_SIZE:]), n=n, k=k, c=c), layout, n, k, c)


@SETTINGS
@given(data=st.data())
def test_mutated_streams_fail_cleanly(sample, data):
    """Inserted, deleted and overwritten byte ranges after the (intact) layout digest."""
    payload, layout = sample
    body = bytearray(payload[HEADER_SIZE:])
    start = data.draw(st.integers(DIGEST_SIZE, len(body)))
    stop = data.draw(st.integers(start, min(len(body), start + 16)))
    body[start:stop] = data.draw(st.binary(max_size=16))
    header = read_header(payload)
    n, c = header["n_reference"], header["n_classes"]
    k = data.draw(st.sampled_from([header["k"], header["k"] + 1, header["k"] - 1, 0, 1]))
    decodes_or_fails_cleanly(forge(bytes(body), n=n, k=k, c=c), layout, n, k, c)


@settings(max_examples=100, deadline=None)
@given(stream=st.binary(max_size=200), k=st.integers(0, 2000), c=st.sampled_from([1, 2, 10, 1_000_000]),
       seed=st.integers(0, 2**32 - 1))
def test_random_streams_fail_cleanly_and_fast(stream, k, c, seed):
    n = 5000
    layout = random_layout(np.random.default_rng(seed), n)
    start = time.perf_counter()
    decodes_or_fails_cleanly(forge(layout_digest(layout) + stream, n=n, k=min(k, n), c=c), layout, n, min(k, n), c)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("body", "k", "match"),
    [
        (b"", 1, "fewer than the 8-byte layout digest"),
        (bytes(8), 1, "coded against another pool layout"),
        ("digest", 0, None),
        ("digest+1", 0, "k=0 but 1 bytes follow the layout digest"),
        ("digest+10", 200, "need at least 17 bytes after the layout digest, got 10"),
    ],
)
def test_forged_bodies_name_the_problem(body, k, match):
    layout = np.array([10, 19_990])
    digest = layout_digest(layout)
    body = {"digest": digest, "digest+1": digest + b"\x00", "digest+10": digest + bytes(10)}.get(body, body)
    data = forge(body, n=20_000, k=k, c=3)
    if match is None:
        assert decode_payload(data, layout=layout).k == 0
        return
    with pytest.raises(PayloadError, match=match):
        decode_payload(data, layout=layout)


def test_counts_beyond_k_are_rejected(sample):
    payload, layout = sample
    header = read_header(payload)
    with pytest.raises(PayloadError, match="claims .* kept images but only|the blocks hold"):
        decode_payload(forge(payload[HEADER_SIZE:], n=header["n_reference"], k=header["k"] - 1,
                             c=header["n_classes"]), layout=layout)


@pytest.mark.parametrize("fill", [0x00, 0x55, 0xFE])
def test_largest_k_a_body_allows_decodes_in_bounded_time(fill):
    """The decompression-bomb shape: the most images a 4 KB body may claim, on a layout of many blocks."""
    layout = np.full(20_000, 1000)
    n = int(layout.sum())
    body = layout_digest(layout) + bytes([fill]) * 4096
    k = 8 * 4096 + 64
    start = time.perf_counter()
    decodes_or_fails_cleanly(forge(body, n=n, k=k, c=1_000_000), layout, n, k, 1_000_000)
    assert time.perf_counter() - start < 2.0
