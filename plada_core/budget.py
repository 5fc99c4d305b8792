"""Budget mode: the largest selection whose payload fits in a byte budget (the paper's "1 MB" as a knob).

Payload size grows with k only *approximately* monotonically: one more image usually adds a few bits,
but it can also split a run, change which label is a block's mode, or move a byte boundary, so
``size(k + 1) < size(k)`` happens, by a few bytes. The search therefore never trusts monotonicity for its
answer: it only returns a k whose payload it actually built and measured within the budget, the largest
such k among those it tried. Where sizes are monotone that is exactly the largest k that fits; where they
wiggle it is a k at the boundary the search brackets (a larger k past a dip may also fit, unseen).

The search treats size as roughly linear in k: it grows a fitting k by extrapolating bytes per image
(at most 16x per step) until a k does not fit, then narrows the bracket by interpolation, falling back to bisection when
interpolation stalls. A handful of encodes, mostly at small k, find the boundary to the image.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

__all__ = ["BudgetError", "largest_k_within"]

_MAX_GROWTH = 16


class BudgetError(ValueError):
    """Even the smallest selection allowed does not fit the budget."""


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


class _Probe:
    """``encode_at_k`` with memory, so no k is encoded twice, and a check of what it returns."""

    def __init__(self, encode_at_k: Callable[[int], bytes]) -> None:
        self._encode = encode_at_k
        self._seen: dict[int, bytes] = {}

    def __call__(self, k: int) -> bytes:
        if k not in self._seen:
            payload = self._encode(k)
            if not isinstance(payload, (bytes, bytearray)):
                raise TypeError(f"encode_at_k({k}) must return bytes, got {type(payload).__name__}")
            self._seen[k] = bytes(payload)
        return self._seen[k]


def _grow(first: int, first_size: int, lo: int, lo_size: int, max_bytes: int, n: int) -> int:
    """Next k to try above a fitting ``lo``: extrapolated along the bytes per image from ``first`` to ``lo``
    (which leaves the header out of the slope), at most 16x ``lo`` and 16 more."""
    if lo > first and lo_size > first_size:
        guess = lo + (max_bytes - lo_size) * (lo - first) // (lo_size - first_size)
    else:  # no slope yet: grow as fast as allowed
        guess = n
    return max(lo + 1, min(guess, _MAX_GROWTH * lo + _MAX_GROWTH, n))


def _narrow(lo: int, lo_size: int, hi: int, hi_size: int, max_bytes: int, bisect: bool) -> int:
    """Next k strictly inside ``(lo, hi)``: interpolated where sizes rise, else the midpoint."""
    if bisect or hi_size <= lo_size:
        return (lo + hi) // 2
    guess = lo + (hi - lo) * (max_bytes - lo_size) // (hi_size - lo_size)
    return min(max(guess, lo + 1), hi - 1)


def largest_k_within(
    max_bytes: int, n: int, encode_at_k: Callable[[int], bytes], *, k_min: int = 1
) -> tuple[int, bytes]:
    """``(k, payload)``: the largest k in ``[k_min, n]`` found whose ``encode_at_k(k)`` has <= ``max_bytes`` bytes.

    ``encode_at_k`` must be deterministic: it is called once per k tried (about ``log k`` times plus a
    few), with k in ``[k_min, n]``. The payload returned is the one it built for that k, so the caller need
    not encode again. Raises :class:`BudgetError` when even ``k_min`` images do not fit.
    """
    max_bytes = _check_int(max_bytes, "max_bytes", 0)
    k_min = _check_int(k_min, "k_min", 0)
    n = _check_int(n, "n", k_min)
    probe = _Probe(encode_at_k)
    lo = k_min
    lo_size = first_size = len(probe(k_min))
    if lo_size > max_bytes:
        raise BudgetError(
            f"max_bytes={max_bytes} is too small: even k={k_min} images need a {lo_size}-byte payload"
        )
    hi = hi_size = None
    widths = [n - lo + 1]  # bracket widths, to notice interpolation that stalls
    while lo < n and (hi is None or hi - lo > 1):
        if hi is None:
            k = _grow(k_min, first_size, lo, lo_size, max_bytes, n)
        else:
            # interpolation crawls when one end stays put; bisect if the last two steps did not halve the bracket
            k = _narrow(lo, lo_size, hi, hi_size, max_bytes, bisect=len(widths) > 2 and widths[-1] * 2 > widths[-3])
        size = len(probe(k))
        if size <= max_bytes:
            lo, lo_size = k, size
        else:
            hi, hi_size = k, size
        widths.append((n + 1 if hi is None else hi) - lo)
    return lo, probe(lo)
