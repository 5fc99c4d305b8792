"""Codec "layout-rc": block merging, the digest and padding, the layout's own error messages, a frozen format,
size against context-rc2, and the messages its decoder gives for hostile bodies. What every codec must survive
(layout codecs included: missing, foreign and misfit layouts) is in ``test_codec_contract.py``.

Hostile bodies are wrapped in a header with a valid checksum (``forge``) and, where the point is to reach the
range decoder, start with the right layout digest: what an attacker who knows the pool can send.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from plada_core.codecs import CODECS
from plada_core.codecs.layout_rc import DIGEST_SIZE, code_lengths, layout_digest, merge_short_blocks
from plada_core.payload import HEADER_SIZE, PayloadError, decode_payload, encode_payload, read_header
from plada_core.simulator import simulate_layout, simulate_selections

FP = "0123456789abcdef" * 4
CODEC = "layout-rc"


def encode(indices, labels, n: int, c: int, layout, codec: str = CODEC) -> bytes:
    return encode_payload(indices, labels, n_reference=n, n_classes=c, fingerprint=FP, codec=codec, layout=layout)


def forge(body: bytes, *, n: int, k: int, c: int) -> bytes:
    fields = struct.pack("<6sBB32sQQII", b"PLADA\x00", 1, CODECS[CODEC].codec_id, bytes.fromhex(FP), n, k, c, len(body))
    return fields + hashlib.blake2b(fields + body, digest_size=8).digest() + body


# ---------------------------------------------------------------- format details


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


# ---------------------------------------------------------------- the layout's own messages


def test_a_layout_that_does_not_fit_the_pool_is_named():
    with pytest.raises(ValueError, match="sum to 9 but the pool has N=10"):
        encode([1], [0], 10, 2, [4, 5])
    with pytest.raises(ValueError, match="layout block 1 has size 0"):
        encode([1], [0], 10, 2, [10, 0])
    with pytest.raises(ValueError, match="integer block sizes"):
        encode([1], [0], 10, 2, [4.0, 6.0])


def test_decoding_names_a_foreign_layout():
    data = encode([1, 2, 7], [0, 0, 1], 10, 2, [5, 5])
    with pytest.raises(PayloadError, match="coded against another pool layout .*decode it on a client holding"):
        decode_payload(data, layout=[4, 6])  # same N, other blocks: never silently wrong labels
    with pytest.raises(PayloadError, match="local layout does not fit this payload: .*sum to 12"):
        decode_payload(data, layout=[6, 6])


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
