"""Parquet rows (key, jpg, label): ``cifar10`` and ``tiny-imagenet`` under ``$PLADA_DATA_DIR``, ``parquet:PATH``.

Images are streamed batch by batch; JPEG and PNG bytes travel as stored, other formats are re-encoded as PNG.
Besides the project's own layout, ``parquet:PATH`` reads the common exports: the image in a binary column
``jpg``, ``png``, ``image`` or ``img``, or in a struct column of that name with a ``bytes`` field (the Hugging
Face ``Image`` feature), and no ``key`` column (rows are then keyed by file and position). Files without a
``label`` column are an unlabelled source (a pool may hold it, a target split may not); the files of one source
either all have one or none does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from plada_core.images import as_png_or_jpg
from plada_core.io.sources.base import (
    SPLITS,
    UNLABELLED,
    UNSAFE_KEY_CHARS,
    EncodedSample,
    Source,
    SourceOptions,
    default_class_names,
    sanitize,
    split_arg,
    stratified_split,
    unlabelled_error,
    with_split,
)

__all__ = ["ParquetSource", "open_cifar10", "open_parquet", "open_tiny_imagenet"]

_IMAGE_COLUMNS = ("jpg", "png", "image", "img")  # the first present holds the encoded image
_EXPECTED = ("expected the encoded image bytes in a binary column (or a struct with a 'bytes' field) named one "
             "of " + ", ".join(map(repr, _IMAGE_COLUMNS)) + ", an int column 'label' (a pool's images may have "
             "none), and optionally a string column 'key'")  # fmt: skip
_BATCH_ROWS = 2048  # rows per parquet read: a few MB of JPEGs, never a whole file


class ParquetSource(Source):
    """Rows (key, jpg, label) of one or more parquet files, streamed in batches of ``_BATCH_ROWS`` rows.

    Opening reads only the ``key`` and ``label`` columns (to validate labels, make the split and check that keys
    are unique); images are read batch by batch while iterating.
    """

    def __init__(self, spec: str, name: str, files: Sequence[Path], class_names: Sequence[str] | None = None,
                 split: str | None = None, test_fraction: float = 0.1) -> None:
        self.files = list(files)
        keys, labels, self.labelled = _scan_parquet(self.files, spec)
        self._rows = None  # None: every row; else a bool mask over all rows in file order
        if split is not None:
            if not self.labelled:
                raise unlabelled_error(spec, f"a :{split} part (split by class)")
            train, test = stratified_split(labels, test_fraction)
            self._rows = np.zeros(len(labels), dtype=bool)
            self._rows[train if split == "train" else test] = True
            keys, labels = keys.filter(pa.array(self._rows)), labels[self._rows]
        super().__init__(spec, name, class_names if class_names is not None else default_class_names(labels))
        if len(labels) and labels.max() >= len(self.class_names):
            raise ValueError(f"{spec}: label {labels.max()} but only {len(self.class_names)} class names")
        self._labels = np.asarray(labels, dtype=np.int64)
        safe = pc.replace_substring_regex(keys, UNSAFE_KEY_CHARS.pattern, "_")
        self.positional_keys = pc.count_distinct(safe).as_py() != len(safe)

    def __len__(self) -> int:
        return len(self._labels)

    def labels(self) -> np.ndarray:
        return self._labels

    def iter_encoded(self) -> Iterator[EncodedSample]:
        out = 0
        for key, data, label in self._iter_rows():
            if data is None:
                raise ValueError(f"{self.spec}: row with key {key!r} has no image bytes (null 'jpg')")
            data, ext = as_png_or_jpg(data, lambda: f"{self.spec}: row with key {key!r}")
            safe = f"{self.name}-{out:08d}" if self.positional_keys else f"{self.name}-{sanitize(key)}"
            yield EncodedSample(safe, data, ext, label)
            out += 1

    def _iter_rows(self) -> Iterator[tuple[str, bytes, int]]:
        start = 0
        for path in self.files:
            image, has_key, has_label = _columns(pq.read_schema(path), path, self.spec)
            row = 0
            columns = _read(image, has_key, has_label)
            for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS, columns=columns):
                n = batch.num_rows
                keys = batch.column("key").cast(pa.string()) if has_key else pa.array(_row_keys(path, row, n))
                labels = batch.column("label") if has_label else pa.array(np.full(n, UNLABELLED, dtype=np.int64))
                data = _image_bytes(batch.column(image))
                if self._rows is not None:
                    mask = pa.array(self._rows[start : start + n])
                    keys, labels, data = keys.filter(mask), labels.filter(mask), data.filter(mask)
                start, row = start + n, row + n
                yield from zip(keys.to_pylist(), data.to_pylist(), labels.to_pylist())


def _columns(schema: pa.Schema, path: Path, spec: str) -> tuple[str, bool, bool]:
    """(the image column, whether there is a key column, whether there is a label column) of one file; a file
    without an image column, or with a label column that is not int, raises, naming what it has and expects."""
    image = next((c for c in _IMAGE_COLUMNS if c in schema.names and _holds_bytes(schema.field(c).type)), None)
    has_label = "label" in schema.names
    if image is None or (has_label and not pa.types.is_integer(schema.field("label").type)):
        raise ValueError(f"{spec}: {path} has columns {dict(zip(schema.names, map(str, schema.types)))}; {_EXPECTED}")
    return image, "key" in schema.names, has_label


def _holds_bytes(kind: pa.DataType) -> bool:
    if pa.types.is_struct(kind):
        return kind.get_field_index("bytes") >= 0 and _holds_bytes(kind.field("bytes").type)
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


def _read(image: str, has_key: bool, has_label: bool) -> list[str]:
    return [*(["key"] if has_key else []), image, *(["label"] if has_label else [])]


def _image_bytes(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The encoded bytes of an image column: itself, or a struct's ``bytes`` field."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.field("bytes") if pa.types.is_struct(column.type) else column


def _row_keys(path: Path, first: int, n: int) -> list[str]:
    """Keys of rows without a ``key`` column: the file's name and the row's position in it, stable per file."""
    return [f"{path.stem}-{i:08d}" for i in range(first, first + n)]


def _scan_parquet(files: Sequence[Path], spec: str) -> tuple[pa.Array, np.ndarray, bool]:
    """(keys, labels, whether the files have labels) from the key and label columns alone."""
    keys, labels, labelled = [], [], {}
    for path in files:
        _, has_key, labelled[path] = _columns(pq.read_schema(path), path, spec)
        if len(set(labelled.values())) > 1:
            with_label = [p.name for p, has in labelled.items() if has]
            without = [p.name for p, has in labelled.items() if not has]
            raise ValueError(f"{spec}: some files have a 'label' column ({', '.join(with_label[:3])}) and some do "
                             f"not ({', '.join(without[:3])}); give labelled and unlabelled files as two sources")  # fmt: skip
        columns = [c for c, has in (("key", has_key), ("label", labelled[path])) if has]
        table = pq.read_table(path, columns=columns) if columns else None
        n = len(table) if table is not None else pq.ParquetFile(path).metadata.num_rows
        key = table.column("key").cast(pa.string()) if has_key else pa.chunked_array([_row_keys(path, 0, n)])
        label = table.column("label") if labelled[path] else None
        if key.null_count or (label is not None and label.null_count):
            raise ValueError(f"{spec}: {path} has empty (null) keys or labels; every row needs both")
        keys.append(key)
        labels.append(label.to_numpy().astype(np.int64) if label is not None else np.full(n, UNLABELLED, np.int64))
    keys_all = pa.chunked_array([c for k in keys for c in k.chunks], type=pa.string()).combine_chunks()
    labels_all = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    is_labelled = all(labelled.values())
    if is_labelled and len(labels_all) and labels_all.min() < 0:
        raise ValueError(f"{spec}: column 'label' holds {labels_all.min()}; class ids must be >= 0")
    return keys_all, labels_all, is_labelled


def _class_names_near(folder: Path) -> list[str] | None:
    """Names from ``classes.txt`` (line i = class i) or ``classes.tsv`` (index, id, words) in ``folder``."""
    if (folder / "classes.txt").is_file():
        return [line.strip() for line in (folder / "classes.txt").read_text().splitlines() if line.strip()]
    if (folder / "classes.tsv").is_file():
        rows = [line.split("\t") for line in (folder / "classes.tsv").read_text().splitlines() if line.strip()]
        return [row[-1].strip() for row in rows]
    return None


def _data_folder(opts: SourceOptions, folder: str, spec: str) -> Path:
    path = opts.data_dir / folder
    if not path.is_dir():
        raise FileNotFoundError(f"{spec} needs the folder {path}, which does not exist; set PLADA_DATA_DIR to the "
                                f"folder that holds cifar10/ and tiny-imagenet-32/ (now {opts.data_dir})")
    return path


def open_cifar10(split: str | None, opts: SourceOptions) -> Source:
    spec, name = with_split("cifar10", split_arg("cifar10", split))
    folder = _data_folder(opts, "cifar10", spec)
    files = [folder / f"{s}.parquet" for s in ([split] if split else SPLITS)]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{spec} needs {f}, which does not exist; "
                                    f"check PLADA_DATA_DIR (now {opts.data_dir})")
    return ParquetSource(spec, name, files, _class_names_near(folder))


def open_tiny_imagenet(split: str | None, opts: SourceOptions) -> Source:
    spec, name = with_split("tiny-imagenet", split_arg("tiny-imagenet", split))
    folder = _data_folder(opts, "tiny-imagenet-32", spec)
    files = sorted(folder.glob("pool-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{spec}: no pool-*.parquet in {folder}; check PLADA_DATA_DIR (now {opts.data_dir})")
    return ParquetSource(spec, name, files, _class_names_near(folder), split=split, test_fraction=0.1)


def open_parquet(arg: str | None, opts: SourceOptions) -> Source:
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
