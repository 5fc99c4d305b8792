"""Train/test leakage: which reference-pool images duplicate target images (the paper's intersection analysis).

A pool that holds copies of the target TEST images inflates every student's test accuracy, so a payload must not
select them, and a report must say how many there were. Pure functions over decoded uint8 arrays
(``plada_core.images.decode_image``): nothing here reads storage.

- ``exact_hash``: BLAKE2b of the decoded pixels, their shape and dtype. Equal only for pixel-identical images
  (a re-encoded JPEG is *not* exact: it changes pixels).
- ``perceptual_hash``: a 64-bit pHash. Grayscale (ITU-R 601 luma), area-resized to 32x32, 2-D DCT-II, the
  top-left 8x8 low-frequency block without its DC term (63 coefficients) compared with their median, plus one
  bit for "DC above mid-grey". Low frequencies survive JPEG re-encoding and rescaling, and comparing with the
  median makes the hash blind to global brightness and contrast changes (apart from the DC bit).
- ``find_duplicates``: exact matches and near matches (Hamming distance <= ``max_hamming``) between every pool
  and every target image, chunked over the pool so that memory stays bounded (a 100k x 10k comparison holds
  ``chunk_pairs`` distances at a time, about 36 MiB by default).
- ``exclude`` / ``select_excluding``: drop the duplicates from the pool before ``selection.select``, so that no
  payload can carry a copy of a target test image.

Threshold evidence for ``DEFAULT_MAX_HAMMING = 6`` (the shared CIFAR-10 JPEGs and the 32 px Tiny-ImageNet pool;
distances of the pHash above, measured with this module):

- Same image, transformed (10,000 CIFAR-10 test images): JPEG re-encoding at quality 90 or 75, resizing
  32→64→32 (bilinear or bicubic), upscaling to 64 px (hashed at 64), and resize then JPEG q90 all stay within
  5 bits (p99 <= 2, max 4; 5 for resize+JPEG); +20 brightness within 8 (p99.9 6). So 6 catches every one of
  them. A 1 px shift is *not* covered (median 8, 32 % within 6): crops and shifts are out of scope.
- Distinct images: of the 50 M pairs inside CIFAR-10 test, 26 are within 6 bits and by eye most of those are
  the same photo (CIFAR's known near-duplicates: the same car in two crops, say); 42 within 8, 110 within 10,
  with more and more genuinely different images. Tiny-ImageNet pool (111,100) x CIFAR-10 test (10,000) = 1.1 G
  pairs: 9 within 6 bits (2 of them, by eye, the same animal photo), 53 within 8, 488 within 10; the false
  ones are low-texture images (a small dark object on a plain background), whose few strong frequencies make
  the median split unstable. At 6 bits a false match costs a pool image its place in the payload and nothing
  else: a few in 100k.
- The dHash alternative (9x8 gradient signs) needed 10 bits for JPEG q90 and 17 for resize+JPEG while letting
  426 distinct CIFAR test pairs within 10: the pHash separates both sides better on 32 px images.
- For scale: CIFAR-10 train vs test has 180 test images with a train image within 6 bits (ciFAIR reports
  3.3 % of the test set as near-duplicates of train images, with a looser definition); none is pixel-exact,
  because each JPEG here was encoded on its own.

Cost, on two shared CPU cores: 10,000 decoded 32 px images hash in 0.5 s; ``find_duplicates`` compared 111,100 x
10,000 hashes in 22 s.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping

import numpy as np

from plada_core.selection import SelectionConfig, select

__all__ = [
    "DEFAULT_MAX_HAMMING",
    "DuplicateReport",
    "ImageHashes",
    "check_pool",
    "exact_hash",
    "exclude",
    "find_duplicates",
    "hamming_distances",
    "hash_images",
    "perceptual_hash",
    "perceptual_hashes",
    "select_excluding",
]

DEFAULT_MAX_HAMMING = 6
_HASH_SIDE = 32  # pHash's working resolution; CIFAR-sized images need no resize at all
_LOW = 8  # the 8x8 low-frequency DCT block → 64 bits
_BITS = np.uint64(1) << np.arange(64, dtype=np.uint64)


def exact_hash(img: np.ndarray) -> bytes:
    """16-byte BLAKE2b digest of ``img``'s pixels, shape and dtype: equal exactly for pixel-identical arrays."""
    img = np.ascontiguousarray(img)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{img.dtype.str}{img.shape}".encode())
    h.update(img.tobytes())
    return h.digest()


@lru_cache(maxsize=None)
def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights that average each output cell's exact share of the input (a box filter that handles
    any ratio, up or down); rows sum to 1."""
    edges = np.linspace(0, n_in, n_out + 1)
    left, right = edges[:-1, None], edges[1:, None]
    pix = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(right, pix + 1) - np.maximum(left, pix), 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


@lru_cache(maxsize=None)
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: ``D @ x`` is the DCT of a length-``n`` column."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    d[0] /= np.sqrt(2)
    return d


def _gray_batch(images: np.ndarray) -> np.ndarray:
    """float64 N x H x W luma of a uint8 batch (N x H x W, or N x H x W x 3 RGB)."""
    if images.dtype != np.uint8:
        raise ValueError(f"images must be decoded uint8 arrays, got dtype {images.dtype}")
    if images.ndim == 4 and images.shape[-1] == 3:
        return images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if images.ndim == 3 and images.shape[-1] != 3:
        return images.astype(np.float64)
    raise ValueError(
        f"a batch must be N x H x W or N x H x W x 3 uint8, got shape {images.shape} "
        f"(for one H x W x 3 image use perceptual_hash)"
    )


def perceptual_hashes(images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """uint64 pHash of every image of a batch of one size (N x H x W or N x H x W x 3 uint8); see the module doc.
    Works through ``batch_size`` images at a time, so a whole pool array costs no float copy of itself."""
    images = np.asarray(images)
    _gray_batch(images[:0])  # check dtype and shape even for an empty batch
    return np.concatenate(
        [_phash_batch(_gray_batch(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
        or [np.empty(0, np.uint64)]
    )


def _phash_batch(gray: np.ndarray) -> np.ndarray:
    h, w = gray.shape[-2:]
    small = _area_matrix(h, _HASH_SIDE) @ gray @ _area_matrix(w, _HASH_SIDE).T
    d = _dct_matrix(_HASH_SIDE)[:_LOW]
    low = (d @ small @ d.T).reshape(len(gray), _LOW * _LOW)
    bits = np.empty(low.shape, dtype=bool)
    bits[:, 1:] = low[:, 1:] > np.median(low[:, 1:], axis=1, keepdims=True)
    bits[:, 0] = low[:, 0] > 127.5 * _HASH_SIDE  # the orthonormal 2-D DCT's DC term is mean * side
    return (bits.astype(np.uint64) * _BITS).sum(axis=1, dtype=np.uint64)


def perceptual_hash(img: np.ndarray) -> np.uint64:
    """64-bit pHash of one decoded uint8 image (HxW or HxWx3)."""
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"one image must be HxW or HxWx3, got shape {img.shape}; use perceptual_hashes for batches")
    return perceptual_hashes(img[None])[0]


@dataclass(frozen=True, eq=False)
class ImageHashes:
    """Both hashes of every image of a set, in index order: ``exact`` (N x 16 bytes, dtype ``S16``) and
    ``perceptual`` (N uint64)."""

    exact: np.ndarray
    perceptual: np.ndarray

    def __post_init__(self) -> None:
        if len(self.exact) != len(self.perceptual):
            raise ValueError(
                f"hash arrays differ in length: {len(self.exact)} exact, {len(self.perceptual)} perceptual"
            )
        if self.perceptual.dtype != np.uint64:
            raise ValueError(f"perceptual hashes must be uint64, got {self.perceptual.dtype}")

    def __len__(self) -> int:
        return len(self.perceptual)


def hash_images(images) -> ImageHashes:
    """``ImageHashes`` of a uint8 batch (N x H x W[x3], perceptual hashes vectorised) or of any iterable of
    decoded images (sizes may differ; hashed one by one)."""
    if isinstance(images, np.ndarray) and images.ndim in (3, 4):
        exact = [exact_hash(img) for img in images]
        perceptual = perceptual_hashes(images)
    else:  # one image at a time: a stream of decoded photos is never held whole
        exact, hashes = [], []
        for img in images:
            exact.append(exact_hash(img))
            hashes.append(perceptual_hash(img))
        perceptual = np.array(hashes, dtype=np.uint64)
    return ImageHashes(np.array(exact, dtype="S16").reshape(-1), perceptual)


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.view(np.uint8).reshape(*x.shape, 8)].sum(axis=-1, dtype=np.uint8)


def hamming_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """uint8 len(a) x len(b) matrix of Hamming distances between two uint64 hash arrays (all in memory: for
    large sets use ``find_duplicates``)."""
    a, b = np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)
    return _popcount(a[:, None] ^ b[None, :]).astype(np.uint8)


@dataclass(frozen=True, eq=False)
class DuplicateReport:
    """Every (pool, target) pair within ``max_hamming``, sorted by pool then target index.

    ``pool_index``/``target_index`` (int64) and ``distance`` (uint8) hold one pair each; ``exact`` marks the
    pixel-identical ones. ``pool_min_distance`` is each pool image's distance to its nearest target image (a
    histogram of it shows how clear-cut the threshold is).
    """

    max_hamming: int
    n_pool: int
    n_target: int
    pool_index: np.ndarray
    target_index: np.ndarray
    distance: np.ndarray
    exact: np.ndarray
    pool_min_distance: np.ndarray = field(repr=False)

    @property
    def n_exact_pairs(self) -> int:
        return int(self.exact.sum())

    @property
    def n_near_pairs(self) -> int:
        """Pairs within ``max_hamming`` that are not pixel-identical."""
        return int(len(self.exact) - self.exact.sum())

    @property
    def pool_positions(self) -> np.ndarray:
        """Sorted pool indices that duplicate at least one target image: what ``exclude`` should drop."""
        return np.unique(self.pool_index)

    @property
    def target_positions(self) -> np.ndarray:
        """Sorted target indices that have at least one duplicate in the pool."""
        return np.unique(self.target_index)

    def examples(self, n: int = 5) -> list[tuple[int, int, int]]:
        """Up to ``n`` (pool index, target index, distance) triples: exact pairs first, then the closest."""
        order = np.lexsort((self.target_index, self.pool_index, self.distance, ~self.exact))[:n]
        return [(int(self.pool_index[i]), int(self.target_index[i]), int(self.distance[i])) for i in order]

    def summary(self, n_examples: int = 5) -> dict:
        """JSON-ready counts and examples, for a publish report."""
        return {
            "max_hamming": self.max_hamming,
            "n_pool": self.n_pool,
            "n_target": self.n_target,
            "exact_pairs": self.n_exact_pairs,
            "near_pairs": self.n_near_pairs,
            "pool_images_matched": int(len(self.pool_positions)),
            "target_images_matched": int(len(self.target_positions)),
            "examples": [list(e) for e in self.examples(n_examples)],
        }


def find_duplicates(
    pool: ImageHashes, target: ImageHashes, max_hamming: int = DEFAULT_MAX_HAMMING, chunk_pairs: int = 1 << 22
) -> DuplicateReport:
    """All pool/target pairs whose perceptual hashes differ in at most ``max_hamming`` bits, exact ones marked.

    Pixel-identical images have equal perceptual hashes, so every exact pair is among the near ones and one
    pass finds both. The pool is processed ``chunk_pairs // len(target)`` rows at a time: peak memory is about
    ``9 * chunk_pairs`` bytes (36 MiB by default) whatever the sizes, plus the pairs found.
    """
    if isinstance(max_hamming, bool) or not isinstance(max_hamming, (int, np.integer)) or not 0 <= max_hamming <= 64:
        raise ValueError(f"max_hamming must be an int in [0, 64], got {max_hamming!r}")
    if chunk_pairs < 1:
        raise ValueError(f"chunk_pairs must be >= 1, got {chunk_pairs!r}")
    n_pool, n_target = len(pool), len(target)
    rows = max(1, chunk_pairs // max(n_target, 1))
    found_p, found_t, found_d = [], [], []
    min_dist = np.full(n_pool, 64 if n_target else 255, dtype=np.uint8)
    for start in range(0, n_pool if n_target else 0, rows):
        dist = _popcount(pool.perceptual[start : start + rows, None] ^ target.perceptual[None, :])
        min_dist[start : start + len(dist)] = dist.min(axis=1)
        p, t = np.nonzero(dist <= max_hamming)
        found_p.append(p + start)
        found_t.append(t)
        found_d.append(dist[p, t].astype(np.uint8))
    pool_index = np.concatenate(found_p).astype(np.int64) if found_p else np.empty(0, np.int64)
    target_index = np.concatenate(found_t).astype(np.int64) if found_t else np.empty(0, np.int64)
    distance = np.concatenate(found_d) if found_d else np.empty(0, np.uint8)
    exact = pool.exact[pool_index] == target.exact[target_index]
    return DuplicateReport(int(max_hamming), n_pool, n_target, pool_index, target_index, distance, exact, min_dist)


def exclude(positions: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """Sorted int64 ``positions`` (pool indices, e.g. ``np.arange(n_pool)``) without those in ``drop``.

    ``drop`` is either pool indices (``DuplicateReport.pool_positions``) or a boolean mask over the pool.
    """
    positions = np.asarray(positions)
    if positions.ndim != 1 or len(positions) and not np.issubdtype(positions.dtype, np.integer):
        raise ValueError(f"positions must be a 1-D integer array, got dtype {positions.dtype} shape {positions.shape}")
    positions = positions.astype(np.int64)
    drop = np.asarray(drop)
    if drop.dtype == bool:
        if len(positions) and positions.max() >= len(drop):
            raise ValueError(f"the drop mask covers {len(drop)} pool images but positions reach {positions.max()}")
        return np.sort(positions[~drop[positions]])
    if len(drop) and not np.issubdtype(drop.dtype, np.integer):
        raise ValueError(f"drop must hold pool indices or be a boolean mask, got dtype {drop.dtype}")
    return np.sort(positions[~np.isin(positions, drop)])


def select_excluding(
    scores: Mapping[str, np.ndarray], n_classes: int, cfg: SelectionConfig, drop: np.ndarray
) -> np.ndarray:
    """``selection.select`` over the pool minus ``drop`` (indices or mask), returned as global pool positions.

    The selector runs on the remaining rows only, so a dropped image never takes a place in the budget. Mind
    ``cfg.keep``: a float fraction applies to the *remaining* pool; pass an int count to keep the budget fixed.
    """
    n = len(next(iter(scores.values())))
    allowed = exclude(np.arange(n), drop)
    return allowed[select({name: np.asarray(col)[allowed] for name, col in scores.items()}, n_classes, cfg)]


def check_pool(
    pool_index: np.ndarray,
    pool: ImageHashes,
    targets: Mapping[str, ImageHashes],
    max_hamming: int = DEFAULT_MAX_HAMMING,
) -> tuple[dict, dict[str, np.ndarray]]:
    """``find_duplicates`` of the pool against each named target split (``{"test": ..., "train": ...}``).

    ``pool`` holds the hashes of the pool images ``pool_index`` (row i is image ``pool_index[i]``). Returns a
    JSON-ready summary per split, whose examples name pool *indices* (not rows) and target positions, and per
    split the sorted pool indices that duplicate at least one of its images.
    """
    pool_index = np.asarray(pool_index, dtype=np.int64)
    summary, matched = {}, {}
    for name, target in targets.items():
        report = find_duplicates(pool, target, max_hamming)
        found = report.summary()
        found["examples"] = [[int(pool_index[p]), t, d] for p, t, d in found["examples"]]
        summary[name] = found
        matched[name] = np.sort(pool_index[report.pool_positions])
    return summary, matched
