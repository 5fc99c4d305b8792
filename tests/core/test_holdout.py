"""Validation hold-out: per-class sizes, both sides keep every class, determinism, and errors that name the fix."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plada_core.holdout import absent_classes, stratified_holdout


def _labels(counts):
    return np.repeat(np.arange(len(counts)), counts)


def test_sizes_per_class_follow_fraction_with_a_floor():
    labels = _labels([1000, 200, 12, 10])
    train, val = stratified_holdout(labels, fraction=0.1, min_per_class=5)
    # round(0.1 * n_c) = 100, 20, 1 -> 5 (floor), 1 -> 5 (floor; 5 stay for training)
    assert np.bincount(labels[val]).tolist() == [100, 20, 5, 5]
    assert np.bincount(labels[train]).tolist() == [900, 180, 7, 5]


def test_partition_is_sorted_disjoint_and_complete():
    rng = np.random.default_rng(1)
    labels = rng.permutation(_labels([300, 150, 40]))
    train, val = stratified_holdout(labels, seed=3)
    assert train.dtype == val.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))


def test_a_large_fraction_still_leaves_min_per_class_for_training():
    labels = _labels([20, 100])
    train, val = stratified_holdout(labels, fraction=0.9, min_per_class=5)
    assert np.bincount(labels[train]).tolist() == [5, 10]
    assert np.bincount(labels[val]).tolist() == [15, 90]


def test_deterministic_per_seed():
    labels = np.random.default_rng(0).integers(0, 10, 2000)
    a = stratified_holdout(labels, seed=7)
    b = stratified_holdout(labels, seed=7)
    c = stratified_holdout(labels, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_classes_need_not_be_contiguous_without_n_classes():
    labels = np.array([0] * 10 + [3] * 30)  # classes 1 and 2 absent: fine unless n_classes says they exist
    _, val = stratified_holdout(labels)
    assert np.bincount(labels[val]).tolist() == [5, 0, 0, 5]


def test_too_small_class_names_class_count_minimum_and_fix():
    labels = _labels([50, 9])
    message = r"class 1 has 9 images, fewer than the 10 .*val_min_per_class.* to 4.*fixed selector"
    with pytest.raises(ValueError, match=message):
        stratified_holdout(labels, min_per_class=5)
    _, val = stratified_holdout(labels, min_per_class=4)
    assert np.bincount(labels[val]).tolist() == [5, 4]


def test_a_class_without_images_is_no_part_of_the_split():
    """Labels 1..N leave class 0 empty (and a named class may have no image): the split covers the classes that
    have images, ``absent_classes`` names the others; a class with a single image still raises."""
    labels = np.array([1] * 20 + [3] * 20)
    train, val = stratified_holdout(labels, n_classes=4)
    assert np.bincount(labels[val], minlength=4).tolist() == [0, 5, 0, 5] and len(train) + len(val) == 40
    assert absent_classes(labels, 4).tolist() == [0, 2] and absent_classes(labels, 3).tolist() == [0, 2]
    assert absent_classes(np.array([0, 1]), 2).tolist() == []
    assert absent_classes(np.array([], np.int64), 2).tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"class 2 has 1 images"):
        stratified_holdout(np.append(labels, 2), n_classes=4)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        stratified_holdout(labels, n_classes=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fraction": 0.0}, "fraction must be in"),
        ({"fraction": 1.0}, "fraction must be in"),
        ({"fraction": float("nan")}, "fraction must be in"),
        ({"min_per_class": 0}, "min_per_class must be an int"),
        ({"min_per_class": True}, "min_per_class must be an int"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        stratified_holdout(_labels([20, 20]), **kwargs)


def test_bad_labels():
    with pytest.raises(ValueError, match="1-D integer"):
        stratified_holdout(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=">= 0"):
        stratified_holdout(np.array([0] * 10 + [-1] * 10))


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(4, 60), min_size=1, max_size=6),
    fraction=st.floats(0.01, 0.99),
    min_per_class=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_every_class_on_both_sides(counts, fraction, min_per_class, seed):
    labels = _labels(counts)
    train, val = stratified_holdout(labels, fraction, min_per_class, seed)
    n_val = np.bincount(labels[val], minlength=len(counts))
    n_train = np.bincount(labels[train], minlength=len(counts))
    assert (n_val >= min_per_class).all() and (n_train >= min_per_class).all()
    wanted = np.maximum(min_per_class, [round(fraction * n) for n in counts])
    expected = np.minimum(wanted, np.array(counts) - min_per_class)
    assert n_val.tolist() == expected.tolist()
