"""Budget mode: the largest k whose payload fits, found with few encodes, never one that does not fit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plada_core.budget import BudgetError, largest_k_within
from plada_core.payload import HEADER_SIZE, encode_payload
from plada_core.simulator import simulate_layout, simulate_selections


class Counting:
    """A fake encoder of known sizes that records the k it was asked for."""

    def __init__(self, size):
        self.size, self.calls = size, []

    def __call__(self, k: int) -> bytes:
        self.calls.append(k)
        return bytes(self.size(k))


def linear(k: int) -> int:
    return HEADER_SIZE + (7 * k) // 8


@pytest.mark.parametrize("max_bytes", [HEADER_SIZE, 100, 1000, 123_456, 10**6, 10**9])
def test_exact_on_monotone_sizes_with_few_encodes(max_bytes):
    n = 14_200_000
    encoder = Counting(linear)
    k, payload = largest_k_within(max_bytes, n, encoder, k_min=0)
    expected = min(n, (max_bytes - HEADER_SIZE) * 8 // 7 + 7)
    while linear(expected) > max_bytes:
        expected -= 1
    assert k == expected and len(payload) == linear(k) <= max_bytes
    assert len(encoder.calls) == len(set(encoder.calls)) <= 20  # memoised, and a handful of probes


@settings(max_examples=100, deadline=None)
@given(max_bytes=st.integers(80, 10**6), n=st.integers(1, 10**6), wiggle=st.integers(0, 40),
       seed=st.integers(0, 2**32 - 1))
def test_never_returns_a_k_that_does_not_fit(max_bytes, n, wiggle, seed):
    """Sizes that rise only on average (a few bytes of noise per k): the answer still fits, and sits at
    the boundary: the next k the search tried, if any, did not fit."""
    noise = np.random.default_rng(seed).integers(0, wiggle + 1, size=64)
    encoder = Counting(lambda k: linear(k) + int(noise[k % 64]))
    try:
        k, payload = largest_k_within(max_bytes, n, encoder)
    except BudgetError:
        assert len(encoder(1)) > max_bytes
        return
    assert 1 <= k <= n and len(payload) <= max_bytes and payload == encoder(k)
    above = [tried for tried in encoder.calls if tried > k]
    assert k == n or (above and all(len(encoder(tried)) > max_bytes for tried in above))
    assert k >= min(n, (max_bytes - HEADER_SIZE - wiggle) * 8 // 7 - 64)  # close to the true boundary


def test_whole_pool_when_everything_fits():
    assert largest_k_within(10**6, 500, Counting(linear))[0] == 500


def test_budget_below_the_smallest_payload():
    with pytest.raises(BudgetError, match="max_bytes=50 is too small: even k=1 images need a 72-byte payload"):
        largest_k_within(50, 100, Counting(linear))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((-1, 10), "max_bytes must be an int >= 0, got -1"),
        ((1.5e6, 10), "max_bytes must be an int >= 0, got 1500000.0"),
        ((100, 0), "n must be an int >= 1, got 0"),
        ((True, 10), "max_bytes must be an int"),
    ],
)
def test_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        largest_k_within(*args, Counting(linear))


def test_encoder_must_return_bytes():
    with pytest.raises(TypeError, match=r"encode_at_k\(1\) must return bytes, got str"):
        largest_k_within(100, 10, lambda k: "x" * k)


def test_with_a_real_codec_on_a_ranked_selection():
    """The way publish uses it: keep the k best-ranked images of a simulated selection."""
    layout = simulate_layout(0, n_reference=200_000, n_blocks=300)
    sel = simulate_selections((0.02,), n_classes=20, layout=layout)[0.02]
    rank = np.random.default_rng(0).permutation(sel.k)  # any fixed priority order will do

    def encode_at_k(k: int) -> bytes:
        chosen = rank[:k]
        return encode_payload(sel.indices[chosen], sel.labels[chosen], n_reference=sel.n_reference, n_classes=20,
                              fingerprint="0" * 64, codec="context-rc")

    k, payload = largest_k_within(2000, sel.k, encode_at_k)
    assert len(payload) <= 2000 < len(encode_at_k(k + 1))
