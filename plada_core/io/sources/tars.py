"""``wds:PATH``: webdataset shards (plain ``.tar``), as pools of web images are usually stored (img2dataset's output).

``PATH`` is one ``.tar`` file or a folder of them (sub-folders included, sorted by path). Members are grouped into
samples exactly as webdataset groups them (``plada_core.io.tar_stream``: the name up to the first dot of its last
component is the key); a sample's image is its first member with an image suffix (``jpg``, ``jpeg``, ``png``,
``webp`` …; other members such as ``txt`` or ``json`` are left alone), and its label the integer in its ``cls``
member. Where every sample has a ``cls`` the source is labelled, otherwise unlabelled (a pool, as web images come).

Opening reads every shard once and decodes every image, as ``imagefolder:`` does: ``len()`` is exact, samples
without an image or with bytes that do not decode are counted in ``unreadable`` and announced, and a shard that is
truncated, corrupt or compressed is refused, naming it (its lost samples could not be counted). Keys are the
samples' own keys (``base.path_keys``), prefixed by their shard's path under ``PATH`` when it is a folder, so the
same shards give the same pool wherever they are kept.
"""

from __future__ import annotations

import warnings
from itertools import groupby
from pathlib import Path
from typing import Iterator

import numpy as np

from plada_core.images import as_png_or_jpg, decode_image
from plada_core.io.sources.base import (
    UNLABELLED,
    EncodedSample,
    Source,
    SourceOptions,
    default_class_names,
    path_keys,
)
from plada_core.io.tar_stream import ReadStats, iter_samples

__all__ = ["WebDatasetSource", "open_wds"]

# Suffixes that hold the sample's image, in the order they are looked for.
IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "ppm", "pgm", "gif")


class WebDatasetSource(Source):
    """The samples of ``files`` in order; ``items`` lists (file position, sample position in the file, key, image
    suffix, label) of the readable ones, ``unreadable`` (file, key, reason) of the rest."""

    def __init__(self, spec: str, name: str, files: list[Path], class_names: list[str] | None = None,
                 shard_names: list[str] | None = None) -> None:  # fmt: skip
        """``shard_names``: each file's path under the source's root, put before its samples' keys (None: one
        file given by itself, whose keys stand alone)."""
        self.files = files
        self.items: list[tuple[int, int, str, str, int]] = []
        self.unreadable: list[tuple[Path, str, str]] = []
        labels: list[int | None] = []
        for f, path in enumerate(files):
            for ordinal, sample in enumerate(_read(path, spec)):
                key, suffix = sample["__key__"], _image_suffix(sample)
                if suffix is None:
                    self.unreadable.append((path, key, f"no image member (has {_suffixes(sample)})"))
                    continue
                try:
                    decode_image(sample[suffix])
                except ValueError as exc:
                    self.unreadable.append((path, key, str(exc)[:200]))
                    continue
                self.items.append((f, ordinal, key, suffix, UNLABELLED))
                labels.append(_label(sample.get("cls")))
        self.labelled = bool(labels) and all(label is not None for label in labels)
        if self.labelled:
            self.items = [(*item[:4], label) for item, label in zip(self.items, labels)]
        names = (class_names or default_class_names(self.labels())) if self.labelled else []
        super().__init__(spec, name, names)
        prefixes = [f"{n}/" for n in shard_names] if shard_names else [""] * len(files)
        self.keys = path_keys([prefixes[f] + key for f, _, key, _, _ in self.items], self.name)
        if self.unreadable:
            path, key, reason = self.unreadable[0]
            warnings.warn(f"{spec}: skipped {len(self.unreadable)} sample(s) without a readable image, e.g. {key!r} "
                          f"in {path}: {reason}; see the source's .unreadable list", stacklevel=4)  # fmt: skip
        if not self.items:
            raise ValueError(f"{spec}: no sample with a readable image in {len(files)} shard(s); expected members "
                             f"named KEY.jpg (or .{', .'.join(IMAGE_MEMBERS[1:])}) and optionally KEY.cls")  # fmt: skip

    def __len__(self) -> int:
        return len(self.items)

    def labels(self) -> np.ndarray:
        return np.asarray([label for *_, label in self.items], dtype=np.int64)

    def iter_encoded(self) -> Iterator[EncodedSample]:
        position = 0
        for f, group in groupby(self.items, key=lambda item: item[0]):
            path, todo = self.files[f], list(group)
            done = 0
            for ordinal, sample in enumerate(_read(path, self.spec)):
                if done == len(todo):
                    break
                _, wanted, key, suffix, label = todo[done]
                if ordinal != wanted:
                    continue  # a sample found unreadable at open
                data, ext = as_png_or_jpg(sample.get(suffix, b""), lambda: f"{self.spec}: {path}: sample {key!r}")  # noqa: B023
                yield EncodedSample(self.keys[position], data, ext, label)
                position, done = position + 1, done + 1
            if done < len(todo):
                raise ValueError(f"{self.spec}: {path} holds fewer samples than when the source was opened; "
                                 "open it again")  # fmt: skip


def _read(path: Path, spec: str) -> Iterator[dict]:
    """The samples of one shard; a shard that cannot be read whole raises, naming it and why."""
    stats = ReadStats()
    yield from iter_samples(str(path), stats)
    if stats.errors:
        raise ValueError(f"{spec}: {path} cannot be read whole ({stats.errors[0]}); webdataset shards must be plain, "
                         "complete .tar files (decompress a .tar.gz first)")  # fmt: skip


def _image_suffix(sample: dict) -> str | None:
    return next((s for s in IMAGE_MEMBERS if s in sample), None)


def _suffixes(sample: dict) -> str:
    return ", ".join(sorted(k for k in sample if not k.startswith("__"))) or "nothing"


def _label(data: bytes | None) -> int | None:
    """The class id in a ``cls`` member, None without one or when it is not a non-negative integer."""
    if data is None:
        return None
    try:
        label = int(data.decode().strip())
    except (UnicodeDecodeError, ValueError):
        return None
    return label if label >= 0 else None


def open_wds(arg: str | None, opts: SourceOptions) -> Source:
    if not arg:
        raise ValueError("wds: needs a path, e.g. wds:/data/shards (a folder of .tar files) or wds:/data/00000.tar")
    path = Path(arg).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.tar") if p.is_file())
        if not files:
            raise FileNotFoundError(f"wds:{arg}: no .tar files under {path}")
        name, folder = path.name, path
        shard_names = [f.relative_to(path).with_suffix("").as_posix() for f in files]
    elif path.is_file():
        files, name, folder, shard_names = [path], path.stem, path.parent, None
    else:
        raise FileNotFoundError(f"wds:{arg}: no such file or folder")
    names_file = folder / "classes.txt"  # line i names class i, as for parquet:
    names = None
    if names_file.is_file():
        names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    return WebDatasetSource(f"wds:{arg}", name, files, names, shard_names)
