"""Domain-aware selectors (knn, knn_agree, knn_cover, knn_sample, auto_energy): by hand, exact k, quotas, determinism."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plada_core.selection import SelectionConfig, energy_direction, get_selector, resolve_k, safety_net_quotas, select

RELEVANCE_SELECTORS = ["knn", "knn_agree", "knn_cover", "knn_sample", "auto_energy"]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def scores_of(knn_sim, pred=None, energy=None, knn_agree=None, knn_nn=None, margin=None):
    n = len(knn_sim)
    return {
        "margin": np.asarray(margin if margin is not None else np.zeros(n), np.float32),
        "knn_sim": np.asarray(knn_sim, np.float32),
        "pred": np.asarray(pred if pred is not None else np.zeros(n), np.int32),
        "energy": np.asarray(energy if energy is not None else np.zeros(n), np.float32),
        "knn_agree": np.asarray(knn_agree if knn_agree is not None else np.zeros(n), np.float32),
        "knn_nn": np.asarray(knn_nn if knn_nn is not None else np.arange(n), np.int32),
    }


@st.composite
def relevance_pools(draw):
    n = draw(st.integers(1, 40))
    n_classes = draw(st.integers(1, 4))
    sims = st.sampled_from([0.1, 0.5, 0.5, 0.9, np.nan])
    return (
        scores_of(
            draw(st.lists(sims, min_size=n, max_size=n)),
            pred=draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n)),
            energy=draw(st.lists(st.sampled_from([-2.0, -1.0, 0.0, 3.0]), min_size=n, max_size=n)),
            knn_agree=draw(st.lists(st.sampled_from([0.0, 0.4, 1.0]), min_size=n, max_size=n)),
            knn_nn=draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)),
            margin=draw(st.lists(st.sampled_from([0.0, 0.3, 0.9, np.nan]), min_size=n, max_size=n)),
        ),
        n_classes,
    )


def test_knn_keeps_the_most_target_like():
    scores = scores_of([0.2, 0.9, 0.1, 0.8, 0.5])
    assert select(scores, 1, SelectionConfig(selector="knn", keep=2, safety_net=False)).tolist() == [1, 3]


def test_knn_agree_prefers_label_consistent_images():
    scores = scores_of([0.9, 0.8, 0.7], knn_agree=[0.0, 1.0, 1.0])
    assert select(scores, 1, SelectionConfig(selector="knn_agree", keep=2, safety_net=False)).tolist() == [1, 2]


def test_knn_cover_takes_the_best_of_every_target_neighbourhood_first():
    # Group 0 holds the three most similar images; plain knn keeps only group 0, knn_cover one of each group.
    sim = [0.99, 0.98, 0.97, 0.5, 0.4]
    nn = [0, 0, 0, 1, 2]
    scores = scores_of(sim, knn_nn=nn)
    assert select(scores, 1, SelectionConfig(selector="knn", keep=3, safety_net=False)).tolist() == [0, 1, 2]
    assert select(scores, 1, SelectionConfig(selector="knn_cover", keep=3, safety_net=False)).tolist() == [0, 3, 4]
    # the second round goes by similarity again
    assert select(scores, 1, SelectionConfig(selector="knn_cover", keep=4, safety_net=False)).tolist() == [0, 1, 3, 4]


def test_knn_sample_finishes_a_round_before_any_second_pick_and_visits_groups_at_random():
    # 30 groups of 3; inside each group the first image is the most similar.
    group = np.repeat(np.arange(30), 3)
    sim = np.tile([0.9, 0.5, 0.1], 30) + np.linspace(0, 0.05, 90)  # global order would favour the last groups
    scores = scores_of(sim, knn_nn=group)
    picks = {}
    for seed in range(3):
        cfg = SelectionConfig(selector="knn_sample", keep=40, safety_net=False, seed=seed)
        kept = select(scores, 1, cfg)
        rank = kept % 3
        assert (rank == 0).sum() == 30 and (rank == 1).sum() == 10 and not (rank == 2).any()
        assert len(np.unique(group[kept][rank == 1])) == 10  # second picks come from ten different groups
        picks[seed] = tuple(kept)
    assert len(set(picks.values())) == 3  # the partial round depends on the seed
    # ... while knn_cover's partial round goes to the most similar groups
    cover = select(scores, 1, SelectionConfig(selector="knn_cover", keep=40, safety_net=False))
    assert set(group[cover][cover % 3 == 1]) == set(range(20, 30))


def test_knn_sample_prefers_the_confidently_labelled_match_inside_a_group():
    # one group; image 1 is a little less similar than image 0 but far more confidently labelled
    scores = scores_of([0.9, 0.8, 0.1], knn_nn=[0, 0, 0], margin=[0.1, 0.9, 1.0])
    assert select(scores, 1, SelectionConfig(selector="knn_sample", keep=1, safety_net=False)).tolist() == [1]
    assert select(scores, 1, SelectionConfig(selector="knn_cover", keep=1, safety_net=False)).tolist() == [0]


def test_energy_direction_and_auto_energy():
    sim = np.linspace(0, 1, 20)
    follows = scores_of(sim, energy=-sim)  # low energy = target-like: the paper's rule
    inverted = scores_of(sim, energy=sim)  # high energy = target-like: far-OOD
    assert energy_direction(follows) == 1 and energy_direction(inverted) == -1
    cfg = SelectionConfig(selector="auto_energy", keep=5, safety_net=False)
    energy = SelectionConfig("energy", keep=5, safety_net=False)
    assert select(follows, 1, cfg).tolist() == select(follows, 1, energy).tolist()
    opposite = SelectionConfig(selector="opposite_energy", keep=5, safety_net=False)
    assert select(inverted, 1, cfg).tolist() == select(inverted, 1, opposite).tolist() == [15, 16, 17, 18, 19]
    assert energy_direction(scores_of([np.nan], energy=[1.0])) == 1


def test_relevance_selectors_name_the_missing_column():
    with pytest.raises(ValueError, match="no column 'knn_sim'"):
        select({"energy": np.zeros(3), "pred": np.zeros(3, np.int32)}, 1, SelectionConfig(selector="knn", keep=1))


@FAST
@given(data=st.data(), selector=st.sampled_from(RELEVANCE_SELECTORS), safety_net=st.booleans())
def test_exact_k_and_deterministic(data, selector, safety_net):
    scores, n_classes = data.draw(relevance_pools())
    n = len(scores["knn_sim"])
    keep = data.draw(st.one_of(st.integers(1, n), st.floats(1e-3, 1.0)))
    cfg = SelectionConfig(selector=selector, keep=keep, safety_net=safety_net, seed=data.draw(st.integers(0, 9)))
    kept = select(scores, n_classes, cfg)
    assert len(kept) == resolve_k(keep, n) == len(np.unique(kept))
    copy = {k: v.copy() for k, v in scores.items()}
    np.testing.assert_array_equal(kept, select(copy, n_classes, cfg))


@FAST
@given(data=st.data(), selector=st.sampled_from(RELEVANCE_SELECTORS))
def test_safety_net_quotas_and_best_per_class(data, selector):
    scores, n_classes = data.draw(relevance_pools())
    n = len(scores["knn_sim"])
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
