"""The ImageNet-21K-shaped simulator: exact shape, nested and valid selections, seeded, and the paper's range."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plada_core.payload import HEADER_SIZE, encode_payload
from plada_core.simulator import (
    IMAGENET21K_IMAGES,
    IMAGENET21K_SYNSETS,
    PoolLayout,
    SimulatedSelection,
    _label_probabilities,
    _task,
    entropy_bound,
    oracle_bits,
    prior_bound,
    simulate_layout,
    simulate_selections,
)

SMALL = {"n_reference": 300_000, "n_blocks": 500}


def test_full_layout_has_the_imagenet21k_shape():
    layout = simulate_layout(0)
    sizes = layout.sizes
    assert layout.n_reference == IMAGENET21K_IMAGES and sizes.size == IMAGENET21K_SYNSETS
    assert sizes.min() >= 1 and layout.starts[0] == 0
    np.testing.assert_array_equal(layout.starts[1:], np.cumsum(sizes)[:-1])
    # Ridnik et al.: ~51 % of synsets hold >= 500 images, and they hold ~13 M of the 14.2 M
    assert 0.45 < (sizes >= 500).mean() < 0.58
    assert 12.5e6 < sizes[sizes >= 500].sum() < 13.6e6


@pytest.mark.parametrize(("n_reference", "n_blocks"), [(1, 1), (10, 10), (1000, 7), (300_000, 500)])
def test_layout_is_exact_for_any_size(n_reference, n_blocks):
    layout = simulate_layout(3, n_reference=n_reference, n_blocks=n_blocks)
    assert layout.n_reference == n_reference and layout.sizes.size == n_blocks and layout.sizes.min() >= 1


def test_selections_are_valid_nested_and_seeded():
    layout = simulate_layout(1, **SMALL)
    keeps = (0.01, 0.005, 0.001)
    first = simulate_selections(keeps, n_classes=20, seed=4, layout=layout)
    again = simulate_selections(keeps, n_classes=20, seed=4, layout=layout)
    other = simulate_selections(keeps, n_classes=20, seed=5, layout=layout)
    for keep in keeps:
        sel = first[keep]
        assert sel.k == round(keep * SMALL["n_reference"]) and sel.keep == keep
        assert np.all(np.diff(sel.indices) > 0) and sel.indices[-1] < SMALL["n_reference"]
        assert sel.labels.min() >= 0 and sel.labels.max() < 20
        np.testing.assert_array_equal(sel.indices, again[keep].indices)
        np.testing.assert_array_equal(sel.labels, again[keep].labels)
        assert not np.array_equal(sel.indices, other[keep].indices)
    big, small = first[0.01], first[0.001]
    position = np.searchsorted(big.indices, small.indices)
    np.testing.assert_array_equal(big.indices[position], small.indices)  # nested, and labelled alike
    np.testing.assert_array_equal(big.labels[position], small.labels)


def test_selections_cluster_in_blocks_with_repeating_labels():
    layout = simulate_layout(0, **SMALL)
    sel = simulate_selections((0.01,), n_classes=50, layout=layout)[0.01]
    blocks = np.searchsorted(layout.starts, sel.indices, side="right") - 1
    touched = np.unique(blocks).size
    assert touched < 0.5 * SMALL["n_blocks"]  # a uniform 1 % sample would touch nearly every block
    same_block = blocks[1:] == blocks[:-1]
    assert (sel.labels[1:] == sel.labels[:-1])[same_block].mean() > 0.4


def test_paper_codec_lands_in_the_papers_range():
    """The issue's sanity check at full scale: the paper reports 85-206 KB at 1 %, 45-109 KB at 0.5 %."""
    selections = simulate_selections((0.01, 0.005), n_classes=100)
    kib = {
        keep: len(encode_payload(s.indices, s.labels, n_reference=s.n_reference, n_classes=100,
                                 fingerprint="0" * 64)) / 1024
        for keep, s in selections.items()
    }
    assert 85 <= kib[0.01] <= 206 and 45 <= kib[0.005] <= 109, kib


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"keeps": (0.0,)}, r"keeps must be float fractions in \(0, 1\], got \(0.0,\)"),
        ({"keeps": (1,)}, "keeps must be float fractions"),
        ({"keeps": ()}, "keeps must be float fractions"),
        ({"n_classes": 0}, r"n_classes must be an int in \[1, 1000000\], got 0"),
        ({"seed": -1}, "seed must be an int"),
    ],
)
def test_simulate_selections_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_selections(**({"layout": simulate_layout(0, n_reference=100, n_blocks=5)} | kwargs))


def test_simulate_layout_rejects_more_blocks_than_images():
    with pytest.raises(ValueError, match=r"n_blocks must be an int in \[1, 10\], got 11"):
        simulate_layout(0, n_reference=10, n_blocks=11)


# ---------------------------------------------------------------- oracle floor


def test_oracle_positions_and_blocks_by_hand():
    layout = PoolLayout(starts=np.array([0, 4]), sizes=np.array([4, 6]))
    sel = SimulatedSelection(np.array([0, 1, 5]), np.zeros(3, np.int32), 10, 1, 0.3, seed=0, layout=layout)
    floor = oracle_bits(sel)
    assert floor.labels == 0.0  # one class: every label is certain
    assert floor.positions == pytest.approx(2 * math.log2(6) / 3)  # 2 of block 0's 4, 1 of block 1's 6
    assert floor.blocks == pytest.approx((math.log2(5) + math.log2(7)) / 3)  # both blocks touched; counts
    assert floor.total == pytest.approx(floor.labels + floor.positions + floor.blocks)


def test_oracle_label_model_is_a_distribution():
    n_classes = 7
    confusable = np.array([[1, 1, 2], [0, 3, 4], [2, 2, 2], [0, 1, 2], [5, 6, 0], [1, 2, 3], [4, 5, 6]])
    for dominant, purity in [(0, 0.3), (2, 0.9), (4, 0.98)]:
        labels = np.arange(n_classes)
        p = _label_probabilities(labels, np.full(n_classes, dominant), np.full(n_classes, purity), confusable,
                                 n_classes)
        assert p.min() > 0 and p.sum() == pytest.approx(1.0)


def test_oracle_floor_is_below_every_codec_and_the_order0_bound():
    layout = simulate_layout(0, **SMALL)
    for sel in simulate_selections((0.01, 0.001), n_classes=50, layout=layout).values():
        floor = oracle_bits(sel)
        assert oracle_bits(sel) == floor  # pure
        _, counts = np.unique(sel.labels, return_counts=True)
        freq = counts / sel.k
        entropy = -(freq * np.log2(freq)).sum()
        assert 0 < floor.labels < entropy
        subset = (math.lgamma(sel.n_reference + 1) - math.lgamma(sel.k + 1)
                  - math.lgamma(sel.n_reference - sel.k + 1)) / math.log(2) / sel.k
        assert floor.positions + floor.blocks < subset
        for codec in ("paper-zstd19", "context-rc", "context-rc2"):
            size = len(encode_payload(sel.indices, sel.labels, n_reference=sel.n_reference, n_classes=50,
                                      fingerprint="0" * 64, codec=codec)) - HEADER_SIZE
            assert 8 * size / sel.k > floor.total, codec


def test_entropy_bound_lies_between_the_labels_and_the_floor_and_below_every_codec():
    layout = simulate_layout(0, **SMALL)
    for sel in simulate_selections((0.01, 0.001), n_classes=50, layout=layout).values():
        floor, bound = oracle_bits(sel), entropy_bound(sel)
        assert floor.labels < bound < floor.total
        for codec in ("paper-zstd19", "context-rc", "context-rc2"):
            size = len(encode_payload(sel.indices, sel.labels, n_reference=sel.n_reference, n_classes=50,
                                      fingerprint="0" * 64, codec=codec)) - HEADER_SIZE
            assert 8 * size / sel.k > bound, codec


def test_entropy_bound_of_one_block_is_a_coin_per_image():
    layout = simulate_layout(0, n_reference=1000, n_blocks=1)
    sel = simulate_selections((0.01,), n_classes=1, layout=layout)[0.01]  # one class: labels cost nothing
    p = sel.k / 1000  # one block: the fitted threshold keeps each image with probability k / n
    assert entropy_bound(sel) == pytest.approx(-1000 * (p * math.log2(p) + (1 - p) * math.log2(1 - p)) / sel.k)


def test_prior_bound_lies_between_the_entropy_bound_and_every_codec():
    layout = simulate_layout(0, **SMALL)
    for sel in simulate_selections((0.01, 0.001), n_classes=50, layout=layout).values():
        bound, prior = entropy_bound(sel), prior_bound(sel)
        assert prior_bound(sel) == prior  # pure
        assert bound < prior < bound + 1.5  # learning the parameters costs something, not everything
        for codec in ("paper-zstd19", "context-rc", "context-rc2"):
            size = len(encode_payload(sel.indices, sel.labels, n_reference=sel.n_reference, n_classes=50,
                                      fingerprint="0" * 64, codec=codec)) - HEADER_SIZE
            assert 8 * size / sel.k > prior, codec


def _direct_prior_bits(sel: SimulatedSelection) -> float:
    """prior_bound written block by block with plain loops and trapezoid integrals: an independent reference."""
    from plada_core import simulator

    layout = sel.layout
    task, _ = _task(sel.seed, layout, sel.n_classes)
    blocks = np.searchsorted(layout.starts, sel.indices, side="right") - 1
    threshold = simulator._threshold(layout.sizes.astype(float), task.block_mean.astype(float), sel.k)
    normal = lambda x: math.exp(-0.5 * (x / 0.8) ** 2) / (0.8 * math.sqrt(2 * math.pi))
    means = np.linspace(-5.0, 8.0, 6001)
    total = 0.0
    for b, size in enumerate(layout.sizes.tolist()):
        kept = int((blocks == b).sum())
        if task.relevant[b]:
            boosts = np.linspace(1.5, 3.0, 201)
            prior = np.array([np.trapezoid([normal(m - u) for u in boosts], boosts) / 1.5 for m in means])
        else:
            prior = np.array([normal(m) for m in means])
        p = np.array([0.5 * math.erfc((threshold - m) / math.sqrt(2)) for m in means])
        total -= math.log2(np.trapezoid(p**kept * (1 - p) ** (size - kept) * prior, means))
        labels = sel.labels[blocks == b]
        if not labels.size:
            continue
        low, high = (0.75, 0.98) if task.relevant[b] else (0.3, 0.9)
        purities = np.linspace(low, high, 2001)
        dominants = [int(task.dominant[b])] if task.relevant[b] else range(sel.n_classes)
        mass = 0.0
        for d in dominants:
            like = np.ones_like(purities)
            for label in labels.tolist():
                like *= _label_probabilities(np.full(purities.size, label), np.full(purities.size, d), purities,
                                             task.confusable, sel.n_classes)
            mass += np.trapezoid(like, purities) / (high - low) / len(dominants)
        total -= math.log2(mass)
    return total / sel.k


def test_prior_bound_matches_a_direct_integral_block_by_block():
    layout = simulate_layout(2, n_reference=4000, n_blocks=6)
    for sel in simulate_selections((0.01, 0.002), n_classes=3, seed=2, layout=layout).values():
        assert prior_bound(sel) == pytest.approx(_direct_prior_bits(sel), rel=1e-3)


def test_oracle_needs_the_layout():
    sel = SimulatedSelection(np.array([1]), np.array([0], np.int32), 10, 1, 0.1)
    with pytest.raises(ValueError, match="needs a selection made by simulate_selections"):
        oracle_bits(sel)
    with pytest.raises(ValueError, match="needs a selection made by simulate_selections"):
        entropy_bound(sel)
    with pytest.raises(ValueError, match="prior_bound needs a selection made by simulate_selections"):
        prior_bound(sel)
