"""Two classifiers on the same labelled images: the difference of their accuracies measured pairwise.

Two students evaluated on the same test split disagree on a few images and agree on the rest; the difference of
their accuracies is decided by the images only one of them gets right. Its standard error, computed per image,
is several times smaller than the unpaired one (two independent binomial SEs) and is the right yardstick for
"the PLADA student beats random by x points". McNemar's exact test asks whether the two one-sided counts could
come from a fair coin.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np
from scipy.stats import binomtest

__all__ = ["PairedDifference", "paired_difference"]

Z95 = NormalDist().inv_cdf(0.975)  # two-sided 95 %; auto_selection's intervals use it too


@dataclass(frozen=True)
class PairedDifference:
    """``acc(a) − acc(b)`` on ``n`` shared images; ``a_only`` / ``b_only``: images only ``a`` / only ``b`` gets
    right; ``se``: the standard error of the mean per-image difference; ``p_value``: McNemar's exact two-sided
    test (1.0 when the two never disagree)."""

    diff: float
    se: float
    ci95: tuple[float, float]
    a_only: int
    b_only: int
    n: int
    p_value: float

    def summary(self) -> dict:
        return {**asdict(self), "ci95": list(self.ci95)}


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray) -> PairedDifference:
    """Compare two per-image correctness vectors (booleans, same images in the same order)."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two non-empty correctness vectors over the same images, got shapes {a.shape} and "
                         f"{b.shape}")  # fmt: skip
    n = len(a)
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    diff = (a_only - b_only) / n
    # sample variance of d_i ∈ {−1, 0, 1}: sum of d² is the number of disagreements
    var = max(0.0, (a_only + b_only - n * diff * diff) / (n - 1)) if n > 1 else 0.0
    se = math.sqrt(var / n)
    discordant = a_only + b_only
    p = binomtest(a_only, discordant, 0.5).pvalue if discordant else 1.0
    return PairedDifference(diff, se, (diff - Z95 * se, diff + Z95 * se), a_only, b_only, n, float(p))
