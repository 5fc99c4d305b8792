"""Image files named on a command line: files or folders, local paths or URLs, read and decoded one at a time."""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from plada_core.images import decode_image
from plada_core.io import storage

__all__ = ["IMAGE_SUFFIXES", "expand_images", "read_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm")


def expand_images(paths: Iterable[str]) -> list[str]:
    """URLs of the images named by ``paths``: a file as given, a folder as the image files under it (by suffix,
    recursively, sorted). A path that does not exist, or a folder without images, is a ``FileNotFoundError``."""
    out: list[str] = []
    for path in paths:
        url = storage.to_url(path)
        fs, fs_path = storage.get_fs(url)
        if fs.isdir(fs_path):
            found = sorted(p for p in fs.find(fs_path) if p.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {path}")
            out.extend(url.rstrip("/") + p[len(fs_path.rstrip("/")):] for p in found)
        elif fs.exists(fs_path):
            out.append(url)
        else:
            raise FileNotFoundError(f"no such image file or folder: {path}")
    return out


def read_images(urls: Iterable[str]) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
    """``(url, decoded image, None)`` per readable image, ``(url, None, reason)`` per file that does not decode."""
    for url in urls:
        try:
            yield url, decode_image(storage.read_bytes(url)), None
        except ValueError as exc:
            yield url, None, str(exc)
