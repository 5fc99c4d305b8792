"""The reference pool on storage: webdataset shards, ``index.parquet`` and ``reference.json``.

Layout under the pool URL::

    shard-000000.tar …     webdataset shards; sample = <key>.png|.jpg + <key>.json {"index", "source", "label"}
    index.parquet          one row per image: index, shard, key, source, source_label
    reference.json         {"format", "n", "shards": [{"name", "n", "first_index"}], "fingerprint", "sources": [{"spec",
                           "name", "n", "class_names", "labelled", "n_unreadable"}]}

Every image has a global index 0..N-1 in canonical order (shard order, then order inside the shard); the
index is also stored inside each sample so a reader that drops a corrupt sample does not shift the
indices of the rest. The fingerprint is a sha256 over the ordered (key, sha256(image bytes)) pairs: a
client whose pool differs by a single byte or a single reordering gets a different fingerprint.
Source labels are stored for analysis only; selection never reads them.

Shards are written by ``wds.TarWriter`` and stay plain webdataset shards: ``wds.WebDataset`` pipelines read them
(from S3 too, through the fsspec opener registered below). PLADA's own reader, ``iter_shard``, lives in
``plada_core.io.tar_stream`` (re-exported here): a lean tar parser that counts every sample it has to drop.
"""

from __future__ import annotations

import hashlib
import json
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import webdataset as wds
from tqdm.auto import tqdm

from plada_core.io import storage, tables
from plada_core.io.tar_stream import ReadStats, TruncatedShard, iter_shard
from plada_core.payload import Payload, decode_payload, needs_layout

__all__ = [
    "POOL_FORMAT",
    "ReadStats",
    "TruncatedShard",
    "build_reference",
    "decode_for_pool",
    "iter_shard",
    "list_shards",
    "load_images",
    "read_index",
    "read_layout",
    "read_reference",
    "reference_exists",
    "shard_urls",
    "shards_holding",
]

# Images per webdataset shard of a new pool: a few MB of small images per object, enough shards for parallel
# scoring workers on pools of tens of thousands. Every entry point's default (plada reference build, plada run).
DEFAULT_SHARD_SIZE = 4096

POOL_FORMAT = "plada-reference/1"


def _fsspec_gopen(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    """webdataset opener for fsspec URLs (``s3://`` …), via ``storage.open_read`` (retries, no creds in URLs).

    The filesystem is looked up per call (fsspec caches it per process and re-creates it after a fork), never
    held from before a fork: s3fs instances are not fork-safe.
    """
    if mode != "rb":
        raise ValueError(f"{url}: this opener only reads (mode {mode!r}); write shards with storage.atomic_open")
    return storage.open_read(url, block_size=8 << 20)


def _register_fsspec_schemes() -> None:
    # webdataset 1.0.2 has no fsspec fallback. s3/memory explicitly; every other scheme it does not handle
    # itself (it keeps its pipe/http/gs/hf/... openers) falls through to fsspec, including protocols
    # registered with fsspec later. Bare paths and file:// never reach this table.
    for scheme in ("s3", "s3a", "memory", "__default__"):
        wds.gopen_schemes[scheme] = _fsspec_gopen


_register_fsspec_schemes()


def _shard_name(i: int) -> str:
    return f"shard-{i:06d}.tar"


def _write_shard(url: str, samples: list[tuple[int, object, str]]) -> None:
    with storage.atomic_open(url) as f, wds.TarWriter(f) as writer:
        for index, sample, source_name in samples:
            meta = {"index": index, "source": source_name, "label": int(sample.label)}
            writer.write({"__key__": sample.key, sample.ext: sample.data, "json": json.dumps(meta).encode()})


def _iter_all(sources) -> Iterator[tuple[object, object]]:
    for source in sources:
        for sample in source.iter_encoded():
            yield sample, source


def _check_sources(sources: list) -> None:
    """The same spec twice raises before anything is written. (Sources that share a name, such as ``a/x.npz``
    and ``b/x.npz``, are kept as they are: keys, and so fingerprints, must not depend on which other sources a
    pool holds; if their keys collide, the build names both and the fix.)"""
    specs = set()
    for source in sources:
        if source.spec in specs:
            raise ValueError(f"source {source.spec!r} is given twice: give each source once")
        specs.add(source.spec)


def _source_record(source) -> dict:
    """What ``reference.json`` says of one source: its spec, name, images, classes (none when unlabelled) and the
    files or samples it passed over as unreadable. A source-like object without ``labelled`` / ``unreadable``
    (``Source`` has both) counts as labelled with none passed over."""
    return {"spec": source.spec, "name": source.name, "n": len(source), "class_names": list(source.class_names),
            "labelled": getattr(source, "labelled", True),
            "n_unreadable": len(getattr(source, "unreadable", ()))}  # fmt: skip


def build_reference(
    sources: list, out_url: str, shard_size: int = DEFAULT_SHARD_SIZE, progress: bool = True
) -> dict:
    """Write the pool from ``sources`` (see ``plada_core.io.sources``) in one streaming pass.

    Holds at most one shard of encoded images in memory. ``reference.json`` is written last, so its
    presence marks a complete pool; an interrupted build leaves no ``reference.json`` and is simply redone.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size!r}")
    if not sources:
        raise ValueError("no reference sources given: pass at least one source spec")
    if reference_exists(out_url):
        raise FileExistsError(
            f"{out_url} already holds a reference pool; PLADA never overwrites one (clients depend on its "
            "fingerprint). Choose another output URL or delete the old pool first."
        )
    _check_sources(sources)
    digest, rows, shards, pending, seen_keys = hashlib.sha256(), [], [], [], {}
    total = sum(len(s) for s in sources)
    for sample, source in tqdm(_iter_all(sources), total=total, desc="reference", unit="img", disable=not progress):
        source_name, source_spec = source.name, source.spec
        if sample.key in seen_keys:
            first = seen_keys[sample.key]
            raise ValueError(
                f"duplicate key {sample.key!r} in sources {first!r} and {source_spec!r}: keys start with the "
                "source's name, so two sources with the same name (files a/x.npz and b/x.npz) collide, and images: "
                "and wds: sources key images by their paths under the folder, so two folders holding the same file "
                "names collide; rename one, or give their common parent folder as one source"
            )
        seen_keys[sample.key] = source_spec
        index = len(rows)
        digest.update(sample.key.encode() + b"\0" + hashlib.sha256(sample.data).digest())
        rows.append((index, _shard_name(len(shards)), sample.key, source_name, int(sample.label)))
        pending.append((index, sample, source_name))
        if len(pending) == shard_size:
            shards.append(_flush(out_url, len(shards), pending))
            pending = []
    if pending:
        shards.append(_flush(out_url, len(shards), pending))
    index = pd.DataFrame(rows, columns=["index", "shard", "key", "source", "source_label"])
    tables.write_frame(index, storage.join(out_url, "index.parquet"))
    reference = {
        "format": POOL_FORMAT,
        "n": len(rows),
        "shards": shards,
        "fingerprint": digest.hexdigest(),
        "sources": [_source_record(s) for s in sources],
    }
    storage.write_json(storage.join(out_url, "reference.json"), reference)
    return reference


def _flush(out_url: str, shard_no: int, pending: list) -> dict:
    name = _shard_name(shard_no)
    _write_shard(storage.join(out_url, name), pending)
    return {"name": name, "n": len(pending), "first_index": pending[0][0]}


def reference_exists(reference_url: str) -> bool:
    """Whether a complete pool is at ``reference_url``: ``reference.json`` is written last."""
    return storage.exists(storage.join(reference_url, "reference.json"))


def read_reference(reference_url: str) -> dict:
    """Parse and check ``reference.json``; a missing or foreign file is a clear error."""
    url = storage.join(reference_url, "reference.json")
    if not storage.exists(url):
        raise FileNotFoundError(
            f"no reference pool at {reference_url}: {url} is missing. Build one with `plada reference build`."
        )
    ref = storage.read_json(url)
    if ref.get("format") != POOL_FORMAT:
        raise ValueError(f"{url} has format {ref.get('format')!r}; this PLADA reads {POOL_FORMAT!r}")
    return ref


def list_shards(reference_url: str) -> list[dict]:
    """``[{"url", "n"}]`` for every shard of the pool, in canonical order: what a scoring run maps over."""
    shards = read_reference(reference_url)["shards"]
    return [{"url": storage.join(reference_url, s["name"]), "n": s["n"]} for s in shards]


def shard_urls(reference_url: str) -> list[str]:
    """The URLs of ``list_shards``."""
    return [s["url"] for s in list_shards(reference_url)]


def read_index(reference_url: str, indices: Iterable[int] | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """The pool index, or only the rows of ``indices``: streamed in record batches, so picking k rows out of a
    pool of any size holds the k rows plus one batch, never the whole index."""
    url = storage.join(reference_url, "index.parquet")
    if indices is None:
        frame = tables.read_frame(url)
        return frame if columns is None else frame[columns]
    wanted = np.unique(np.fromiter((int(i) for i in indices), dtype=np.int64))
    parts = []
    with storage.open_read(url) as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=65536, columns=columns):
            frame = batch.to_pandas()
            parts.append(frame[np.isin(frame["index"].to_numpy(), wanted)])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def read_layout(reference_url: str, batch_size: int = 1 << 18) -> np.ndarray:
    """The pool's block layout: the lengths of the runs of equal (source, source label) in index order.

    A pool built from class-ordered sources (``imagefolder``, one tar per synset) is stored class by class, and
    these runs are its class blocks; codecs that code positions block by block ("layout-rc") use them. Both
    sides derive it from the same ``index.parquet``, so it need not travel. Streamed in record batches.
    """
    url = storage.join(reference_url, "index.parquet")
    sizes: list[int] = []
    previous, run = None, 0  # the key and length so far of the run still open at the end of the last batch
    with storage.open_read(url) as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=["source", "source_label"]):
            keys = batch.column("source").to_numpy(zero_copy_only=False).astype(str)
            keys = np.char.add(np.char.add(keys, "\0"), batch.column("source_label").to_numpy().astype(str))
            cursor = 0
            for start in np.flatnonzero(np.concatenate(([keys[0] != previous], keys[1:] != keys[:-1]))).tolist():
                run += start - cursor
                if run:
                    sizes.append(run)
                run, cursor = 0, start
            run += keys.size - cursor
            previous = keys[-1]
    if run:
        sizes.append(run)
    return np.asarray(sizes, dtype=np.int64)


def decode_for_pool(data: bytes, reference_url: str) -> Payload:
    """Decode untrusted payload ``data`` for the pool at ``reference_url``: its fingerprint and size must match,
    and its layout is read only when the payload's codec codes against one."""
    ref = read_reference(reference_url)
    layout = read_layout(reference_url) if needs_layout(data) else None
    return decode_payload(data, expected_fingerprint=ref["fingerprint"], expected_n_reference=ref["n"], layout=layout)


def shards_holding(reference: dict, indices: Iterable[int]) -> list[str]:
    """Names of the shards that hold ``indices``: shards hold contiguous index ranges (reference.json)."""
    starts = np.array([s["first_index"] for s in reference["shards"]], dtype=np.int64)
    positions = np.searchsorted(starts, np.fromiter((int(i) for i in indices), dtype=np.int64), side="right") - 1
    return [reference["shards"][p]["name"] for p in np.unique(positions[positions >= 0])]


def load_images(reference_url: str, indices: Iterable[int], progress: bool = True) -> tuple[dict[int, bytes], ReadStats]:
    """Encoded images for ``indices``, reading only the shards that hold them (one at a time)."""
    wanted = set(int(i) for i in indices)
    shards = shards_holding(read_reference(reference_url), wanted)
    found, stats = {}, ReadStats()
    for name in tqdm(shards, desc="load selected", unit="shard", disable=not progress):
        for i, data in iter_shard(storage.join(reference_url, name), stats):
            if i in wanted:
                found[i] = data
    return found, stats
