"""Leakage: exact and perceptual hashes, duplicate search (chunk-invariant, exact pairs marked), exclusion, and a
real CIFAR-10 image caught after JPEG re-encoding and resizing."""

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from plada_core.leakage import (
    DEFAULT_MAX_HAMMING,
    exact_hash,
    exclude,
    find_duplicates,
    hamming_distances,
    hash_images,
    perceptual_hash,
    perceptual_hashes,
    select_excluding,
)
from plada_core.selection import SelectionConfig, select

DATA_DIR = Path(os.environ.get("PLADA_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data")
CIFAR_TEST = DATA_DIR / "cifar10" / "test.parquet"


def _photos(n: int, seed: int, side: int = 32) -> np.ndarray:
    """Random RGB images with a photo-like 1/f spectrum (octaves of block noise, amplitude halving per octave),
    all different. Plain smooth noise would not do: with no energy above a few cycles, most of the hash's 8x8
    DCT coefficients are near zero and flip under JPEG (up to 10 bits), unlike real photos (module doc)."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((n, side, side, 3))
    for octave, cells in enumerate((2, 4, 8, 16, 32)):
        acc += np.kron(rng.normal(size=(n, cells, cells, 3)), np.ones((1, side // cells, side // cells, 1))) / 2**octave
    lo, hi = acc.min(axis=(1, 2, 3), keepdims=True), acc.max(axis=(1, 2, 3), keepdims=True)
    return np.round((acc - lo) / (hi - lo) * 255).astype(np.uint8)


def _jpeg(img: np.ndarray, quality: int = 90) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _resized(img: np.ndarray, side: int) -> np.ndarray:
    return np.array(Image.fromarray(img).resize((side, side), Image.BILINEAR))


def test_exact_hash_sees_pixels_and_shape():
    img = _photos(1, seed=0)[0]
    assert exact_hash(img) == exact_hash(img.copy()) and len(exact_hash(img)) == 16
    changed = img.copy()
    changed[5, 5, 0] ^= 1
    assert exact_hash(changed) != exact_hash(img)
    flat = np.zeros(12, np.uint8)
    assert exact_hash(flat.reshape(3, 4)) != exact_hash(flat.reshape(4, 3))


def test_perceptual_hash_single_equals_batch_and_handles_gray_and_sizes():
    imgs = _photos(5, seed=1)
    batch = perceptual_hashes(imgs)
    assert batch.dtype == np.uint64
    assert [perceptual_hash(i) for i in imgs] == list(batch)
    gray = imgs[..., 0]
    assert perceptual_hashes(gray).dtype == np.uint64
    assert perceptual_hash(_resized(imgs[0], 64)) != 0  # any size; area-resized to 32 inside
    with pytest.raises(ValueError, match="uint8"):
        perceptual_hashes(imgs.astype(np.float32))


def test_hash_is_robust_to_jpeg_and_resizing_but_separates_distinct_images():
    imgs = _photos(40, seed=2)
    base = perceptual_hashes(imgs)
    for transform in (lambda i: _jpeg(i, 90), lambda i: _jpeg(i, 75), lambda i: _resized(_resized(i, 64), 32)):
        d = np.bitwise_count(base ^ perceptual_hashes(np.stack([transform(i) for i in imgs])))
        assert d.max() <= DEFAULT_MAX_HAMMING, d
    upscaled = hash_images([_resized(i, 64) for i in imgs])  # hashed at 64 px
    assert np.bitwise_count(base ^ upscaled.perceptual).max() <= DEFAULT_MAX_HAMMING
    distinct = hamming_distances(base, base)[np.triu_indices(len(base), 1)]
    assert distinct.min() > DEFAULT_MAX_HAMMING


def test_find_duplicates_reports_exact_and_near_pairs():
    target = _photos(30, seed=3)
    pool = _photos(50, seed=4)
    pool[7] = target[2]  # exact copy
    pool[20] = _jpeg(target[11])  # near copy
    pool[33] = _resized(_resized(target[11], 64), 32)  # another near copy of the same image
    report = find_duplicates(hash_images(pool), hash_images(target))
    assert report.n_exact_pairs == 1 and report.n_near_pairs == 2
    assert report.pool_positions.tolist() == [7, 20, 33]
    assert report.target_positions.tolist() == [2, 11]
    assert report.examples(2)[0] == (7, 2, 0)
    summary = report.summary()
    assert summary["pool_images_matched"] == 3 and summary["target_images_matched"] == 2
    assert summary["exact_pairs"] == 1 and summary["max_hamming"] == DEFAULT_MAX_HAMMING


def test_find_duplicates_is_chunk_invariant_and_matches_brute_force():
    rng = np.random.default_rng(5)
    pool = hash_images(_photos(60, seed=5))
    target = hash_images(_photos(25, seed=6))
    # plant hashes a few bits away so that several pairs fall under a loose threshold
    one_bit = np.uint64(1) << rng.integers(0, 64, 10).astype(np.uint64)
    pool.perceptual[:10] = target.perceptual[rng.integers(0, 25, 10)] ^ one_bit
    big = find_duplicates(pool, target, max_hamming=20)
    small = find_duplicates(pool, target, max_hamming=20, chunk_pairs=7)  # one pool row per chunk
    brute = hamming_distances(pool.perceptual, target.perceptual)
    p, t = np.nonzero(brute <= 20)
    for r in (big, small):
        assert r.pool_index.tolist() == p.tolist() and r.target_index.tolist() == t.tolist()
        assert r.distance.tolist() == brute[p, t].tolist()
        assert r.pool_min_distance.tolist() == brute.min(axis=1).tolist()
    assert len(big.pool_positions) >= 10


def test_find_duplicates_edge_cases():
    hashes = hash_images(_photos(3, seed=7))
    empty = hash_images(np.zeros((0, 32, 32, 3), np.uint8))
    assert len(find_duplicates(empty, hashes).pool_index) == 0
    assert len(find_duplicates(hashes, empty).pool_index) == 0
    with pytest.raises(ValueError, match="max_hamming"):
        find_duplicates(hashes, hashes, max_hamming=65)


def test_exclude_takes_positions_or_a_mask():
    positions = np.array([0, 2, 3, 5, 8])
    assert exclude(positions, np.array([3, 8, 9])).tolist() == [0, 2, 5]
    mask = np.zeros(10, bool)
    mask[[0, 5]] = True
    assert exclude(positions, mask).tolist() == [2, 3, 8]
    assert exclude(positions, np.array([], dtype=np.int64)).tolist() == positions.tolist()
    with pytest.raises(ValueError, match="mask covers 4"):
        exclude(positions, np.zeros(4, bool))


def test_select_excluding_never_keeps_a_dropped_image_and_keeps_the_budget():
    rng = np.random.default_rng(8)
    scores = {"energy": rng.normal(size=100).astype(np.float32), "pred": rng.integers(0, 3, 100).astype(np.int32)}
    cfg = SelectionConfig(selector="energy", keep=20, safety_net=True)
    best = select(scores, 3, cfg)
    drop = best[:5]
    kept = select_excluding(scores, 3, cfg, drop)
    assert len(kept) == 20 and np.intersect1d(kept, drop).size == 0
    assert np.all(np.diff(kept) > 0)


@pytest.mark.natural
@pytest.mark.skipif(not CIFAR_TEST.is_file(), reason=f"CIFAR-10 parquet absent under {DATA_DIR}; set PLADA_DATA_DIR")
def test_real_cifar_images_are_caught_after_jpeg_and_resize():
    import pyarrow.parquet as pq

    # 200 images of all classes; offset 7 because [::50] holds test images 8450 and 8650, one photo twice
    jpgs = pq.read_table(CIFAR_TEST, columns=["jpg"]).column("jpg").to_pylist()[7::50]
    target = np.stack([np.array(Image.open(io.BytesIO(b)).convert("RGB")) for b in jpgs])
    pool = np.stack([_jpeg(target[17], 90), _resized(_resized(target[150], 64), 32), _jpeg(target[3], 75)])
    report = find_duplicates(hash_images(pool), hash_images(target))
    assert sorted(zip(report.pool_index.tolist(), report.target_index.tolist())) == [(0, 17), (1, 150), (2, 3)]
    # q90 and resizing change pixels; re-encoding at q75 can give the very same pixels back (JPEG is nearly
    # idempotent at the quality a file was saved with), so that pair may count as exact or near
    assert not report.exact[:2].any()
    distinct = hamming_distances(*(2 * [perceptual_hashes(target)]))[np.triu_indices(len(target), 1)]
    assert distinct.min() > DEFAULT_MAX_HAMMING


def test_check_pool_names_pool_indices_per_target_split():
    from plada_core.leakage import check_pool

    photos = _photos(6, seed=3)
    pool = hash_images(photos[:4])  # rows 0..3 are pool images 50..53
    targets = {"test": hash_images(np.stack([photos[2], _jpeg(photos[0]), photos[5]])),
               "train": hash_images(photos[4:5])}  # fmt: skip
    summary, matched = check_pool(np.arange(50, 54), pool, targets)
    assert matched["test"].tolist() == [50, 52] and matched["train"].tolist() == []
    assert summary["test"]["exact_pairs"] == 1 and summary["test"]["near_pairs"] == 1
    assert summary["test"]["examples"][0][:2] == [52, 0]  # the exact pair first, as a pool index
    assert summary["train"]["pool_images_matched"] == 0


def test_hash_images_of_a_stream_equals_the_batch():
    from plada_core.leakage import hash_images

    imgs = _photos(4, seed=3)
    batch, stream = hash_images(imgs), hash_images(iter(list(imgs)))
    assert np.array_equal(batch.exact, stream.exact) and np.array_equal(batch.perceptual, stream.perceptual)
