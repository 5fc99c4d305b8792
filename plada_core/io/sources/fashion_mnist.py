"""``fashion-mnist``: the IDX files of Debian's ``dataset-fashion-mnist`` package, with the official split."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np

from plada_core.io.sources.base import SPLITS, ArraySource, Source, SourceOptions, split_arg, with_split

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "open_fashion_mnist"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]


def _read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX array (the MNIST file format) from a gzip file."""
    data = gzip.decompress(path.read_bytes())
    if data[:3] != b"\0\0\x08":
        raise ValueError(f"{path} is not an unsigned-byte IDX file (header {data[:4]!r})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    flat = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if flat.size != math.prod(dims):
        raise ValueError(f"{path}: header says {dims} but holds {flat.size} values; the file is truncated")
    return flat.reshape(dims).copy()  # copy: frombuffer arrays are read-only


def _fashion_files(split: str) -> tuple[Path, Path]:
    stem = "train" if split == "train" else "t10k"
    files = FASHION_MNIST_DIR / f"{stem}-images-idx3-ubyte.gz", FASHION_MNIST_DIR / f"{stem}-labels-idx1-ubyte.gz"
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(
                f"fashion-mnist needs {f}, which does not exist; "
                "install it with `apt-get install -y dataset-fashion-mnist`"
            )
    return files


def open_fashion_mnist(split: str | None, opts: SourceOptions) -> Source:
    spec, name = with_split("fashion-mnist", split_arg("fashion-mnist", split))
    parts = [split] if split else list(SPLITS)
    files = [_fashion_files(p) for p in parts]  # checked now: a missing package should fail at open, not mid-run

    def load() -> tuple[np.ndarray, np.ndarray]:
        loaded = [(_read_idx(images), _read_idx(labels)) for images, labels in files]
        return np.concatenate([x for x, _ in loaded]), np.concatenate([y for _, y in loaded]).astype(np.int64)

    return ArraySource(spec, name, FASHION_MNIST_CLASSES, load)
