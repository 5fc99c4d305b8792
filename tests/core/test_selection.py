"""Selection: exact budgets, Safety-Net quotas, determinism, nesting across budgets, NaN handling, errors."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plada_core.selection import (
    SELECTORS,
    SelectionConfig,
    get_selector,
    resolve_k,
    safety_net_quotas,
    select,
)

FAST = settings(max_examples=60, deadline=None)
DETERMINISTIC = ["energy", "opposite_energy", "entropy"]  # the ones whose NaN rule is tested column by column


def make_scores(energy, pred, entropy=None):
    """Paper columns plus the relevance and pruning columns of the scoring pass (derived from them, so ties and
    NaNs carry over): every registered selector can run on these."""
    energy = np.asarray(energy, dtype=np.float32)
    entropy = np.abs(energy) if entropy is None else np.asarray(entropy, dtype=np.float32)
    n = len(energy)
    return {
        "energy": energy,
        "pred": np.asarray(pred, dtype=np.int32),
        "entropy": entropy,
        "max_softmax": np.exp(-np.nan_to_num(entropy)),
        "margin": np.clip(2 * np.exp(-np.nan_to_num(entropy)) - 1, 0, 1).astype(np.float32),
        "knn_sim": np.tanh(-energy).astype(np.float32),
        "knn_agree": (np.arange(n) % 3 / 2).astype(np.float32),
        "knn_nn": (np.arange(n) % 4).astype(np.int32),
        "energy_cdf": np.linspace(0, 1, n, dtype=np.float32),
        # the columns of plada_core.pruning's selectors
        "density_ratio": (-energy).astype(np.float32),
        "label_stable": np.where(np.isnan(energy), np.nan, np.arange(n) % 3 / 2).astype(np.float32),
    }


@st.composite
def pools(draw, min_n=1, max_n=40):
    """A pool with many ties (few distinct values), some NaN energies and possibly empty classes."""
    n = draw(st.integers(min_n, max_n))
    n_classes = draw(st.integers(1, 5))
    values = st.sampled_from([-3.0, -1.0, 0.0, 0.5, 2.0, math.nan])
    energy = draw(st.lists(values, min_size=n, max_size=n))
    entropy = draw(st.lists(st.floats(0, 3), min_size=n, max_size=n))
    pred = draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n))
    return make_scores(energy, pred, entropy), n_classes


def keeps(n):
    return st.one_of(st.integers(1, n), st.floats(1e-3, 1.0))


def class_counts(kept, scores, n_classes):
    return np.bincount(scores["pred"][kept], minlength=n_classes)


# --- resolve_k and config validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "keep, n, k",
    [(0.1, 100, 10), (1.0, 7, 7), (0.25, 10, 2), (0.35, 10, 4), (1e-6, 10, 1), (0.5, 0, 0), (3, 3, 3), (1, 50, 1)],
)
def test_resolve_k(keep, n, k):
    assert resolve_k(keep, n) == k


@pytest.mark.parametrize(
    "keep, n, match",
    [
        (0.0, 10, "keep as a fraction must be in \\(0, 1\\], got 0.0"),
        (-0.5, 10, "got -0.5"),
        (1.5, 10, "got 1.5; pass an int"),
        (math.nan, 10, "got nan"),
        (0, 10, "keep as a count must be >= 1, got 0"),
        (-3, 10, "got -3"),
        (11, 10, "keep=11 images asked for, but the pool holds only n=10"),
        (0.5, -1, "n must be >= 0, got -1"),
    ],
)
def test_resolve_k_errors(keep, n, match):
    with pytest.raises(ValueError, match=match):
        resolve_k(keep, n)


def test_resolve_k_rejects_bool_and_strings():
    for keep in (True, "0.1"):
        with pytest.raises(TypeError, match=repr(keep)):
            resolve_k(keep, 10)


def test_numpy_scalars_are_accepted():
    assert resolve_k(np.int64(5), 10) == 5
    assert resolve_k(np.float32(0.5), 10) == 5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(selector="energyy"), r"unknown selector 'energyy'; valid selectors: \['auto_energy', 'ccs', 'density_r"),
        (dict(keep=2.0), "got 2.0"),
        (dict(keep=0), "got 0"),
        (dict(alpha=math.inf), "alpha must be finite, got inf"),
        (dict(seed=-1), "seed must be an int >= 0, got -1"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SelectionConfig(**kwargs)


def test_get_selector_lists_names():
    assert get_selector("energy") is SELECTORS["energy"]
    with pytest.raises(ValueError, match="'random'"):
        get_selector("nope")


# --- select: errors ------------------------------------------------------------------------------------------


def test_select_errors():
    scores = make_scores([0.0, 1.0, 2.0], [0, 1, 0])
    cfg = SelectionConfig("energy", keep=2)
    with pytest.raises(ValueError, match="n_classes must be an int >= 1, got 0"):
        select(scores, 0, cfg)
    with pytest.raises(ValueError, match="differ in length.*'pred': 2"):
        select({**scores, "pred": np.array([0, 1])}, 2, cfg)
    with pytest.raises(ValueError, match=r"'pred' must lie in \[0, 2\), got 5 at position 1"):
        select({**scores, "pred": np.array([0, 5, 1])}, 2, cfg)
    with pytest.raises(ValueError, match="integer class ids"):
        select({**scores, "pred": np.array([0.0, 1.0, 0.0])}, 2, cfg)
    with pytest.raises(ValueError, match="no column 'energy'"):
        select({"pred": scores["pred"]}, 2, cfg)
    with pytest.raises(ValueError, match="keep=4 images asked for, but the pool holds only n=3"):
        select(scores, 2, SelectionConfig("energy", keep=4))
    with pytest.raises(ValueError, match="scores are empty"):
        select({}, 2, cfg)


def test_pred_is_only_needed_by_the_safety_net():
    scores = {"energy": np.array([2.0, 1.0, 0.0])}
    assert select(scores, 1, SelectionConfig("energy", keep=1, safety_net=False)).tolist() == [2]
    with pytest.raises(ValueError, match="no column 'pred'"):
        select(scores, 1, SelectionConfig("energy", keep=1))


# --- select: hand examples -----------------------------------------------------------------------------------


def test_energy_keeps_the_lowest_energies():
    scores = make_scores([3.0, -1.0, 2.0, -5.0, 0.0], [0] * 5)
    cfg = SelectionConfig("energy", keep=2, safety_net=False)
    assert select(scores, 1, cfg).tolist() == [1, 3]
    assert select(scores, 1, SelectionConfig(selector="opposite_energy", keep=2, safety_net=False)).tolist() == [0, 2]


def test_entropy_keeps_the_lowest_entropies():
    scores = make_scores([0.0] * 4, [0] * 4, entropy=[0.9, 0.1, 0.5, 0.2])
    assert select(scores, 1, SelectionConfig(selector="entropy", keep=2, safety_net=False)).tolist() == [1, 3]


def test_ties_go_to_the_lower_position():
    scores = make_scores([1.0, 0.0, 0.0, 0.0, 1.0], [0] * 5)
    assert select(scores, 1, SelectionConfig("energy", keep=2, safety_net=False)).tolist() == [1, 2]
    assert select(scores, 1, SelectionConfig(selector="opposite_energy", keep=1, safety_net=False)).tolist() == [0]


def test_safety_net_keeps_the_best_of_each_class():
    # Plain energy would keep positions 0-3, all class 0; the quota (alpha=0: 2 per class) keeps class 1 alive.
    energy = [-9.0, -8.0, -7.0, -6.0, 5.0, 4.0, 3.0]
    pred = [0, 0, 0, 0, 1, 1, 1]
    scores = make_scores(energy, pred)
    assert select(scores, 3, SelectionConfig("energy", keep=4, safety_net=False)).tolist() == [0, 1, 2, 3]
    assert select(scores, 3, SelectionConfig("energy", keep=4, alpha=0.0)).tolist() == [0, 1, 5, 6]


def test_nan_energies_rank_last():
    energy = [math.nan, 2.0, math.nan, -1.0, 0.0]
    for selector, first in [("energy", [1, 3, 4]), ("opposite_energy", [1, 3, 4])]:
        cfg = SelectionConfig(selector=selector, keep=3, safety_net=False)
        assert select(make_scores(energy, [0] * 5), 1, cfg).tolist() == first
    # A budget larger than the finite values takes NaNs, lowest position first.
    cfg = SelectionConfig("energy", keep=4, safety_net=False)
    assert select(make_scores(energy, [0] * 5), 1, cfg).tolist() == [0, 1, 3, 4]


# --- select: properties --------------------------------------------------------------------------------------


@FAST
@given(data=st.data(), selector=st.sampled_from(sorted(SELECTORS)), safety_net=st.booleans())
def test_keeps_exactly_k_sorted_unique_positions(data, selector, safety_net):
    scores, n_classes = data.draw(pools())
    n = len(scores["energy"])
    keep = data.draw(keeps(n))
    cfg = SelectionConfig(selector=selector, keep=keep, safety_net=safety_net, alpha=data.draw(st.floats(-2, 2)))
    kept = select(scores, n_classes, cfg)
    assert kept.dtype == np.int64
    assert len(kept) == resolve_k(keep, n)
    assert np.all(np.diff(kept) > 0) and (len(kept) == 0 or 0 <= kept[0] <= kept[-1] < n)


@FAST
@given(data=st.data(), selector=st.sampled_from(sorted(SELECTORS)), safety_net=st.booleans())
def test_deterministic(data, selector, safety_net):
    scores, n_classes = data.draw(pools())
    cfg = SelectionConfig(selector=selector, keep=data.draw(keeps(len(scores["energy"]))), safety_net=safety_net)
    copy = {name: values.copy() for name, values in scores.items()}
    np.testing.assert_array_equal(select(scores, n_classes, cfg), select(copy, n_classes, cfg))


def test_random_depends_on_the_seed():
    scores = make_scores(np.zeros(1000), np.arange(1000) % 7)
    picks = {seed: select(scores, 7, SelectionConfig(selector="random", keep=100, seed=seed)) for seed in (0, 1)}
    assert not np.array_equal(picks[0], picks[1])
    np.testing.assert_array_equal(picks[0], select(scores, 7, SelectionConfig(selector="random", keep=100, seed=0)))


@FAST
@given(data=st.data(), selector=st.sampled_from(sorted(SELECTORS)))
def test_without_safety_net_smaller_budgets_are_subsets(data, selector):
    scores, n_classes = data.draw(pools())
    n = len(scores["energy"])
    k_small, k_large = sorted(data.draw(st.lists(st.integers(1, n), min_size=2, max_size=2)))
    small, large = (select(scores, n_classes, SelectionConfig(selector=selector, keep=k, safety_net=False))
                    for k in (k_small, k_large))
    assert set(small) <= set(large)


@FAST
@given(data=st.data(), selector=st.sampled_from(DETERMINISTIC), safety_net=st.booleans())
def test_nan_is_never_kept_over_a_finite_value_in_its_ranking(data, selector, safety_net):
    scores, n_classes = data.draw(pools())
    cfg = SelectionConfig(selector=selector, keep=data.draw(keeps(len(scores["energy"]))), safety_net=safety_net)
    kept = np.zeros(len(scores["energy"]), dtype=bool)
    kept[select(scores, n_classes, cfg)] = True
    column = scores["entropy" if selector == "entropy" else "energy"]
    # One ranking without the Safety-Net, one per predicted class with it.
    groups = scores["pred"] if safety_net else np.zeros_like(scores["pred"])
    for g in np.unique(groups):
        in_g = groups == g
        if (kept & in_g & np.isnan(column)).any():
            assert kept[in_g & ~np.isnan(column)].all()


@FAST
@given(data=st.data(), selector=st.sampled_from(DETERMINISTIC))
def test_safety_net_takes_quota_best_per_class(data, selector):
    scores, n_classes = data.draw(pools())
    n = len(scores["energy"])
    cfg = SelectionConfig(selector=selector, keep=data.draw(keeps(n)), alpha=data.draw(st.floats(-2, 2)))
    kept = np.zeros(n, dtype=bool)
    kept[select(scores, n_classes, cfg)] = True
    quotas = safety_net_quotas(np.bincount(scores["pred"], minlength=n_classes), resolve_k(cfg.keep, n), cfg.alpha)
    np.testing.assert_array_equal(class_counts(np.flatnonzero(kept), scores, n_classes), quotas)
    priority = np.nan_to_num(get_selector(selector)(scores, None), nan=np.inf)
    for c in range(n_classes):
        in_c = scores["pred"] == c
        if kept[in_c].any() and (~kept & in_c).any():
            assert priority[kept & in_c].max() <= priority[~kept & in_c].min()


@FAST
@given(data=st.data(), selector=st.sampled_from(sorted(SELECTORS)))
def test_with_safety_net_each_class_keeps_a_prefix_of_its_ranking(data, selector):
    # Inside one class, the images kept at two budgets are nested, the smaller quota's set inside the larger's.
    scores, n_classes = data.draw(pools(min_n=2))
    n = len(scores["energy"])
    k1, k2 = data.draw(st.lists(st.integers(1, n), min_size=2, max_size=2))
    alpha = data.draw(st.floats(-2, 2))
    sets = [select(scores, n_classes, SelectionConfig(selector=selector, keep=k, alpha=alpha)) for k in (k1, k2)]
    for c in range(n_classes):
        a, b = (set(s[scores["pred"][s] == c]) for s in sets)
        assert a <= b or b <= a


@FAST
@given(data=st.data(), selector=st.sampled_from(sorted(SELECTORS)))
def test_raising_k_never_removes_a_kept_image(data, selector):
    # House monotone: Webster quotas never shrink as k grows, and each class keeps a prefix of its ranking.
    scores, n_classes = data.draw(pools(min_n=2))
    n = len(scores["energy"])
    k = data.draw(st.integers(1, n - 1))
    alpha = data.draw(st.floats(-2, 2))
    smaller, larger = (
        set(select(scores, n_classes, SelectionConfig(selector=selector, keep=keep, alpha=alpha)).tolist())
        for keep in (k, k + 1)
    )
    assert smaller <= larger and len(larger) == k + 1


def test_no_alabama_paradox_one_more_image_never_costs_a_class_its_image():
    # Proportional quotas over N = [3, 1, 3]: largest remainder gave [1, 1, 1] at k=3 but [2, 0, 2] at k=4.
    # Webster's seats come in one order, so every class's count only grows with k.
    scores = make_scores(np.arange(7.0), [0, 0, 0, 1, 2, 2, 2])
    configs = [SelectionConfig("energy", keep=k, alpha=1.0) for k in (3, 4, 5)]
    counts = [class_counts(select(scores, 3, cfg), scores, 3).tolist() for cfg in configs]
    assert counts == [[2, 0, 1], [2, 0, 2], [2, 1, 2]]


# --- safety_net_quotas ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "counts, k, alpha, quotas",
    [
        # alpha=1, proportional: ideal [3, 1.5, 0.5]; the one leftover goes to the tie's lower class id, 1.
        ([6, 3, 1], 5, 1.0, [3, 2, 0]),
        # alpha=0, uniform over the 3 non-empty classes: ideal 2 each; class 3 holds only 1, its leftover is
        # split between classes 0 and 2 (0.5 each) and the tie goes to class 0. Class 1 (N=0) gets nothing.
        ([10, 0, 5, 1], 6, 0.0, [3, 0, 2, 1]),
        # alpha=-1 favours rare classes: weights [1/2, 1/8, -, 1/4], ideal [2.86, 0.71, -, 1.43] -> [3, 1, -, 1];
        # class 0 is capped at 2, and the leftover goes to class 3 (ideal 0.67 vs class 1's 0.33).
        ([2, 8, 0, 4], 5, -1.0, [2, 1, 0, 2]),
        # alpha=0.5: weights [1, 2, 3] -> ideal [1, 2, 3].
        ([1, 4, 9], 6, 0.5, [1, 2, 3]),
        # A quota larger than its class: the rest spills over until every class is full.
        ([1, 1, 10], 12, -1.0, [1, 1, 10]),
        ([0, 0, 5], 0, -2.0, [0, 0, 0]),
    ],
)
def test_quotas_by_hand(counts, k, alpha, quotas):
    assert safety_net_quotas(np.array(counts), k, alpha).tolist() == quotas


def test_quotas_survive_extreme_alpha():
    counts = np.array([10**6, 1, 1000])
    assert safety_net_quotas(counts, 3, 200.0).tolist() == [3, 0, 0]
    # The rarest class fills up at 1; its leftover goes to the next rarest, not split evenly.
    assert safety_net_quotas(counts, 3, -200.0).tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "counts, k, alpha, match",
    [
        ([2, 3], 6, 1.0, r"k must be an int in \[0, 5\] \(the pool size\), got 6"),
        ([2, 3], -1, 1.0, "got -1"),
        ([2, 3], 2.0, 1.0, "got 2.0"),
        ([2, -3], 1, 1.0, "pred_counts must be >= 0, got -3 at class 1"),
        ([2.0, 3.0], 1, 1.0, "1-D integer array"),
        ([2, 3], 1, math.nan, "alpha must be finite, got nan"),
    ],
)
def test_quota_errors(counts, k, alpha, match):
    with pytest.raises(ValueError, match=match):
        safety_net_quotas(np.array(counts), k, alpha)


quota_inputs = st.lists(st.integers(0, 30), min_size=1, max_size=8).filter(lambda c: sum(c) > 0)


@FAST
@given(counts=quota_inputs, data=st.data(), alpha=st.floats(-3, 3))
def test_quotas_sum_to_k_within_caps(counts, data, alpha):
    counts = np.array(counts)
    k = data.draw(st.integers(0, int(counts.sum())))
    quotas = safety_net_quotas(counts, k, alpha)
    assert quotas.sum() == k
    assert (quotas >= 0).all() and (quotas <= counts).all()
