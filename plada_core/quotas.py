"""Per-class quotas for the Safety-Net: ``K_c ∝ N_c**alpha``, apportioned by Webster's divisor method.

A divisor method hands out images one at a time, each to the class with the highest priority
``w_c / (q_c + 1/2)`` (``q_c``: images it holds so far), among classes that still have room (``q_c < N_c``); ties
go to the lower class id (priorities are compared as logs, so exact ties such as 3/1.5 against 1/0.5 are decided
by float rounding: deterministic, but not always the lower id). The quotas for ``k`` are therefore the first ``k`` seats of one fixed order, and the
quotas for ``k + 1`` add exactly one seat: raising the budget never removes a kept image from any class (house
monotone). Largest remainder, the previous rule, is not (the Alabama paradox), so two budgets' selections need
not nest under it. Webster (Sainte-Laguë) is the divisor method without a bias towards large or small classes.

The sequential rule is O(k log C); ``apportion`` reaches the same seats in O(C log(1/eps) + C log C): a bisection
on the priority threshold places all but about one seat per class, and a heap places the rest in exact order.
"""

from __future__ import annotations

import heapq
import math
import numbers

import numpy as np

__all__ = ["apportion", "quota_log_weights", "safety_net_quotas"]

_BISECTION_STEPS = 200


def quota_log_weights(counts: np.ndarray, alpha: float) -> np.ndarray:
    """``log(counts**alpha)`` per class (-inf where counts is 0). Priorities are compared in log space, so a big
    |alpha| neither overflows nor flattens the small weights to a tie at 0."""
    log_w = np.full(len(counts), -np.inf)
    present = counts > 0
    log_w[present] = alpha * np.log(counts[present].astype(np.float64))
    return log_w


def _seats_at_or_above(log_w: np.ndarray, caps: np.ndarray, threshold: float) -> np.ndarray:
    """Per class, how many of its seats have log priority ``log_w - log(s + 1/2) >= threshold`` (capped)."""
    ratio = np.exp(np.minimum(log_w - threshold, 700.0))  # beyond e**700 every cap is reached anyway
    return np.minimum(caps, np.floor(ratio + 0.5)).astype(np.int64)


def _safe_start(log_w: np.ndarray, caps: np.ndarray, k: int) -> np.ndarray:
    """Seats that certainly belong to the first ``k``: the count at a threshold that places fewer than ``k``,
    minus one per class so that float rounding near the threshold cannot add a seat out of order."""
    open_ = caps > 0
    if not open_.any() or k == 0:
        return np.zeros(len(log_w), dtype=np.int64)
    # At hi no seat qualifies (the best seat has log priority max(log_w) - log(1/2)); at lo every seat does.
    hi = float(log_w[open_].max()) + math.log(2.0) + 1.0
    lo = float(log_w[open_].min()) - math.log(float(caps.max()) + 1.0) - 1.0
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if _seats_at_or_above(log_w, caps, mid).sum() >= k:
            lo = mid
        else:
            hi = mid
    return np.maximum(_seats_at_or_above(log_w, caps, hi) - 1, 0)


def apportion(log_w: np.ndarray, caps: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` seats of Webster's order for log weights ``log_w``, class ``c`` holding at most ``caps[c]``."""
    quotas = _safe_start(log_w, caps, k)
    left = k - int(quotas.sum())
    heap = [(-(log_w[c] - math.log(quotas[c] + 0.5)), c) for c in np.flatnonzero(quotas < caps).tolist()]
    heapq.heapify(heap)
    while left > 0:
        _, c = heapq.heappop(heap)
        quotas[c] += 1
        left -= 1
        if quotas[c] < caps[c]:
            heapq.heappush(heap, (-(log_w[c] - math.log(quotas[c] + 0.5)), c))
    return quotas


def safety_net_quotas(pred_counts: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """Per-class quotas ``K_c ∝ N_c**alpha`` that add up to exactly ``k``, with ``K_c <= N_c``.

    ``pred_counts[c]`` is N_c, the number of pool images the teacher labels c. Classes with N_c = 0 get 0 and
    take no part, whatever the sign of alpha. alpha = 0 splits ``k`` evenly, alpha = 1 in proportion to N_c,
    alpha < 0 favours rare classes, alpha > 1 favours common ones. Rounding is Webster's divisor method (see the
    module docstring): ``safety_net_quotas(n, k + 1, a) >= safety_net_quotas(n, k, a)`` class by class.
    """
    counts = np.asarray(pred_counts)
    if counts.ndim != 1 or not np.issubdtype(counts.dtype, np.integer):
        raise ValueError(f"pred_counts must be a 1-D integer array, got dtype {counts.dtype} shape {counts.shape}")
    if (counts < 0).any():
        raise ValueError(f"pred_counts must be >= 0, got {counts.min()} at class {int(counts.argmin())}")
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be finite, got {alpha!r}")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k <= counts.sum():
        raise ValueError(f"k must be an int in [0, {int(counts.sum())}] (the pool size), got {k!r}")
    return apportion(quota_log_weights(counts, alpha), counts.astype(np.int64), int(k))
