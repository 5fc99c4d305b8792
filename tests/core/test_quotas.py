"""Webster quotas: exact totals, caps, the sequential rule's seats, and house monotonicity."""

import heapq
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plada_core.quotas import apportion, quota_log_weights, safety_net_quotas

counts_st = st.lists(st.integers(0, 60), min_size=1, max_size=12).filter(lambda c: sum(c) > 0)
alpha_st = st.sampled_from([-2.0, -0.5, 0.0, 0.3, 0.5, 1.0, 2.0, 40.0])


def sequential_webster(log_w: np.ndarray, caps: np.ndarray, k: int) -> np.ndarray:
    """The definition: one seat at a time to the highest w / (q + 1/2) with room, ties to the lower class."""
    quotas = np.zeros(len(log_w), dtype=np.int64)
    heap = [(-(log_w[c] - math.log(0.5)), c) for c in range(len(log_w)) if caps[c] > 0]
    heapq.heapify(heap)
    for _ in range(k):
        _, c = heapq.heappop(heap)
        quotas[c] += 1
        if quotas[c] < caps[c]:
            heapq.heappush(heap, (-(log_w[c] - math.log(quotas[c] + 0.5)), c))
    return quotas


@given(counts=counts_st, alpha=alpha_st, data=st.data())
def test_quotas_are_the_sequential_rules_seats(counts, alpha, data):
    counts = np.array(counts, dtype=np.int64)
    k = data.draw(st.integers(0, int(counts.sum())))
    expected = sequential_webster(quota_log_weights(counts, alpha), counts, k)
    assert np.array_equal(safety_net_quotas(counts, k, alpha), expected)


@given(counts=counts_st, alpha=alpha_st, data=st.data())
def test_raising_k_never_takes_a_seat_away(counts, alpha, data):
    counts = np.array(counts, dtype=np.int64)
    k = data.draw(st.integers(0, int(counts.sum()) - 1))
    smaller, larger = safety_net_quotas(counts, k, alpha), safety_net_quotas(counts, k + 1, alpha)
    assert (larger >= smaller).all() and larger.sum() == k + 1


@given(counts=counts_st, alpha=alpha_st, data=st.data())
def test_quotas_sum_to_k_within_caps(counts, alpha, data):
    counts = np.array(counts, dtype=np.int64)
    k = data.draw(st.integers(0, int(counts.sum())))
    quotas = safety_net_quotas(counts, k, alpha)
    assert quotas.sum() == k and (quotas <= counts).all() and (quotas[counts == 0] == 0).all()


def test_proportional_at_alpha_one_and_even_at_zero():
    assert safety_net_quotas(np.array([300, 100]), 40, 1.0).tolist() == [30, 10]
    assert safety_net_quotas(np.array([300, 100, 50]), 30, 0.0).tolist() == [10, 10, 10]


def test_extreme_alpha_keeps_the_order_of_tiny_weights():
    counts = np.array([10**6, 1, 1000])
    assert safety_net_quotas(counts, 3, 200.0).tolist() == [3, 0, 0]
    # w = N**-200 underflows to 0 for both big classes; in log space the next rarest still comes first.
    assert safety_net_quotas(counts, 3, -200.0).tolist() == [0, 1, 2]


def test_capped_class_passes_its_share_on():
    assert safety_net_quotas(np.array([2, 100, 100]), 40, 0.0).tolist() == [2, 19, 19]


def test_large_pool_matches_sequential_rule():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5000, size=300)
    weights = quota_log_weights(counts, 0.5)
    for k in (1, 777, 40_000, int(counts.sum()) - 3):
        assert np.array_equal(apportion(weights, counts, k), sequential_webster(weights, counts, k))


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.array([1.5]), 1, 0.5), "1-D integer"),
        ((np.array([-1, 3]), 1, 0.5), ">= 0"),
        ((np.array([3]), 4, 0.5), "k must be"),
        ((np.array([3]), 1, float("nan")), "alpha must be finite"),
    ],
)
def test_bad_input_is_named(args, message):
    with pytest.raises(ValueError, match=message):
        safety_net_quotas(*args)
