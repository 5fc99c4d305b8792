"""A payload's images with their labels, written in formats any framework reads: Parquet, webdataset, image folders.

``export_payload`` reads the pool shards that hold selected images, one at a time, and writes each selected image's
bytes exactly as the pool stores them (no re-encoding) with its label and class name:

- ``parquet``: ``images.parquet``, columns index, key, label, class_name, ext, image; one row group per pool shard.
- ``webdataset``: one tar per pool shard, named like it; per sample ``<key>.<ext>`` (the image), ``<key>.cls``
  (the label) and ``<key>.json`` ({index, key, label, class_name}); ``webdataset.WebDataset`` reads them.
- ``imagefolder``: ``<label>_<class name>/<index>.<ext>``; ``torchvision.datasets.ImageFolder`` reads it. Folders
  start with the zero-padded label so that ImageFolder's class ids (sorted folder names) are the payload's labels;
  the class name after it is sanitised (letters, digits, ``.``, ``-``, ``_``; at most 64 characters), so hostile
  names make no path separators, ``..`` or hidden folders.

Resuming: each unit of work (the Parquet file; a pool shard's tar or images) is written atomically and then marked
done by ``.export-<unit>.json`` (its counts) beside it; a re-run skips the units marked done and sums the markers.
``export.json`` (the summary) is written last. A storage failure that outlasts the retries raises
``TransientStorageError`` before the unit is marked, so re-running redoes just that unit.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from tqdm.auto import tqdm

from plada_core.images import decode_image
from plada_core.io import storage
from plada_core.io.pool import ReadStats, iter_shard, read_index, read_reference
from plada_core.payload import Payload

__all__ = ["EXPORT_FORMATS", "class_folders", "export_payload"]

EXPORT_FORMATS = ("parquet", "webdataset", "imagefolder")
_SCHEMA = pa.schema([("index", pa.int64()), ("key", pa.string()), ("label", pa.int64()),
                     ("class_name", pa.string()), ("ext", pa.string()), ("image", pa.binary())])


def class_folders(class_names: Sequence[str]) -> list[str]:
    """Folder name per label: ``<zero-padded label>_<sanitised name>``; unique, sortable, safe on any filesystem."""
    width = len(str(max(len(class_names) - 1, 0)))
    out = []
    for label, name in enumerate(class_names):
        safe = re.sub(r"[^\w.-]+", "_", str(name)).strip("._-")[:64].rstrip("._-")
        out.append(f"{label:0{width}d}_{safe}" if safe else f"{label:0{width}d}")
    return out


def export_payload(payload: Payload, reference_url: str, out_url: str, fmt: str,
                   class_names: Sequence[str] | None = None, verify: bool = True,
                   progress: bool = True) -> dict:  # fmt: skip
    """Write the payload's images from the pool at ``reference_url`` under ``out_url`` as ``fmt`` (see module docstring)
    and return the summary: counts ``selected``, ``written``, ``missing`` (not in the pool's index) and
    ``unreadable`` (their shard did not yield them, or, with ``verify``, their bytes do not decode), read errors.

    ``class_names``: one per class (default: the label as text). The summary is also written to ``export.json``.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    names = [str(i) for i in range(payload.n_classes)] if class_names is None else [str(n) for n in class_names]
    if len(names) != payload.n_classes:
        raise ValueError(f"the payload has {payload.n_classes} classes but {len(names)} class names were given")
    out_url, reference_url = storage.to_url(out_url), storage.to_url(reference_url)
    summary_url = storage.join(out_url, "export.json")
    if storage.exists(summary_url):
        summary = storage.read_json(summary_url)
        if summary.get("format") != fmt or summary.get("selected") != payload.k:
            raise FileExistsError(f"{out_url} already holds another export ({summary.get('format')}, "
                                  f"{summary.get('selected')} images): choose another output URL or delete it")
        return summary
    fingerprint = read_reference(reference_url)["fingerprint"]
    rows = read_index(reference_url, payload.indices, columns=["index", "shard", "key"]).sort_values("index")
    labels = dict(zip(np.asarray(payload.indices).tolist(), np.asarray(payload.labels).tolist()))
    groups = [(shard, part) for shard, part in rows.groupby("shard", sort=True)]
    units = [("images.parquet", groups)] if fmt == "parquet" else [(shard, [(shard, part)]) for shard, part in groups]
    totals = {"written": 0, "unreadable": 0, "events": {}, "errors": []}
    for unit, shards in tqdm(units, desc=f"export {fmt}", unit="file", disable=not progress or len(units) < 2):
        marker = storage.join(out_url, f".export-{unit.removesuffix('.tar').removesuffix('.parquet')}.json")
        if storage.exists(marker):
            counts = storage.read_json(marker)
        else:
            selected = (s for shard, part in shards
                        for s in _selected(reference_url, shard, part, labels, names, verify))  # fmt: skip
            counts = _WRITERS[fmt](out_url, unit, selected, names, fingerprint)
            storage.write_json(marker, counts)
        for key in ("written", "unreadable"):
            totals[key] += counts[key]
        for kind, n in counts["events"].items():
            totals["events"][kind] = totals["events"].get(kind, 0) + n
        totals["errors"] += counts["errors"][: 20 - len(totals["errors"])]
    summary = {"format": fmt, "out_url": out_url, "pool_fingerprint": fingerprint, "selected": payload.k,
               "missing": payload.k - len(rows), "class_names": names, **totals}
    if fmt == "imagefolder":
        summary["class_folders"] = class_folders(names)
    storage.write_json(summary_url, summary)
    return summary


class _Counts(dict):
    """What one unit wrote and lost; filled while its samples stream through."""

    def __init__(self) -> None:
        super().__init__(written=0, unreadable=0, events={}, errors=[])

    def lose(self, n: int, events: dict, errors: list[str]) -> None:
        self["unreadable"] += n
        for kind, m in events.items():
            self["events"][kind] = self["events"].get(kind, 0) + m
        self["errors"] += errors[: 20 - len(self["errors"])]


def _selected(reference_url: str, shard: str, part, labels: dict, names: list[str], verify: bool) -> Iterator[dict]:
    """The shard's selected samples as dicts, then (last) a ``_Counts`` of what it lost."""
    url = storage.join(reference_url, shard)
    keys = dict(zip(part["index"].tolist(), part["key"].tolist()))
    stats, lost = ReadStats(), _Counts()
    for index, data in iter_shard(url, stats):
        key = keys.pop(index, None)
        if key is None:
            continue
        if verify:
            try:
                decode_image(data)
            except ValueError as exc:
                lost.lose(1, {"undecodable_image": 1}, [f"index {index} in {url}: {exc}"])
                continue
        label = int(labels[index])
        yield {"index": index, "key": key, "label": label, "class_name": names[label], "ext": _ext(data), "image": data}
    if stats.transient:
        raise storage.TransientStorageError(f"{url}: storage failed mid-read ({stats.errors[-1]}); re-run the export")
    if keys:
        lost.lose(len(keys), dict(stats.counts), stats.errors)
    yield lost


def _ext(data: bytes) -> str:
    return "png" if data.startswith(b"\x89PNG\r\n\x1a\n") else "jpg"  # iter_shard passes PNG and JPEG only


def _write_parquet(out_url: str, unit: str, selected, names: list[str], fingerprint: str) -> dict:
    counts = _Counts()
    meta = {b"plada": json.dumps({"pool_fingerprint": fingerprint, "class_names": names}).encode()}
    with storage.atomic_open(storage.join(out_url, unit)) as f:
        with pq.ParquetWriter(f, _SCHEMA.with_metadata(meta), compression="zstd") as writer:
            rows: list[dict] = []
            for item in selected:
                if isinstance(item, _Counts):  # a shard ends: its rows make one row group
                    counts.lose(item["unreadable"], item["events"], item["errors"])
                    if rows:
                        writer.write_table(pa.Table.from_pylist(rows, schema=_SCHEMA))
                        counts["written"] += len(rows)
                    rows = []
                else:
                    rows.append(item)
    return counts


def _write_webdataset(out_url: str, unit: str, selected, names: list[str], fingerprint: str) -> dict:
    counts = _Counts()
    with contextlib.ExitStack() as stack:
        tar = None  # opened at the first image, so that a shard without any writes no tar
        for item in selected:
            if isinstance(item, _Counts):
                counts.lose(item["unreadable"], item["events"], item["errors"])
                continue
            if tar is None:
                tar = stack.enter_context(wds.TarWriter(stack.enter_context(
                    storage.atomic_open(storage.join(out_url, unit)))))
            meta = {k: item[k] for k in ("index", "key", "label", "class_name")}
            tar.write({"__key__": item["key"], item["ext"]: item["image"], "cls": str(item["label"]).encode(),
                       "json": json.dumps(meta).encode()})
            counts["written"] += 1
    return counts


def _write_imagefolder(out_url: str, unit: str, selected, names: list[str], fingerprint: str) -> dict:
    counts, folders = _Counts(), class_folders(names)
    for item in selected:
        if isinstance(item, _Counts):
            counts.lose(item["unreadable"], item["events"], item["errors"])
            continue
        storage.write_bytes(storage.join(out_url, folders[item["label"]], f"{item['index']}.{item['ext']}"),
                            item["image"])
        counts["written"] += 1
    return counts


_WRITERS = {"parquet": _write_parquet, "webdataset": _write_webdataset, "imagefolder": _write_imagefolder}
