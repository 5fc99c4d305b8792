"""``npz:PATH``: arrays ``images`` (N,H,W), (N,H,W,1) or (N,H,W,3) uint8, ``labels`` (N,) or (N,1) int,
optional ``class_names``.

One file holds one split; files are read without pickle, and every problem names the array and the fix. A file
without ``labels`` is an unlabelled source: a pool may hold it, a target split may not (``Source.require_labels``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from plada_core.io.sources.base import UNLABELLED, ArraySource, Source, SourceOptions, default_class_names

__all__ = ["open_npz"]

_NPZ_FIX = "write it with np.savez(path, images=..., labels=...)"


def open_npz(arg: str | None, opts: SourceOptions) -> Source:
    if not arg:
        raise ValueError("npz: needs a path, e.g. npz:/data/target_train.npz")
    where = f"npz:{arg}"
    path = Path(arg).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{where}: file not found; give the path of an .npz with arrays 'images' and 'labels'")
    images, labels, class_names = _read_npz(path, where)
    labelled = labels is not None
    if not labelled:
        labels = np.full(len(images), UNLABELLED, dtype=np.int64)
    return ArraySource(where, path.stem, class_names, lambda: (images, labels), labelled=labelled)


def _read_npz(path: Path, where: str) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """(images, labels, class names); labels None (and the source unlabelled) when the file has none."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{where}: not a readable .npz archive ({exc}); {_NPZ_FIX}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{where}: is a single .npy array, not an .npz archive; {_NPZ_FIX}")
    with archive:
        names = [n for n in ("images", "labels", "class_names") if n in archive]
        arrays = {name: _npz_array(archive, name, where) for name in names}
        if "images" not in arrays:
            raise ValueError(f"{where}: no array 'images' (it has {sorted(archive.files)}); {_NPZ_FIX}")
    images = _check_images(arrays["images"], where)
    if "labels" not in arrays:
        return images, None, []
    labels = _check_labels(arrays["labels"], where)
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
    """uint8 (N,H,W) or (N,H,W,3); a single channel axis (N,H,W,1), as Keras-style arrays come, is the same
    grayscale data and is squeezed."""
    if images.dtype != np.uint8:
        floating = np.issubdtype(images.dtype, np.floating)
        hint = (" (values in [0, 1]? save (images * 255).round().astype(np.uint8))" if floating
                else " (cast to np.uint8 if the values lie in 0..255)")  # fmt: skip
        raise ValueError(f"{where}: array 'images' has dtype {images.dtype}; expected uint8 (N,H,W) or "
                         f"(N,H,W,3){hint}")  # fmt: skip
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        alpha = " (drop the alpha channel: images[..., :3])" if images.ndim == 4 and images.shape[-1] == 4 else ""
        raise ValueError(f"{where}: array 'images' has shape {images.shape}; expected uint8 (N,H,W) or "
                         f"(N,H,W,3){alpha}")  # fmt: skip
    if len(images) == 0 or 0 in images.shape[1:3]:
        raise ValueError(f"{where}: array 'images' has shape {images.shape}; it holds no image pixels")
    return images


def _check_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """int (N,); a column (N,1), as Keras-style arrays come, is the same labels and is flattened."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where}: array 'labels' has dtype {labels.dtype} and shape {labels.shape}; "
                         "expected int (N,)")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"{where}: array 'labels' holds {labels.min()}; class ids must be >= 0")
    return labels.astype(np.int64)


def _check_class_names(names: np.ndarray | None, labels: np.ndarray, where: str) -> list[str]:
    if names is None:
        return default_class_names(labels)
    if names.ndim != 1 or len(names) <= labels.max():
        raise ValueError(f"{where}: array 'class_names' has shape {names.shape} but labels go up to {labels.max()}; "
                         "give one name per class id")
    return [str(n) for n in names]
