"""What every source shares: the ``Source`` interface, encoded samples, keys, the seeded split, array sources."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Sequence

import numpy as np

from plada_core.images import decode_image, encode_png

__all__ = [
    "SPLITS",
    "SPLIT_SEED",
    "UNLABELLED",
    "ArraySource",
    "EncodedSample",
    "Source",
    "SourceOptions",
    "SplitSource",
    "path_keys",
    "sanitize",
    "stratified_split",
]

SPLIT_SEED = 0
SPLITS = ("train", "test")
# The label of an image from an unlabelled source (a client's pool is usually just images): stored in the pool's
# index as source_label -1, never read by selection.
UNLABELLED = -1

UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class EncodedSample:
    """One image as it goes into a reference shard."""

    key: str  # stable, unique within the source, only [A-Za-z0-9_-] (webdataset splits on '.')
    data: bytes  # PNG for array sources (lossless); the original bytes for JPEG/PNG files
    ext: str  # "png" or "jpg"
    label: int  # UNLABELLED (-1) for an image of an unlabelled source


@dataclass(frozen=True)
class SourceOptions:
    """Settings shared by all factories; ``data_dir`` holds ``cifar10/`` and ``tiny-imagenet-32/``."""

    data_dir: Path


class Source:
    """A finite, ordered set of images, labelled unless ``labelled`` is False; subclasses provide ``__len__`` and
    ``iter_encoded``.

    An unlabelled source (``images:``, an npz without ``labels``, Parquet without a ``label`` column) can feed a
    reference pool, which needs no labels; as a target or evaluation split it is refused (``require_labels``).
    """

    labelled = True
    # Files or samples passed over at open because they hold no readable image, as (where, …, reason) tuples;
    # the file sources fill it (imagefolder:, images:, wds:), and the pool build records the count.
    unreadable: Sequence[tuple] = ()

    def __init__(self, spec: str, name: str, class_names: Sequence[str]) -> None:
        self.spec = spec
        self.name = sanitize(name)
        self.class_names = list(class_names)

    def __len__(self) -> int:
        raise NotImplementedError

    def iter_encoded(self) -> Iterator[EncodedSample]:
        """Stream the images in canonical order, encoded, with their keys and labels."""
        raise NotImplementedError

    def labels(self) -> np.ndarray:
        """Every image's label (int64), in canonical order; subclasses that hold them answer without reading images."""
        return np.asarray([sample.label for sample in self.iter_encoded()], dtype=np.int64)

    def iter_images(self) -> Iterator[np.ndarray]:
        """Every image decoded (uint8 HxW or HxWx3), in canonical order, one at a time: a caller that preprocesses
        or hashes each image holds one native-size image at once, not the split (3,000 photos of 512x384 px are
        1.8 GB decoded). Bytes that do not decode raise ValueError, naming the sample."""
        for sample in self.iter_encoded():
            try:
                yield decode_image(sample.data)
            except ValueError as exc:
                raise ValueError(f"{self.spec}: image {sample.key}: {exc}") from exc

    def load_arrays(self) -> tuple[list[np.ndarray] | np.ndarray, np.ndarray]:
        """All images decoded (uint8 HxW or HxWx3; one stacked array when they share a shape) and int64 labels.

        Holds everything in memory: meant for target splits, not for a large pool. An unlabelled source raises
        (``require_labels``): every caller wants the labels.
        """
        self.require_labels()
        images, labels = [], []
        for sample in self.iter_encoded():
            images.append(decode_image(sample.data))
            labels.append(sample.label)
        return _stack_if_uniform(images), np.asarray(labels, dtype=np.int64)

    def require_labels(self, role: str = "a target or evaluation split") -> None:
        """Raise, naming the source and the fix, when it has no labels to serve as ``role``."""
        if not self.labelled:
            raise unlabelled_error(self.spec, role)

    def __repr__(self) -> str:
        kind = f"classes={len(self.class_names)}" if self.labelled else "unlabelled"
        return f"<{type(self).__name__} {self.spec!r} name={self.name!r} {kind}>"


# --- small helpers ---------------------------------------------------------------------------------------------


def unlabelled_error(spec: str, role: str) -> ValueError:
    """The error for an unlabelled source asked to serve as ``role``, naming the fix."""
    return ValueError(
        f"{spec} holds unlabelled images: it can go into a reference pool, but {role} needs a label per image: "
        "one sub-folder per class (imagefolder:PATH), an npz with a 'labels' array, Parquet with an int 'label' "
        "column, or webdataset shards with a 'cls' member per sample"
    )


def sanitize(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9_-]`` replaced by '_' (webdataset-safe keys)."""
    return UNSAFE_KEY_CHARS.sub("_", text)


def path_keys(names: Sequence[str], fallback: str) -> list[str]:
    """Keys from names relative to a source's root (``"2020/a.jpg"`` → ``"2020_a"``: the suffix dropped, the rest
    sanitized), so that two labs holding the same files under differently named folders build the same pool. Where
    two names sanitize to one key, every key is positional instead, ``f"{fallback}-{i:08d}"``."""
    keys = [sanitize(PurePosixPath(name).with_suffix("").as_posix()) for name in names]
    if len(set(keys)) == len(keys):
        return keys
    return [f"{fallback}-{i:08d}" for i in range(len(names))]


def _stack_if_uniform(images: list[np.ndarray]) -> list[np.ndarray] | np.ndarray:
    if images and all(img.shape == images[0].shape for img in images):
        return np.stack(images)
    return images


def split_arg(spec: str, split: str | None) -> str | None:
    if split not in (None, *SPLITS):
        raise ValueError(f"source {spec!r}: unknown split {split!r}; use no suffix (all images), ':train' or ':test'")
    return split


def with_split(prefix: str, split: str | None) -> tuple[str, str]:
    """(spec, name) of a built-in source, e.g. ("mnist5k:train", "mnist5k-train")."""
    return (f"{prefix}:{split}", f"{prefix}-{split}") if split else (prefix, prefix)


def default_class_names(labels: np.ndarray) -> list[str]:
    return [str(c) for c in range(int(labels.max()) + 1)] if len(labels) else []


# --- seeded stratified split ------------------------------------------------------------------------------------


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) positions; every class keeps about ``test_fraction`` of its images in test.

    Test size is ``ceil(N * test_fraction)``; per-class counts are floors plus one for the classes with the largest
    remainders (ties by class order), so the split is exact and deterministic for given labels and seed.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    # round() first: 111100 * 0.1 is 11110.000000000002 in floating point, which ceil would turn into 11111.
    total = math.ceil(round(len(labels) * test_fraction, 9))
    quota = counts * test_fraction
    n_test = np.floor(quota).astype(np.int64)
    extra = np.argsort(-(quota - n_test), kind="stable")[: total - n_test.sum()]
    n_test[extra] += 1
    rng = np.random.default_rng(seed)
    test = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, n_test)]
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def take_split(images: np.ndarray, labels: np.ndarray, split: str | None, test_fraction: float):
    if split is None:
        return images, labels
    train, test = stratified_split(labels, test_fraction)
    idx = train if split == "train" else test
    return images[idx], labels[idx]


# --- in-memory arrays (packaged data sets, fashion-mnist, npz) ----------------------------------------------------


class ArraySource(Source):
    """Images held as uint8 arrays, loaded on first use (opening a source stays cheap) and encoded as PNG;
    ``labelled=False`` for arrays without labels (``load`` then returns ``UNLABELLED`` for each image)."""

    def __init__(self, spec: str, name: str, class_names: Sequence[str],
                 load: Callable[[], tuple[np.ndarray, np.ndarray]], labelled: bool = True) -> None:
        super().__init__(spec, name, class_names)
        self.labelled = labelled
        self._load = load
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def _data(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            images, labels = self._load()
            self._arrays = (images, np.asarray(labels, dtype=np.int64))
        return self._arrays

    def __len__(self) -> int:
        return len(self._data()[1])

    def iter_encoded(self) -> Iterator[EncodedSample]:
        images, labels = self._data()
        for i, (image, label) in enumerate(zip(images, labels)):
            yield EncodedSample(f"{self.name}-{i:08d}", encode_png(image), "png", int(label))

    def iter_images(self) -> Iterator[np.ndarray]:
        yield from self._data()[0]

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The cached arrays themselves (no copy): treat them as read-only."""
        self.require_labels()
        return self._data()

    def labels(self) -> np.ndarray:
        return self._data()[1]


class SplitSource(Source):
    """The ``:train`` or ``:test`` part of a source without an official split (``npz:``, ``parquet:``,
    ``imagefolder:``): ``stratified_split`` of its labels at ``test_fraction``, seed ``SPLIT_SEED``. Keys stay the
    whole source's, so the two parts never share one and a part's keys do not depend on the other's."""

    def __init__(self, base: Source, split: str, test_fraction: float) -> None:
        super().__init__(f"{base.spec}:{split}", f"{base.name}-{split}", base.class_names)
        base.require_labels(f"a :{split} part (split by class)")
        labels = base.labels()
        train, test = stratified_split(labels, test_fraction)
        self._base = base
        self._positions = train if split == "train" else test
        self._labels = labels[self._positions]

    def __len__(self) -> int:
        return len(self._positions)

    def labels(self) -> np.ndarray:
        return self._labels

    def iter_encoded(self) -> Iterator[EncodedSample]:
        wanted = iter(self._positions)  # sorted
        next_one = next(wanted, None)
        for i, sample in enumerate(self._base.iter_encoded()):
            if next_one is None:
                return
            if i == next_one:
                yield sample
                next_one = next(wanted, None)
