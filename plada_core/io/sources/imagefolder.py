"""``imagefolder:PATH``: ``PATH/<class>/<image>`` (images may sit in sub-folders of a class folder, as torchvision's
``ImageFolder`` reads them), classes in sorted order, every file checked at open."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from plada_core.images import as_png_or_jpg, decode_image
from plada_core.io.sources.base import EncodedSample, Source, SourceOptions

__all__ = ["IMAGE_SUFFIXES", "ImageFilesSource", "ImageFolderSource", "image_files", "open_imagefolder"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class ImageFilesSource(Source):
    """Image files on local disk, listed as (path, label); every file is decoded once when added, so ``len()`` is
    exact and the pool never receives undecodable bytes. Unreadable files are listed in ``unreadable`` as (path,
    reason) and announced with a warning (``_announce_unreadable``) once the listing is done."""

    def __init__(self, spec: str, name: str, class_names: list[str]) -> None:
        super().__init__(spec, name, class_names)
        self.items: list[tuple[Path, int]] = []
        self.unreadable: list[tuple[Path, str]] = []
        self.keys: list[str] | None = None  # None: positional keys, f"{name}-{i:08d}"

    def _add(self, path: Path, label: int) -> None:
        try:
            decode_image(path.read_bytes())
        except (OSError, ValueError) as exc:
            self.unreadable.append((path, str(exc)[:200]))
        else:
            self.items.append((path, label))

    def _announce_unreadable(self) -> None:
        if self.unreadable:
            first, reason = self.unreadable[0]
            warnings.warn(f"{self.spec}: skipped {len(self.unreadable)} unreadable image file(s), e.g. {first}: "
                          f"{reason}; see the source's .unreadable list", stacklevel=5)  # fmt: skip

    def __len__(self) -> int:
        return len(self.items)

    def labels(self) -> np.ndarray:
        return np.asarray([label for _, label in self.items], dtype=np.int64)

    def iter_encoded(self) -> Iterator[EncodedSample]:
        for i, (path, label) in enumerate(self.items):
            data, ext = as_png_or_jpg(path.read_bytes(), lambda: f"{self.spec}: {path}")
            key = self.keys[i] if self.keys is not None else f"{self.name}-{i:08d}"
            yield EncodedSample(key, data, ext, label)


class ImageFolderSource(ImageFilesSource):
    """``root/<class>/[<sub-folders>/]<image>``; class ids follow sorted folder names, images sorted by their path
    inside the class folder. Files without an image suffix (``IMAGE_SUFFIXES``) and hidden files and folders are
    not images and are ignored."""

    def __init__(self, spec: str, root: Path) -> None:
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise ValueError(f"{spec}: {root} has no class sub-folders; expected {root}/<class>/<image files> "
                             f"(for images without labels, as a pool holds them: images:{root})")  # fmt: skip
        super().__init__(spec, root.name, classes)
        for label, cls in enumerate(classes):
            for path in image_files(root / cls):
                self._add(path, label)
        self._announce_unreadable()


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (recursively), sorted by path; hidden files and folders left out."""
    return sorted(p for p in folder.rglob("*") if _is_image_file(p, folder))


def _is_image_file(path: Path, folder: Path) -> bool:
    hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)  # .DS_Store, .ipynb_checkpoints/
    return path.is_file() and not hidden and path.suffix.lower() in IMAGE_SUFFIXES


def open_imagefolder(arg: str | None, opts: SourceOptions) -> Source:
    if not arg:
        raise ValueError("imagefolder: needs a path, e.g. imagefolder:/data/photos (one sub-folder per class)")
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"imagefolder:{arg}: no such folder; expected {root}/<class>/<image files>")
    return ImageFolderSource(f"imagefolder:{arg}", root)
