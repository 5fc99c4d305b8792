"""``images:PATH``: a folder of image files without labels, as a client's reference pool usually is.

Every image file under ``PATH`` (sub-folders included, sorted by path; hidden files and folders and files without
an image suffix left out) is one pool image, labelled ``UNLABELLED``. Keys come from the paths relative to
``PATH`` (``base.path_keys``: ``2020/a.jpg`` → ``2020_a``), not from the folder's own name, so two labs that hold
the same files build the same pool (same fingerprint) wherever they keep them. Unreadable files are counted and
announced, never put into the pool. Such a source feeds a reference pool only: as a target or evaluation split it
is refused (``Source.require_labels``), and it has no ``:train`` / ``:test`` parts.
"""

from __future__ import annotations

from pathlib import Path

from plada_core.io.sources.base import UNLABELLED, Source, SourceOptions, path_keys
from plada_core.io.sources.imagefolder import IMAGE_SUFFIXES, ImageFilesSource, image_files

__all__ = ["UnlabelledImagesSource", "open_images"]


class UnlabelledImagesSource(ImageFilesSource):
    """Every image file under ``root``, in path order, each decoded once at open (``ImageFilesSource``)."""

    labelled = False

    def __init__(self, spec: str, root: Path) -> None:
        super().__init__(spec, root.name, [])
        for path in image_files(root):
            self._add(path, UNLABELLED)
        self.keys = path_keys([path.relative_to(root).as_posix() for path, _ in self.items], self.name)
        self._announce_unreadable()
        if not self.items:
            found = f"only {len(self.unreadable)} unreadable one(s)" if self.unreadable else "none"
            raise ValueError(f"{spec}: no readable image files under {root} ({found}); expected files ending in "
                             f"{', '.join(sorted(IMAGE_SUFFIXES))}")  # fmt: skip


def open_images(arg: str | None, opts: SourceOptions) -> Source:
    if not arg:
        raise ValueError("images: needs a folder, e.g. images:/data/pool (image files, any sub-folders, no labels)")
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"images:{arg}: no such folder; give a folder that holds image files")
    return UnlabelledImagesSource(f"images:{arg}", root)
