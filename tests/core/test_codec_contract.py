"""The contract every registered codec meets, run for each entry of ``CODECS``: exact round trips, and clean,
bounded failure on hostile bytes (truncation at every byte, bit flips, forged header counts, oversize bodies and
decompression bombs, another pool, another layout), in payload format 1 and in format 2, whose class-names
section gets the same treatment (truncation, bit flips, forged name counts, hostile names, a bomb).

Hostile bodies are wrapped in a header with a valid checksum (``forge``), so they reach the codec's own decoder
instead of stopping at the checksum, which is what an attacker can do. A codec's *preamble* is the body it writes
for an empty selection (the layout digest for "layout-rc", nothing for "context-rc"): hostile bodies that start
with it get past a codec's first check. Every selection comes with a layout; codecs that do not code against
one ignore it. Codec-specific checks (exact sizes, golden bytes, format details, the codec's own wording) live
in the codec's test file.
"""

from __future__ import annotations

import hashlib
import re
import struct
import time
import unicodedata

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plada_core.codecs import CODECS
from plada_core.payload import HEADER_SIZE, Payload, PayloadError, decode_payload, encode_payload, read_header

FP = "0123456789abcdef" * 4
OTHER_FP = "fedcba9876543210" * 4
BIG = 2**63 - 1
ALL = list(CODECS)
WITH_LAYOUT = [name for name, codec in CODECS.items() if codec.needs_layout]
WITHOUT_LAYOUT = [name for name, codec in CODECS.items() if not codec.needs_layout]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def encode(indices, labels, n: int, c: int, codec: str, layout) -> bytes:
    return encode_payload(indices, labels, n_reference=n, n_classes=c, fingerprint=FP, codec=codec, layout=layout)


def forge(body: bytes, *, n: int, k: int, c: int, codec: str, names: bytes | None = None, version: int = 2) -> bytes:
    """A ``codec`` payload with a valid checksum around any body and counts; format ``version`` (2, or 3: with the
    recipe line) with a ``names`` section, else format 1."""
    version, names = (1, b"") if names is None else (version, names)
    fields = struct.pack("<6sBB32sQQII", b"PLADA\x00", version, CODECS[codec].codec_id, bytes.fromhex(FP), n, k, c,
                         len(body))
    return fields + hashlib.blake2b(fields + names + body, digest_size=8).digest() + names + body


def names_section(text: bytes, encoding: int = 0) -> bytes:
    """A class-names section around ``text`` (stored, or already a zstd frame with ``encoding=1``)."""
    return struct.pack("<BI", encoding, len(text)) + text


def class_names(c: int) -> list[str]:
    return [f"class {i}" for i in range(c)]


def preamble(codec: str, n: int, c: int, layout) -> bytes:
    return encode([], [], n, c, codec, layout)[HEADER_SIZE:]


def random_layout(rng: np.random.Generator, n: int) -> np.ndarray:
    """Block sizes summing to ``n``: up to 11 cuts anywhere (any ``n``, up to 2**63 - 1)."""
    cuts = np.unique(rng.integers(1, n, size=int(rng.integers(0, 12)))) if n > 1 else np.empty(0, np.int64)
    return np.diff(np.concatenate(([0], cuts, [n])))


def assert_round_trip(indices, labels, n: int, c: int, codec: str, layout) -> Payload:
    payload = decode_payload(encode(indices, labels, n, c, codec, layout), layout=layout)
    order = np.argsort(np.asarray(indices, dtype=np.int64), kind="stable")
    np.testing.assert_array_equal(payload.indices, np.asarray(indices, dtype=np.int64)[order])
    np.testing.assert_array_equal(payload.labels, np.asarray(labels, dtype=np.int64)[order])
    assert payload.indices.dtype == np.int64 and payload.labels.dtype == np.int32
    assert (payload.n_reference, payload.n_classes, payload.fingerprint, payload.codec) == (n, c, FP, codec)
    assert payload.k == len(order)
    return payload


def decodes_or_fails_cleanly(data: bytes, n: int, k: int, c: int, codec: str, layout) -> None:
    """A PayloadError, or a payload meeting the contract any successful decode must meet, even of forged bytes."""
    try:
        payload = decode_payload(data, layout=layout)
    except PayloadError:
        return
    assert payload.k == k and payload.codec == codec
    assert np.all(np.diff(payload.indices) > 0)
    assert np.all((payload.indices >= 0) & (payload.indices < n))
    assert np.all((payload.labels >= 0) & (payload.labels < c))
    if payload.class_names is not None:
        assert_valid_names(payload.class_names, payload.task, payload.version, c)


def assert_valid_names(names, task, version, c: int) -> None:
    """What any decoded names section holds, even a forged one: the documented limits."""
    assert isinstance(names, tuple) and len(names) == c
    for name in names:
        assert name and len(name.encode()) <= 256 and not any(unicodedata.category(ch) == "Cc" for ch in name)
    for label in (task, version):
        assert label is None or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", label)


@st.composite
def selections(draw, max_n: int = 3000):
    """(indices, labels, n, c, layout): scattered, one thinned block with sorted labels, or blocks of varied
    density and label noise; the layout is the blocks' boundaries or unrelated to them."""
    n = draw(st.integers(1, max_n))
    c = draw(st.one_of(st.integers(1, 300), st.sampled_from([1000, 1_000_000])))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    layout = random_layout(rng, n)
    shape = draw(st.sampled_from(["scattered", "one block", "blocks"]))
    if shape == "blocks":
        block_of = np.repeat(np.arange(layout.size), layout)
        density = rng.random(layout.size) * draw(st.sampled_from([0.0, 0.01, 0.2, 0.3, 0.7, 1.0]))
        chosen = np.flatnonzero(rng.random(n) < density[block_of])
        mode = rng.integers(0, c, layout.size)[block_of[chosen]]
        noise = rng.random(chosen.size) < draw(st.sampled_from([0.0, 0.1, 0.2, 0.5, 0.7]))
        labels = np.where(noise, rng.integers(0, c, chosen.size), mode)
    else:
        k = round(n * draw(st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.0])))
        if shape == "scattered" or k == 0:
            chosen, labels = rng.choice(n, size=k, replace=False), rng.integers(0, c, k)
        else:  # one contiguous synset-like block, thinned a little, the rest anywhere; labels in runs
            start = int(rng.integers(0, n - k + 1))
            block = np.arange(start, start + k)
            keep = rng.random(k) < 0.8
            extra = rng.choice(np.setdiff1d(np.arange(n), block[keep]), size=k - int(keep.sum()), replace=False)
            chosen, labels = np.concatenate([block[keep], extra]), np.sort(rng.integers(0, c, k))
    if draw(st.booleans()):  # a layout unrelated to where the selection clusters still round-trips
        layout = random_layout(rng, n)
    return chosen, labels, n, c, layout


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("codec", ALL)
@MANY
@given(selection=selections())
def test_round_trip(codec, selection):
    indices, labels, n, c, layout = selection
    assert_round_trip(indices, labels, n, c, codec, layout)


@pytest.mark.parametrize("codec", ALL)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_round_trip_extreme_values(codec, data):
    n = data.draw(st.sampled_from([2**32 + 5, 2**62, BIG]))
    chosen = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=40))
    labels = data.draw(st.lists(st.integers(0, 999_999), min_size=len(chosen), max_size=len(chosen)))
    cut = data.draw(st.integers(1, n - 1))
    assert_round_trip(chosen, labels, n, 1_000_000, codec, [cut, n - cut])


EDGES = [  # (indices, labels, n, c, layout)
    ([], [], 10, 3, [10]),  # nothing kept
    ([], [], 10, 3, [4, 6]),
    ([0], [0], 1, 1, [1]),
    ([0, 1, 2], [0, 0, 0], 3, 1, [3]),  # index 0 and a leading run
    (np.array([0, 1, BIG - 2, BIG - 1], dtype=np.uint64), [0, 999_999, 5, 999_999], BIG, 1_000_000, [BIG]),
    ([0, BIG - 1], [0, 999_999], BIG, 1_000_000, [1, BIG - 1]),
    ([2**40 - 2, 2**40 - 1], [5, 4], 2**40, 1_000_000, [2**39, 2**39]),  # huge pool and class count
    (list(range(100)), [5] * 100, 100, 7, [100]),  # full pool, one label
    (np.arange(1000)[::-1], np.arange(1000) % 7, 1000, 7, [300, 700]),  # full pool, given in reverse
    ([*range(50)], [2] * 50, 50, 3, [20, 30]),  # every image of every block kept
    ([0, 9, 10, 19], [0, 1, 1, 0], 20, 2, [10, 10]),  # first and last image of each block
    (list(range(0, 100_000, 2)), [1] * 50_000, 100_000, 2, [100_000]),
]


@pytest.mark.parametrize(("indices", "labels", "n", "c", "layout"), EDGES)
@pytest.mark.parametrize("codec", ALL)
def test_edge_selections_round_trip(codec, indices, labels, n, c, layout):
    assert_round_trip(indices, labels, n, c, codec, layout)


@pytest.mark.parametrize("codec", ALL)
@MANY
@given(data=st.data(), n=st.integers(1, 500), c=st.integers(1, 20))
def test_input_order_does_not_matter(codec, data, n, c):
    chosen = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
    labels = data.draw(st.lists(st.integers(0, c - 1), min_size=len(chosen), max_size=len(chosen)))
    pairs = list(zip(chosen, labels))
    shuffled = data.draw(st.permutations(pairs))
    layout = [n]

    def encode_pairs(ps):
        return encode([i for i, _ in ps], [label for _, label in ps], n, c, codec, layout)

    assert encode_pairs(pairs) == encode_pairs(shuffled) == encode_pairs(sorted(pairs))
    assert_round_trip(chosen, labels, n, c, codec, layout)


@pytest.mark.parametrize("codec", ALL)
def test_encoding_is_deterministic_and_order_free(codec):
    rng = np.random.default_rng(1)
    indices = rng.choice(5000, 300, replace=False)
    labels = rng.integers(0, 9, 300)
    order = rng.permutation(300)
    layout = [1000, 2500, 1500]
    assert encode(indices, labels, 5000, 9, codec, layout) == encode(indices[order], labels[order], 5000, 9, codec,
                                                                     layout)


@pytest.mark.parametrize("codec", ALL)
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
    starts = indices[gaps >= 256]  # the blocks start at the long gaps
    layout = np.diff(np.concatenate(([0], starts[starts > 0], [n])))
    payload = decode_payload(encode(indices, values, n, labels, codec, layout), layout=layout)
    np.testing.assert_array_equal(payload.indices, indices)
    np.testing.assert_array_equal(payload.labels, values)


@pytest.mark.parametrize("codec", ALL)
def test_header_names_the_codec(codec):
    header = read_header(encode([1, 5], [0, 1], 10, 2, codec, [10]))
    assert (header["codec"], header["codec_id"]) == (codec, CODECS[codec].codec_id)


@pytest.mark.parametrize("codec", ALL)
def test_decoded_arrays_are_read_only(codec):
    payload = decode_payload(encode([3, 4, 5, 9, 40], [1, 1, 0, 2, 2], 50, 3, codec, [10, 40]), layout=[10, 40])
    with pytest.raises(ValueError, match="read-only"):
        payload.indices[0] = 1
    with pytest.raises(ValueError, match="read-only"):
        payload.labels[0] = 1


# ---------------------------------------------------------------- hostile bytes

SAMPLE_LAYOUT = np.array([1000, 400, 3600, 15_000])


@pytest.fixture(scope="module", params=ALL)
def sample(request) -> tuple[str, bytes]:
    """(codec, a valid payload of it on SAMPLE_LAYOUT): a dense block with a usual label, noise, scattered images."""
    rng = np.random.default_rng(7)
    indices = np.unique(np.concatenate([np.arange(1000, 1400), rng.choice(20_000, 200, replace=False)]))
    labels = np.where(rng.random(indices.size) < 0.9, 3, rng.integers(0, 20, indices.size))
    return request.param, encode(indices, labels, 20_000, 20, request.param, SAMPLE_LAYOUT)


def small_payload(codec: str) -> bytes:
    return encode([3, 4, 5, 9, 40], [1, 1, 0, 2, 2], 50, 3, codec, [10, 40])


def test_every_truncation_is_rejected(sample):
    codec, data = sample
    header = read_header(data)
    body = data[HEADER_SIZE:]
    for end in range(len(data)):
        with pytest.raises(PayloadError, match="truncated"):
            decode_payload(data[:end], layout=SAMPLE_LAYOUT)
    for end in range(len(body)):  # past the checksum too: a truncated body in a re-checksummed payload
        with pytest.raises(PayloadError):
            decode_payload(forge(body[:end], n=header["n_reference"], k=header["k"], c=header["n_classes"],
                                 codec=codec), layout=SAMPLE_LAYOUT)


@pytest.mark.parametrize("codec", ALL)
def test_every_truncation_of_a_small_payload_is_rejected(codec):
    data = small_payload(codec)
    for end in range(len(data)):
        with pytest.raises(PayloadError, match="truncated"):
            decode_payload(data[:end], layout=[10, 40])


@pytest.mark.parametrize("codec", ALL)
def test_every_single_bit_flip_is_rejected(codec):
    data = small_payload(codec)
    for bit in range(8 * len(data)):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(PayloadError):
            decode_payload(bytes(flipped), layout=[10, 40])


@SETTINGS
@given(data=st.data())
def test_bit_flips_are_rejected_or_decode_within_contract(sample, data):
    codec, payload = sample
    header = read_header(payload)
    n, k, c = header["n_reference"], header["k"], header["n_classes"]
    for low in (0, 8 * HEADER_SIZE):  # anywhere, then inside the body only
        flipped = bytearray(payload)
        for bit in data.draw(st.lists(st.integers(low, 8 * len(payload) - 1), min_size=1, max_size=4, unique=True)):
            flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(PayloadError):  # the checksum sees every flip
            decode_payload(bytes(flipped), layout=SAMPLE_LAYOUT)
        forged = forge(bytes(flipped[HEADER_SIZE:]), n=n, k=k, c=c, codec=codec)
        decodes_or_fails_cleanly(forged, n, k, c, codec, SAMPLE_LAYOUT)


@pytest.mark.parametrize("codec", ALL)
@MANY
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 2000))
def test_random_bit_flip_in_random_payload(codec, seed, n):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(0, n + 1))
    layout = random_layout(rng, n)
    data = bytearray(encode(rng.choice(n, k, replace=False), rng.integers(0, 5, k), n, 5, codec, layout))
    bit = int(rng.integers(0, 8 * len(data)))
    data[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(PayloadError):
        decode_payload(bytes(data), layout=layout)


@SETTINGS
@given(data=st.data())
def test_mutated_bodies_fail_cleanly(sample, data):
    """Inserted, deleted and overwritten byte ranges inside a valid-checksum payload, anywhere in the body or
    after the codec's preamble, under the true image count and forged ones."""
    codec, payload = sample
    header = read_header(payload)
    n, c = header["n_reference"], header["n_classes"]
    body = bytearray(payload[HEADER_SIZE:])
    lead = bytes(preamble(codec, n, c, SAMPLE_LAYOUT))
    kept = 0
    while kept < min(len(lead), len(body)) and lead[kept] == body[kept]:
        kept += 1
    start = data.draw(st.integers(data.draw(st.sampled_from([0, kept])), len(body)))
    stop = data.draw(st.integers(start, min(len(body), start + 16)))
    body[start:stop] = data.draw(st.binary(max_size=16))
    k = data.draw(st.sampled_from([header["k"], header["k"] + 1, header["k"] - 1, 0, 1]))
    decodes_or_fails_cleanly(forge(bytes(body), n=n, k=k, c=c, codec=codec), n, k, c, codec, SAMPLE_LAYOUT)


@pytest.mark.parametrize("codec", ALL)
@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=200), n=st.sampled_from([1, 7, 5000, 2**40, BIG]), k=st.integers(0, 2000),
       c=st.sampled_from([1, 2, 10, 1_000_000]), after_preamble=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_random_bodies_fail_cleanly_and_fast(codec, body, n, k, c, after_preamble, seed):
    k = min(k, n)
    layout = random_layout(np.random.default_rng(seed), n)
    if after_preamble:
        body = preamble(codec, n, c, layout) + body
    start = time.perf_counter()
    decodes_or_fails_cleanly(forge(body, n=n, k=k, c=c, codec=codec), n, k, c, codec, layout)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("counts", "match"),
    [
        (dict(k=20_001), "k=20001 selected images but the pool has only N=20000"),
        (dict(n=0, k=0), "N=0"),
        (dict(c=0), "C=0 classes"),
        (dict(c=1_000_001), "C=1000001 classes"),
    ],
)
def test_impossible_header_counts_are_rejected(sample, counts, match):
    codec, payload = sample
    header = read_header(payload)
    fields = dict(n=header["n_reference"], k=header["k"], c=header["n_classes"]) | counts
    with pytest.raises(PayloadError, match=match):
        decode_payload(forge(payload[HEADER_SIZE:], **fields, codec=codec), layout=SAMPLE_LAYOUT)


FORGED_COUNTS = {  # the true (n, k, c) -> forged ones
    "k=0": lambda n, k, c: (n, 0, c),
    "k=1": lambda n, k, c: (n, 1, c),
    "k-1": lambda n, k, c: (n, k - 1, c),
    "k+1": lambda n, k, c: (n, k + 1, c),
    "k=N": lambda n, k, c: (n, n, c),
    "C=1": lambda n, k, c: (n, k, 1),
    "C=3": lambda n, k, c: (n, k, 3),
    "C-1": lambda n, k, c: (n, k, c - 1),
    "C=10**6": lambda n, k, c: (n, k, 10**6),
    "N=1400": lambda n, k, c: (1400, k, c),  # below the largest index
    "N-1": lambda n, k, c: (n - 1, k, c),
    "N+1": lambda n, k, c: (n + 1, k, c),
    "N=2**40": lambda n, k, c: (2**40, k, c),
}


@pytest.mark.parametrize("forged", FORGED_COUNTS.values(), ids=FORGED_COUNTS.keys())
def test_forged_header_counts_fail_cleanly(sample, forged):
    """The true body under another k, C or N (with a one-block layout of that N when N changes)."""
    codec, payload = sample
    header = read_header(payload)
    n, k, c = forged(header["n_reference"], header["k"], header["n_classes"])
    layout = SAMPLE_LAYOUT if n == header["n_reference"] else [n]
    decodes_or_fails_cleanly(forge(payload[HEADER_SIZE:], n=n, k=k, c=c, codec=codec), n, k, c, codec, layout)


@pytest.mark.parametrize("extra", [b"\x00", b"junk", "body"])
def test_oversize_bodies_are_rejected(sample, extra):
    """Bytes after what the encoder wrote (zero padding too, or a second copy) inside a valid checksum."""
    codec, payload = sample
    header = read_header(payload)
    body = payload[HEADER_SIZE:]
    extra = body if extra == "body" else extra
    with pytest.raises(PayloadError):
        decode_payload(forge(body + extra, n=header["n_reference"], k=header["k"], c=header["n_classes"],
                             codec=codec), layout=SAMPLE_LAYOUT)


@pytest.mark.parametrize("after_preamble", [True, False])
@pytest.mark.parametrize(("n", "layout"), [(BIG, [BIG]), (20_000_000, np.full(20_000, 1000))], ids=["huge", "blocks"])
@pytest.mark.parametrize("fill", [0x00, 0x55, 0xFE])
@pytest.mark.parametrize("codec", ALL)
def test_largest_k_a_body_allows_decodes_in_bounded_time(codec, fill, n, layout, after_preamble):
    """The decompression-bomb shape: the most images a 4 KB body may claim, all from filler bytes."""
    body = (preamble(codec, n, 1_000_000, layout) if after_preamble else b"") + bytes([fill]) * 4096
    k = 8 * 4096 + 64
    start = time.perf_counter()
    decodes_or_fails_cleanly(forge(body, n=n, k=k, c=1_000_000, codec=codec), n, k, 1_000_000, codec, layout)
    assert time.perf_counter() - start < 2.0


@pytest.fixture(scope="module")
def bomb_frames() -> list[bytes]:
    zeros = b"\x00" * 100_000_000
    with_size = zstandard.ZstdCompressor(level=1).compress(zeros)
    without_size = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(zeros)
    return [with_size, without_size]


@pytest.mark.parametrize("codec", ALL)
def test_decompression_bombs_are_rejected_fast(codec, bomb_frames):
    for frame in bomb_frames:
        assert len(frame) < 10_000  # 100 MB in a few KB
        for body in (frame, preamble(codec, 1000, 3, [1000]) + frame):
            start = time.perf_counter()
            with pytest.raises(PayloadError):
                decode_payload(forge(body, n=1000, k=10, c=3, codec=codec), layout=[1000])
            assert time.perf_counter() - start < 1.0


def test_wrong_pool_is_rejected(sample):
    codec, data = sample
    assert decode_payload(data, expected_fingerprint=FP, layout=SAMPLE_LAYOUT).k == read_header(data)["k"]
    with pytest.raises(PayloadError, match=r"different reference pool.*0123456789ab….*fedcba987654…"):
        decode_payload(data, expected_fingerprint=OTHER_FP, layout=SAMPLE_LAYOUT)
    with pytest.raises(PayloadError, match="pool of N=20000 images but the local pool has N=19999"):
        decode_payload(data, expected_n_reference=19_999, layout=SAMPLE_LAYOUT)


# ---------------------------------------------------------------- the layout


@pytest.mark.parametrize("codec", WITH_LAYOUT)
def test_layout_codecs_need_the_pools_own_layout(codec):
    with pytest.raises(ValueError, match="codes positions against the pool's block layout: pass layout="):
        encode([1], [0], 10, 2, codec, None)
    with pytest.raises(ValueError):
        encode([1], [0], 10, 2, codec, [4, 5])  # sums to 9, not N
    data = encode([1, 2, 7], [0, 0, 1], 10, 2, codec, [5, 5])
    with pytest.raises(PayloadError, match="pass the local pool's layout"):
        decode_payload(data)
    with pytest.raises(PayloadError):
        decode_payload(data, layout=[4, 6])  # same N, other blocks: never silently wrong labels
    with pytest.raises(PayloadError, match="local layout does not fit this payload: "):
        decode_payload(data, layout=[6, 6])
    assert decode_payload(data, layout=np.array([5, 5], dtype=np.uint32)).indices.tolist() == [1, 2, 7]


@pytest.mark.parametrize("codec", WITHOUT_LAYOUT)
def test_other_codecs_ignore_the_layout(codec):
    data = encode([1, 2, 7], [0, 0, 1], 10, 2, codec, None)
    assert data == encode([1, 2, 7], [0, 0, 1], 10, 2, codec, [5, 5])
    for layout in (None, [5, 5], [4, 6], [6, 6]):
        assert decode_payload(data, layout=layout).indices.tolist() == [1, 2, 7]


# ---------------------------------------------------------------- format 2: the class-names section

NAME = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=64)  # <= 256 bytes
RELEASE_NAME = st.none() | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", fullmatch=True)


@pytest.mark.parametrize("codec", ALL)
@SETTINGS
@given(selection=selections(max_n=500), data=st.data())
def test_round_trip_with_names(codec, selection, data):
    indices, labels, n, c, layout = selection
    c = min(c, 40)  # the names are what is tested here, not the class count
    labels = np.asarray(labels, dtype=np.int64) % c
    names = data.draw(st.lists(NAME, min_size=c, max_size=c))
    task, version = data.draw(RELEASE_NAME), data.draw(RELEASE_NAME)
    plain = encode(indices, labels, n, c, codec, layout)
    named = encode_payload(indices, labels, n_reference=n, n_classes=c, fingerprint=FP, codec=codec, layout=layout,
                           class_names=names, task=task, version=version)
    assert named.endswith(plain[HEADER_SIZE:])  # the names never change the body
    payload = decode_payload(named, layout=layout)
    assert (payload.class_names, payload.task, payload.version, payload.format_version) == (tuple(names), task,
                                                                                            version, 2)
    np.testing.assert_array_equal(payload.indices, decode_payload(plain, layout=layout).indices)
    np.testing.assert_array_equal(payload.labels, decode_payload(plain, layout=layout).labels)


@pytest.fixture(scope="module", params=ALL)
def named_sample(request) -> tuple[str, bytes]:
    """(codec, the ``sample`` selection as a format-2 payload with 20 class names, a task and a version)."""
    rng = np.random.default_rng(7)
    indices = np.unique(np.concatenate([np.arange(1000, 1400), rng.choice(20_000, 200, replace=False)]))
    labels = np.where(rng.random(indices.size) < 0.9, 3, rng.integers(0, 20, indices.size))
    data = encode_payload(indices, labels, n_reference=20_000, n_classes=20, fingerprint=FP, codec=request.param,
                          layout=SAMPLE_LAYOUT, class_names=class_names(20), task="digits", version="v7")
    return request.param, data


def named_small_payload(codec: str) -> bytes:
    return encode_payload([3, 4, 5, 9, 40], [1, 1, 0, 2, 2], n_reference=50, n_classes=3, fingerprint=FP,
                          codec=codec, layout=[10, 40], class_names=["cat", "dog", "fox"], task="pets", version="v1")


def test_every_truncation_of_a_named_payload_is_rejected(named_sample):
    codec, data = named_sample
    assert data[6] == 2
    for end in range(len(data)):
        with pytest.raises(PayloadError, match="truncated"):
            decode_payload(data[:end], layout=SAMPLE_LAYOUT)


@pytest.mark.parametrize("codec", ALL)
def test_every_single_bit_flip_of_a_named_payload_is_rejected(codec):
    data = named_small_payload(codec)
    for bit in range(8 * len(data)):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(PayloadError):
            decode_payload(bytes(flipped), layout=[10, 40])


def split_named(data: bytes) -> tuple[dict, bytes, bytes]:
    """(header, names section, body) of a format-2 payload."""
    header = read_header(data)
    return header, data[HEADER_SIZE : len(data) - header["body_length"]], data[len(data) - header["body_length"] :]


@SETTINGS
@given(data=st.data())
def test_bit_flips_in_the_names_section_are_rejected_or_decode_within_contract(named_sample, data):
    """Flips inside the section: the checksum sees them; re-checksummed, the section's own checks must hold."""
    codec, payload = named_sample
    header, names, body = split_named(payload)
    flipped = bytearray(names)
    for bit in data.draw(st.lists(st.integers(0, 8 * len(names) - 1), min_size=1, max_size=4, unique=True)):
        flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(PayloadError):
        decode_payload(payload[:HEADER_SIZE] + bytes(flipped) + body, layout=SAMPLE_LAYOUT)
    n, k, c = header["n_reference"], header["k"], header["n_classes"]
    forged = forge(body, n=n, k=k, c=c, codec=codec, names=bytes(flipped))
    decodes_or_fails_cleanly(forged, n, k, c, codec, SAMPLE_LAYOUT)


@pytest.mark.parametrize("forged_c", [1, 19, 21, 1_000_000])
def test_forged_name_counts_are_rejected(named_sample, forged_c):
    """The true section under another C (the body still decodes under most of them: only the names can tell)."""
    codec, payload = named_sample
    header, names, body = split_named(payload)
    data = forge(body, n=header["n_reference"], k=header["k"], c=forged_c, codec=codec, names=names)
    with pytest.raises(PayloadError, match=f"holds 20 class names but the header says C={forged_c}"):
        decode_payload(data, layout=SAMPLE_LAYOUT)


@pytest.mark.parametrize("count", [0, 1, 2, 4, 100])
@pytest.mark.parametrize("codec", ALL)
def test_forged_sections_with_another_name_count_are_rejected(codec, count):
    body = small_payload(codec)[HEADER_SIZE:]
    text = "\n".join(["", "", *class_names(count)]).encode() if count else b"\n"
    with pytest.raises(PayloadError, match=f"holds {count} class names but the header says C=3"):
        decode_payload(forge(body, n=50, k=5, c=3, codec=codec, names=names_section(text)), layout=[10, 40])


HOSTILE_NAMES = {  # the text of a section for C = 3 -> the problem named
    "too long": (b"\n\na\n" + b"x" * 257 + b"\nc", "257 bytes of UTF-8, more than 256"),
    "newline as CR": (b"\n\na\nb\rc\nd", "control character U\\+000D"),
    "NUL": (b"\n\na\nb\x00\nd", "control character U\\+0000"),
    "C1 control": (b"\n\na\nb\xc2\x9b\nd", "control character U\\+009B"),
    "invalid UTF-8": (b"\n\na\n\xc3\x28\nc", "not valid UTF-8"),
    "overlong UTF-8": (b"\n\na\n\xc0\xaf\nc", "not valid UTF-8"),
    "empty": (b"\n\n\nb\nc", "class name 0 is empty"),
    "task with a slash": (b"../etc\n\na\nb\nc", "task '../etc' is not a release name"),
    "version too long": (b"\n" + b"v" * 101 + b"\na\nb\nc", "version is 101 bytes, more than 100"),
}


@pytest.mark.parametrize("hostile", HOSTILE_NAMES.values(), ids=HOSTILE_NAMES.keys())
@pytest.mark.parametrize("encoding", [0, 1])
@pytest.mark.parametrize("codec", ALL)
def test_hostile_names_are_rejected(codec, encoding, hostile):
    text, match = hostile
    stored = zstandard.ZstdCompressor(level=19).compress(text) if encoding else text
    data = forge(small_payload(codec)[HEADER_SIZE:], n=50, k=5, c=3, codec=codec, names=names_section(stored, encoding))
    with pytest.raises(PayloadError, match=match):
        decode_payload(data, layout=[10, 40])


@pytest.mark.parametrize("codec", ALL)
def test_a_bomb_in_the_names_section_is_rejected_fast(codec, bomb_frames):
    body = small_payload(codec)[HEADER_SIZE:]
    for frame in bomb_frames:
        for c in (3, 1_000_000):  # the cap is C names of 256 bytes; 100 MB of zeros passes neither
            start = time.perf_counter()
            with pytest.raises(PayloadError, match="decompression bomb|control character U\\+0000|class names but"):
                decode_payload(forge(body, n=50, k=5, c=c, codec=codec, names=names_section(frame, 1)), layout=[10, 40])
            assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("codec", ALL)
@settings(max_examples=100, deadline=None)
@given(stored=st.binary(max_size=300), encoding=st.sampled_from([0, 1, 2, 255]), c=st.sampled_from([1, 3, 10**6]),
       version=st.sampled_from([2, 3]))
def test_random_names_sections_fail_cleanly_and_fast(codec, stored, encoding, c, version):
    body = small_payload(codec)[HEADER_SIZE:]
    start = time.perf_counter()
    decodes_or_fails_cleanly(forge(body, n=50, k=5, c=c, codec=codec, names=names_section(stored, encoding),
                                   version=version), 50, 5, c, codec, [10, 40])  # fmt: skip
    assert time.perf_counter() - start < 1.0


# ---------------------------------------------------------------- format 3: the student recipe

RECIPE_VALUE = (st.integers(-(2**62), 2**62) | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20))  # fmt: skip
RECIPE_KEY = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
RECIPES = st.fixed_dictionaries(
    {"model": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}", fullmatch=True)},
    optional={"preprocess": st.dictionaries(RECIPE_KEY, RECIPE_VALUE, max_size=4)},
)


@pytest.mark.parametrize("codec", ALL)
@SETTINGS
@given(selection=selections(max_n=300), recipe=RECIPES)
def test_round_trip_with_a_recipe(codec, selection, recipe):
    indices, labels, n, c, layout = selection
    c = min(c, 5)
    labels = np.asarray(labels, dtype=np.int64) % c
    names = class_names(c)
    plain = encode(indices, labels, n, c, codec, layout)
    data = encode_payload(indices, labels, n_reference=n, n_classes=c, fingerprint=FP, codec=codec, layout=layout,
                          class_names=names, task="t", student_recipe=recipe)  # fmt: skip
    assert data.endswith(plain[HEADER_SIZE:]) and data[6] == 3  # the recipe never changes the body
    payload = decode_payload(data, layout=layout)
    assert (payload.student_recipe, payload.class_names, payload.task) == (recipe, tuple(names), "t")
    np.testing.assert_array_equal(payload.indices, decode_payload(plain, layout=layout).indices)


@pytest.mark.parametrize("codec", ALL)
def test_every_single_bit_flip_of_a_payload_with_a_recipe_is_rejected(codec):
    data = encode_payload([3, 4, 5, 9, 40], [1, 1, 0, 2, 2], n_reference=50, n_classes=3, fingerprint=FP, codec=codec,
                          layout=[10, 40], class_names=["cat", "dog", "fox"],
                          student_recipe={"model": "m", "preprocess": {"image_size": 32}})  # fmt: skip
    for bit in range(8 * len(data)):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(PayloadError):
            decode_payload(bytes(flipped), layout=[10, 40])
