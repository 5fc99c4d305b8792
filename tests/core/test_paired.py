"""The paired accuracy difference: exact counts, its SE against a direct computation, McNemar's test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plada_core.paired import paired_difference


def test_counts_difference_and_se_match_a_direct_computation():
    rng = np.random.default_rng(0)
    a = rng.random(2000) < 0.8
    b = np.where(rng.random(2000) < 0.9, a, ~a)  # agrees with a on ~90 % of the images
    d = paired_difference(a, b)
    per_image = a.astype(float) - b.astype(float)
    assert d.n == 2000 and d.a_only == int((a & ~b).sum()) and d.b_only == int((b & ~a).sum())
    assert d.diff == pytest.approx(a.mean() - b.mean())
    assert d.se == pytest.approx(per_image.std(ddof=1) / np.sqrt(2000))
    assert d.ci95[0] < d.diff < d.ci95[1]
    unpaired = np.sqrt(a.mean() * (1 - a.mean()) / 2000 + b.mean() * (1 - b.mean()) / 2000)
    assert d.se < unpaired / 2  # agreement on most images is what pairing buys


def test_mcnemar_is_exact_and_symmetric():
    a = np.array([True] * 9 + [False] * 1 + [True] * 90)
    b = np.array([False] * 9 + [True] * 1 + [True] * 90)
    d = paired_difference(a, b)
    assert (d.a_only, d.b_only) == (9, 1)
    assert d.p_value == pytest.approx(2 * sum(math.comb(10, k) for k in range(2)) / 2**10)
    assert paired_difference(b, a).p_value == pytest.approx(d.p_value) and paired_difference(b, a).diff == -d.diff


def test_identical_predictions_differ_by_nothing():
    a = np.array([True, False, True])
    d = paired_difference(a, a)
    assert (d.diff, d.se, d.p_value, d.a_only, d.b_only) == (0.0, 0.0, 1.0, 0, 0)


@pytest.mark.parametrize("b", [np.ones(3, bool), np.ones((4, 1), bool), np.ones(0, bool)])
def test_mismatched_or_empty_vectors_are_refused(b):
    a = np.ones(4, bool) if len(b) else np.ones(0, bool)
    with pytest.raises(ValueError, match="same images"):
        paired_difference(a, b)


@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=2, max_size=200))
def test_the_difference_is_the_accuracy_difference_and_the_p_value_a_probability(pairs):
    a, b = (np.array(v) for v in zip(*pairs))
    d = paired_difference(a, b)
    assert d.diff == pytest.approx(a.mean() - b.mean()) and 0 <= d.p_value <= 1 and d.se >= 0


def test_the_run_report_pairs_the_two_students_and_refuses_different_test_splits():
    from plada_core.report import REPORT_KEYS, report_markdown, student_vs_random

    label = np.array([0, 1, 2, 1, 0])
    student = {"pred": np.array([0, 1, 2, 0, 0]), "label": label}
    random_ = {"pred": np.array([0, 2, 2, 0, 1]), "label": label}
    paired = student_vs_random(student, random_)
    assert (paired["a_only"], paired["b_only"], paired["n"]) == (2, 0, 5) and paired["diff"] == pytest.approx(0.4)
    assert student_vs_random(student, None) is None and student_vs_random(None, random_) is None
    with pytest.raises(ValueError, match="different test splits"):
        student_vs_random(student, {"pred": random_["pred"], "label": label + 1})
    report = {**dict.fromkeys(REPORT_KEYS, 0.5), "n_kept": 3, "wall_s": {}, "student_vs_random": paired}
    assert "+40.00 points" in report_markdown(report) and "2 images only the student" in report_markdown(report)
    assert "paired" not in report_markdown({**report, "student_vs_random": None})
