"""Range-coded codecs "context-rc" and "context-rc2" (``context_rc``, ``confusion_rc``): the work bound and its
padding, frozen formats, size and speed, and the messages their decoder gives for hostile bodies. What every
codec must survive is in ``test_codec_contract.py``; the range coder itself is in ``test_rangecoder.py``.

Hostile bodies are wrapped in a header with a valid checksum (``forge``), so they reach the codec's own
decoder instead of stopping at the checksum, which is what an attacker can do.
"""

from __future__ import annotations

import hashlib
import struct
import time

import numpy as np
import pytest

from plada_core.codecs import CODECS
from plada_core.codecs.context_rc import min_body_length
from plada_core.payload import HEADER_SIZE, PayloadError, decode_payload, encode_payload, read_header
from plada_core.simulator import simulate_layout, simulate_selections

FP = "0123456789abcdef" * 4
BIG = 2**63 - 1
RC_CODECS = ["context-rc", "context-rc2"]


def encode(indices, labels, n: int, c: int, codec: str) -> bytes:
    return encode_payload(indices, labels, n_reference=n, n_classes=c, fingerprint=FP, codec=codec)


def forge(body: bytes, *, n: int, k: int, c: int, codec: str) -> bytes:
    """A ``codec`` payload with a valid checksum around any body and counts."""
    codec_id = CODECS[codec].codec_id
    fields = struct.pack("<6sBB32sQQII", b"PLADA\x00", 1, codec_id, bytes.fromhex(FP), n, k, c, len(body))
    return fields + hashlib.blake2b(fields + body, digest_size=8).digest() + body


def body_of(payload: bytes) -> bytes:
    return payload[HEADER_SIZE:]


# ---------------------------------------------------------------- the work bound


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
def test_bodies_are_at_least_the_work_bound(codec, indices, labels, n, c):
    assert len(body_of(encode(indices, labels, n, c, codec))) >= min_body_length(len(indices))


@pytest.mark.parametrize("codec", RC_CODECS)
def test_empty_selection_has_an_empty_body(codec):
    assert body_of(encode([], [], 10, 3, codec)) == b""


@pytest.mark.parametrize("codec", RC_CODECS)
def test_trivial_selection_is_padded_to_the_work_bound(codec):
    data = encode(np.arange(10_000), np.zeros(10_000, dtype=int), 10_000, 1, codec)
    body = body_of(data)
    assert len(body) == min_body_length(10_000) == (10_000 - 64 + 7) // 8
    assert body.endswith(bytes(100))  # the stream itself is a few bytes; the rest is zero padding


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
