"""The scoring pass's optional data-pruning columns: ``density_ratio`` (a fitted target-vs-pool classifier on the
unit embeddings) and ``label_stable`` (the teacher's label under flipped/shifted views), against the pure functions
of ``plada_core.pruning`` they wrap."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from torch import nn

from plada_core.images import PreprocessConfig
from plada_core.models import PladaCNN
from plada_core.pruning import PRUNING_COLUMNS, density_ratio_scores, label_stability
from plada_core.relevance import RELEVANCE_COLUMNS, build_bank, pooled_features
from plada_core.scoring import SCORE_COLUMNS, ScoringConfig, fit_pool_density_ratio, score_stream

PRE = PreprocessConfig(image_size=8, channels=1)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, "L").save(buf, "PNG")
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _images(seed: int, n: int, striped: bool) -> np.ndarray:
    """Two kinds of 8x8 images: noisy horizontal stripes (the "target" look) and plain noise (the rest of the pool)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 25, (n, 8, 8))
    base = np.where(np.arange(8)[:, None] % 2 == 0, 220.0, 30.0) if striped else np.full((8, 8), 128.0)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _x(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images.astype(np.float32)[:, None] / 255)


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    model = PladaCNN(num_classes=3).eval()
    target = _images(0, 60, striped=True)
    bank = build_bank(model, _x(target), torch.arange(60) % 3)
    pool = np.concatenate([_images(1, 30, striped=True), _images(2, 90, striped=False)])  # 30 target-like first
    samples = [(i, _png(img)) for i, img in enumerate(pool)]
    return model, bank, pool, samples


def test_the_fitted_ratio_ranks_target_like_pool_images_first(setting):
    model, bank, _, samples = setting
    ratio, fitted = fit_pool_density_ratio(model, samples[::2] + [(999, b"broken")], _decode, PRE, ScoringConfig(),
                                           bank)  # fmt: skip
    assert fitted == {"n_target": 60, "n_pool": 60, "n_dropped": 1}
    out = score_stream(model, samples, _decode, PRE, ScoringConfig(batch_size=16, density_ratio=True), bank=bank,
                       ratio=ratio)  # fmt: skip
    assert list(out.frame.columns) == SCORE_COLUMNS + RELEVANCE_COLUMNS + ["density_ratio"]
    column = out.frame["density_ratio"].to_numpy()
    target_like = np.r_[np.ones(30), np.zeros(90)]
    assert column.dtype == np.float32 and roc_auc_score(target_like, column) > 0.9
    # the column is density_ratio_scores of the unit embeddings the kNN columns use
    x = _x(np.stack([_decode(data) for _, data in samples]))
    emb = nn.functional.normalize(pooled_features(model, x)[0], dim=1).detach()
    np.testing.assert_allclose(column, density_ratio_scores(ratio, emb), rtol=1e-4, atol=1e-4)
    again, _ = fit_pool_density_ratio(model, samples[::2], _decode, PRE, ScoringConfig(), bank)
    np.testing.assert_array_equal(again.weight, ratio.weight)  # seeded: the same sample gives the same fit


@pytest.mark.parametrize(("views", "flip"), [("shifts", False), ("flip+shifts", True)])
def test_label_stable_is_the_share_of_views_that_keep_the_label(setting, views, flip):
    model, _, pool, samples = setting
    plain = score_stream(model, samples, _decode, PRE, ScoringConfig(batch_size=32))
    out = score_stream(model, samples, _decode, PRE, ScoringConfig(batch_size=32, label_stability=views))
    assert list(out.frame.columns) == SCORE_COLUMNS + ["label_stable"]
    for column in SCORE_COLUMNS:  # the paper's columns do not move
        np.testing.assert_allclose(out.frame[column], plain.frame[column], rtol=1e-5, atol=1e-6)
    expected = label_stability(model, _x(pool), out.frame["pred"].to_numpy(), flip=flip)
    np.testing.assert_allclose(out.frame["label_stable"], expected)
    assert set(np.unique(expected)) <= {k / (2 + flip) for k in range(3 + flip)}


def test_both_columns_together_and_on_an_empty_shard(setting):
    model, bank, _, samples = setting
    ratio, _ = fit_pool_density_ratio(model, samples, _decode, PRE, ScoringConfig(), bank)
    cfg = ScoringConfig(density_ratio=True, label_stability="shifts")
    both = score_stream(model, samples[:5], _decode, PRE, cfg, ratio=ratio)  # no bank needed to score
    assert list(both.frame.columns) == SCORE_COLUMNS + PRUNING_COLUMNS
    empty = score_stream(model, [], _decode, PRE, cfg, bank=bank, ratio=ratio)
    assert list(empty.frame.columns) == SCORE_COLUMNS + RELEVANCE_COLUMNS + PRUNING_COLUMNS and empty.frame.empty


def test_bad_use_is_one_clear_error(setting):
    model, bank, _, samples = setting
    with pytest.raises(ValueError, match="density_ratio is on but no DensityRatio was given: fit one"):
        score_stream(model, samples, _decode, PRE, ScoringConfig(density_ratio=True), bank=bank)
    with pytest.raises(ValueError, match="needs the teacher's target bank"):
        fit_pool_density_ratio(model, samples, _decode, PRE, ScoringConfig(), None)
    with pytest.raises(ValueError, match="no pool image of the sample could be scored"):
        fit_pool_density_ratio(model, [(0, b"broken")], _decode, PRE, ScoringConfig(), bank)
    with pytest.raises(ValueError, match="label_stability"):
        ScoringConfig(label_stability="flip")
