"""Selectors from the data-pruning literature (ccs, easy_first, hard_first, density_ratio, reliable) and the pure
functions behind their score columns (fit_density_ratio, density_ratio_scores, label_stability)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from plada_core.auto_selection import candidate_grid, required_columns
from plada_core.pruning import (
    CCS_BETA,
    CCS_STRATA,
    PRUNING_COLUMNS,
    DensityRatio,
    density_ratio_scores,
    fit_density_ratio,
    label_stability,
)
from plada_core.relevance import RELEVANCE_COLUMNS
from plada_core.scoring import SCORE_COLUMNS
from plada_core.selection import SELECTORS, SelectionConfig, get_selector, resolve_k, safety_net_quotas, select

PRUNING_SELECTORS = ["ccs", "easy_first", "hard_first", "density_ratio", "reliable"]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def scores_of(margin, pred=None, density_ratio=None, label_stable=None):
    n = len(margin)
    return {
        "margin": np.asarray(margin, np.float32),
        "pred": np.asarray(pred if pred is not None else np.zeros(n), np.int32),
        "density_ratio": np.asarray(density_ratio if density_ratio is not None else np.zeros(n), np.float32),
        "label_stable": np.asarray(label_stable if label_stable is not None else np.ones(n), np.float32),
    }


@st.composite
def pruning_pools(draw, min_n=1):
    n = draw(st.integers(min_n, 60))
    n_classes = draw(st.integers(1, 4))
    column = lambda values: draw(st.lists(st.sampled_from(values), min_size=n, max_size=n))  # noqa: E731
    scores = scores_of(
        column([0.0, 0.1, 0.5, 0.5, 0.9, 1.0, np.nan]),
        pred=draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n)),
        density_ratio=column([-2.0, 0.0, 0.0, 1.5, np.nan]),
        label_stable=column([0.0, 0.5, 1.0, 1.0, np.nan]),
    )
    return scores, n_classes


def nan_column(selector):
    return {"density_ratio": "density_ratio"}.get(selector, "margin")


# --- the registry contract, on pools with many ties and NaNs ---------------------------------------------------


def test_registered_with_their_columns():
    assert set(PRUNING_SELECTORS) <= set(SELECTORS)
    assert required_columns("ccs") == required_columns("hard_first") == {"margin", "pred"}
    assert required_columns("easy_first") == {"margin"}
    assert required_columns("density_ratio") == {"density_ratio"}
    assert required_columns("reliable") == {"label_stable", "margin"}


def test_auto_grid_skips_the_selectors_whose_column_is_absent():
    base = SelectionConfig("energy", keep=10)
    without = {c.config.selector for c in candidate_grid(SCORE_COLUMNS + RELEVANCE_COLUMNS, base, alphas=())}
    assert {"ccs", "easy_first", "hard_first"} <= without and not {"density_ratio", "reliable"} & without
    full = {c.config.selector for c in candidate_grid(SCORE_COLUMNS + RELEVANCE_COLUMNS + PRUNING_COLUMNS, base)}
    assert set(PRUNING_SELECTORS) <= full


def test_missing_column_is_named():
    with pytest.raises(ValueError, match="no column 'label_stable'"):
        select({"margin": np.zeros(3), "pred": np.zeros(3, np.int32)}, 1, SelectionConfig("reliable", keep=1))


@FAST
@given(data=st.data(), selector=st.sampled_from(PRUNING_SELECTORS), safety_net=st.booleans())
def test_exact_k_and_deterministic_per_seed(data, selector, safety_net):
    scores, n_classes = data.draw(pruning_pools())
    n = len(scores["margin"])
    keep = data.draw(st.one_of(st.integers(1, n), st.floats(1e-3, 1.0)))
    cfg = SelectionConfig(selector=selector, keep=keep, safety_net=safety_net, seed=data.draw(st.integers(0, 9)))
    kept = select(scores, n_classes, cfg)
    assert kept.dtype == np.int64 and len(kept) == resolve_k(keep, n) == len(np.unique(kept))
    np.testing.assert_array_equal(kept, select({k: v.copy() for k, v in scores.items()}, n_classes, cfg))


@FAST
@given(data=st.data(), selector=st.sampled_from(PRUNING_SELECTORS))
def test_safety_net_quotas_and_best_per_class(data, selector):
    scores, n_classes = data.draw(pruning_pools())
    n = len(scores["margin"])
    cfg = SelectionConfig(selector=selector, keep=data.draw(st.integers(1, n)), alpha=data.draw(st.floats(-1, 2)))
    kept = np.zeros(n, bool)
    kept[select(scores, n_classes, cfg)] = True
    quotas = safety_net_quotas(np.bincount(scores["pred"], minlength=n_classes), resolve_k(cfg.keep, n), cfg.alpha)
    np.testing.assert_array_equal(np.bincount(scores["pred"][kept], minlength=n_classes), quotas)
    priority = np.nan_to_num(get_selector(selector)(scores, np.random.default_rng(cfg.seed)), nan=np.inf)
    for c in range(n_classes):
        in_c = scores["pred"] == c
        if kept[in_c].any() and (~kept & in_c).any():
            assert priority[kept & in_c].max() <= priority[~kept & in_c].min()


@FAST
@given(data=st.data(), selector=st.sampled_from(PRUNING_SELECTORS), safety_net=st.booleans())
def test_nan_is_never_kept_over_a_finite_value_in_its_ranking(data, selector, safety_net):
    scores, n_classes = data.draw(pruning_pools())
    cfg = SelectionConfig(selector=selector, keep=data.draw(st.integers(1, len(scores["margin"]))),
                          safety_net=safety_net)  # fmt: skip
    kept = np.zeros(len(scores["margin"]), bool)
    kept[select(scores, n_classes, cfg)] = True
    nan = np.isnan(scores[nan_column(selector)])
    if selector == "reliable":
        nan |= np.isnan(scores["label_stable"])
    groups = scores["pred"] if safety_net else np.zeros_like(scores["pred"])
    for g in np.unique(groups):
        in_g = groups == g
        if (kept & in_g & nan).any():
            assert kept[in_g & ~nan].all()


def test_seed_changes_ccs_only():
    rng = np.random.default_rng(5)
    scores = scores_of(rng.random(500), pred=rng.integers(0, 5, 500), density_ratio=rng.normal(size=500))
    for selector in PRUNING_SELECTORS:
        a, b = (select(scores, 5, SelectionConfig(selector, keep=50, seed=s)) for s in (0, 1))
        assert np.array_equal(a, b) == (selector != "ccs"), selector


# --- ccs ---------------------------------------------------------------------------------------------------------


def stratified_pool(sizes, n_cut):
    """Margins at the centres of CCS_STRATA equal-width strata (sizes[b] images in stratum b), then ``n_cut``
    images harder than all of them (margin 0)."""
    assert len(sizes) == CCS_STRATA
    centres = 0.2 + 0.8 * (np.arange(CCS_STRATA) + 0.5) / CCS_STRATA  # margins in [0.2, 1]
    margin = np.concatenate([np.repeat(centres, sizes), np.zeros(n_cut)])
    stratum = np.concatenate([np.repeat(np.arange(CCS_STRATA), sizes), np.full(n_cut, -1)])
    return margin, stratum


def test_ccs_drops_the_hardest_beta_of_each_class_first():
    margin, _ = stratified_pool([9] * CCS_STRATA, 0)
    rng = np.random.default_rng(0)
    margin = rng.permutation(margin + rng.uniform(0, 1e-3, len(margin)))  # distinct, shuffled
    n = len(margin)
    n_cut = math.floor(CCS_BETA * n)
    hardest = np.argsort(margin)[:n_cut]
    scores = scores_of(margin)
    kept = select(scores, 1, SelectionConfig("ccs", keep=n - n_cut, safety_net=False))
    assert not set(hardest) & set(kept)
    # a budget past the cut takes the least hard of the cut first
    kept = select(scores, 1, SelectionConfig("ccs", keep=n - n_cut + 3, safety_net=False))
    assert set(kept) & set(hardest) == set(hardest[-3:])
    # per class: two classes, each loses its own hardest tenth
    pred = np.arange(n) % 2
    kept = set(select(scores_of(margin, pred=pred), 2, SelectionConfig("ccs", keep=n - 2 * (n_cut // 2), alpha=1.0)))
    for c in (0, 1):
        members = np.flatnonzero(pred == c)
        cut = members[np.argsort(margin[members])[: math.floor(CCS_BETA * len(members))]]
        assert not set(cut) & kept


def test_ccs_samples_the_strata_evenly_small_strata_whole():
    sizes = [2] + [10] * (CCS_STRATA - 1)
    n_cut = 21  # floor(0.1 * (2 + 190 + 21)) = 21: exactly the margin-0 images fall to the cut
    assert math.floor(CCS_BETA * (sum(sizes) + n_cut)) == n_cut
    margin, stratum = stratified_pool(sizes, n_cut)
    scores = scores_of(margin)
    for seed in range(3):
        # two full rounds (40), then stratum 0 is empty and three more rounds over the other 19
        kept = select(scores, 1, SelectionConfig("ccs", keep=40 + 3 * 19, safety_net=False, seed=seed))
        counts = np.bincount(stratum[kept], minlength=CCS_STRATA)
        assert counts.tolist() == [2] + [5] * (CCS_STRATA - 1)
        partial = select(scores, 1, SelectionConfig("ccs", keep=40 + 3 * 19 + 4, safety_net=False, seed=seed))
        counts = np.bincount(stratum[partial], minlength=CCS_STRATA)
        assert sorted(counts[1:].tolist()) == [5] * 15 + [6] * 4


def test_ccs_spreads_every_class_quota_over_its_strata():
    margin, stratum = stratified_pool([6] * CCS_STRATA, 0)
    n = len(margin)
    margin, stratum = np.tile(margin, 2), np.tile(stratum, 2)
    pred = np.repeat([0, 1], n)
    scores = scores_of(margin, pred=pred)
    # each class loses its floor(0.1 * 120) = 12 hardest (strata 0 and 1, margins 0.22 and 0.26); 18 strata remain
    kept = select(scores, 2, SelectionConfig("ccs", keep=2 * 18 * 2, alpha=0.0))
    for c in (0, 1):
        counts = np.bincount(stratum[kept][pred[kept] == c], minlength=CCS_STRATA)
        assert counts.tolist() == [0, 0] + [2] * 18


# --- easy_first, hard_first, density_ratio, reliable ---------------------------------------------------------


def test_easy_first_and_hard_first_are_the_two_ends():
    margin = np.linspace(0.05, 1.0, 20)[np.random.default_rng(1).permutation(20)]
    scores = scores_of(margin)
    order = np.argsort(-margin)  # easiest first
    assert set(select(scores, 1, SelectionConfig("easy_first", keep=5, safety_net=False))) == set(order[:5])
    # hard_first: the two hardest (the cut) go last, then hardest first
    assert set(select(scores, 1, SelectionConfig("hard_first", keep=5, safety_net=False))) == set(order[-7:-2])
    assert set(select(scores, 1, SelectionConfig("hard_first", keep=19, safety_net=False))) == set(order[:-1])


def test_density_ratio_ranks_by_its_column():
    scores = scores_of(np.ones(5), density_ratio=[0.5, 3.0, -1.0, np.nan, 2.0])
    assert select(scores, 1, SelectionConfig("density_ratio", keep=2, safety_net=False)).tolist() == [1, 4]
    assert select(scores, 1, SelectionConfig("density_ratio", keep=5, safety_net=False)).tolist() == [0, 1, 2, 3, 4]


def test_reliable_ranks_stable_labels_first_then_confidence_then_position():
    stable = [0.5, 1.0, 1.0, 0.0, 1.0, 0.5, np.nan]
    margin = [0.99, 0.2, 0.7, 1.0, 0.7, 0.3, 1.0]
    priority = get_selector("reliable")(scores_of(margin, label_stable=stable), None)
    assert np.argsort(priority, kind="stable")[:6].tolist() == [2, 4, 1, 0, 5, 3] and np.isnan(priority[6])
    kept = select(scores_of(margin, label_stable=stable), 1, SelectionConfig("reliable", keep=3, safety_net=False))
    assert kept.tolist() == [1, 2, 4]


# --- fit_density_ratio / density_ratio_scores ----------------------------------------------------------------


def test_density_ratio_recovers_the_log_ratio_of_two_gaussian_clouds():
    rng = np.random.default_rng(0)
    mu_t, mu_p = np.array([1.0, 0.5, 0, 0]), np.array([-1.0, 0, 0, 0])
    target = rng.normal(size=(3000, 4)) + mu_t
    pool = rng.normal(size=(9000, 4)) + mu_p  # three times as many: the fit must not learn the size prior
    ratio = fit_density_ratio(target, pool, seed=0)
    probe = rng.normal(size=(2000, 4)) * 1.5
    truth = probe @ (mu_t - mu_p) - (mu_t @ mu_t - mu_p @ mu_p) / 2  # equal covariances: a linear log ratio
    got = density_ratio_scores(ratio, probe)
    assert got.dtype == np.float32 and got.shape == (2000,)
    # the default l2 shrinks the weights by a few percent (1.91 for a true 2): close, not exact
    assert np.corrcoef(got, truth)[0, 1] > 0.99 and np.abs(got - truth).mean() < 0.2
    # separates the clouds: nearly every target point scores above nearly every pool point
    t_scores, p_scores = density_ratio_scores(ratio, target[:500]), density_ratio_scores(ratio, pool[:500])
    assert (t_scores[:, None] > p_scores[None, :]).mean() > 0.9
    # deterministic, torch input accepted, and a byte round trip keeps the scores
    again = fit_density_ratio(target, pool, seed=0)
    np.testing.assert_array_equal(again.weight, ratio.weight)
    back = DensityRatio.from_bytes(ratio.to_bytes())
    np.testing.assert_array_equal(density_ratio_scores(back, torch.from_numpy(probe)), got)


def test_density_ratio_errors():
    with pytest.raises(ValueError, match="one width"):
        fit_density_ratio(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="at least one"):
        fit_density_ratio(np.zeros((0, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="width 4 expected.*another teacher"):
        density_ratio_scores(DensityRatio(np.zeros(4, np.float32), 0.0), np.zeros((2, 3)))


def test_density_ratio_caps_rows_by_a_seeded_subsample():
    rng = np.random.default_rng(2)
    target, pool = rng.normal(size=(400, 3)) + 1, rng.normal(size=(400, 3))
    a, b = (fit_density_ratio(target, pool, seed=s, max_rows=100) for s in (0, 1))
    assert not np.array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.weight, fit_density_ratio(target, pool, seed=0, max_rows=100).weight)


# --- label_stability -------------------------------------------------------------------------------------------


class MeanSign(nn.Module):
    """Class 1 when an image's mean is positive: blind to flips and (up to the edges) to shifts."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-m, m], dim=1)


class LeftHeavy(nn.Module):
    """Class 1 when the left half is brighter than the right: a flip swaps the label."""

    def forward(self, x):
        w = x.shape[-1] // 2
        d = x[..., :w].mean(dim=(1, 2, 3)) - x[..., w:].mean(dim=(1, 2, 3))
        return torch.stack([-d, d], dim=1)


def test_label_stability_is_one_for_an_invariant_model():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 8, 8, generator=g) + torch.tensor([-2.0, 2.0]).repeat(8)[:, None, None, None]
    pred = MeanSign()(x).argmax(1)
    out = label_stability(MeanSign(), x, pred.numpy())
    assert out.dtype == np.float32 and out.tolist() == [1.0] * 16


def test_label_stability_counts_the_views_that_keep_the_label():
    x = torch.zeros(4, 1, 8, 8)
    x[:, :, :, :2] = 1.0  # a bright left edge: LeftHeavy says 1, its mirror image 0
    pred = torch.ones(4, dtype=torch.long)
    assert label_stability(LeftHeavy(), x, pred).tolist() == pytest.approx([2 / 3] * 4)  # only the flip disagrees
    assert label_stability(LeftHeavy(), x, pred, flip=False).tolist() == [1.0] * 4
    # against the opposite label: the flip agrees, a 3-pixel shift (edge replicated) still leans left
    assert label_stability(LeftHeavy(), x, 1 - pred, shifts=((0, 3),)).tolist() == [0.5] * 4
    with pytest.raises(ValueError, match="at least one view"):
        label_stability(LeftHeavy(), x, pred, shifts=(), flip=False)
