"""The reference pool on storage: webdataset shards, ``index.parquet`` and ``reference.json``.

Layout under the pool URL::

    shard-000000.tar …     webdataset shards; sample = <key>.png|.jpg + <key>.json {"index", "source", "label"}
    index.parquet          one row per image: index, shard, key, source, source_label
    reference.json         {"format", "n", "shards": [{"name", "n", "first_index"}], "fingerprint", "sources"}

Every image has a global index 0..N-1 in canonical order (shard order, then order inside the shard); the
index is also stored inside each sample so a reader that drops a corrupt sample does not shift the
indices of the rest. The fingerprint is a sha256 over the ordered (key, sha256(image bytes)) pairs: a
client whose pool differs by a single byte or a single reordering gets a different fingerprint.
Source labels are stored for analysis only; selection never reads them.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import webdataset as wds
from tqdm.auto import tqdm

from plada_core.io import storage, tables

__all__ = [
    "POOL_FORMAT",
    "ReadStats",
    "build_reference",
    "iter_shard",
    "load_images",
    "read_index",
    "read_reference",
    "shard_urls",
    "shards_holding",
]

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


@dataclass
class ReadStats:
    """What a shard reader had to drop, with reasons; never skip silently.

    ``errors`` holds one message per event and ``counts`` the events per kind: ``missing_shard``,
    ``unreadable_shard`` (truncated or corrupt tar; the rest of that shard is lost), ``transient`` (storage
    failed mid-read even after the client's retries: re-read the shard rather than keep a partial result),
    ``bad_sample`` (no index or no image) and ``undecodable_image`` (bytes that are not an image). Events are
    not images: a truncated shard is one event however many images it lost; compare yielded with expected.
    """

    errors: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def record(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        self.errors.append(message[:300])

    def handler(self, exc: Exception) -> bool:
        kind = "transient" if storage.is_transient(exc) else "unreadable_shard"
        self.record(kind, f"{type(exc).__name__}: {exc}")
        return True  # keep reading what is still readable

    @property
    def transient(self) -> bool:
        """Storage failed mid-read: the shard may well be intact, so re-read it (let the task retry) rather
        than keep a partial result."""
        return self.counts["transient"] > 0


def _shard_name(i: int) -> str:
    return f"shard-{i:06d}.tar"


def _write_shard(url: str, samples: list[tuple[int, object, str]]) -> None:
    with storage.atomic_open(url) as f, wds.TarWriter(f) as writer:
        for index, sample, source_name in samples:
            meta = {"index": index, "source": source_name, "label": int(sample.label)}
            writer.write({"__key__": sample.key, sample.ext: sample.data, "json": json.dumps(meta).encode()})


def _iter_all(sources) -> Iterator[tuple[object, str]]:
    for source in sources:
        for sample in source.iter_encoded():
            yield sample, source.name


def build_reference(sources: list, out_url: str, shard_size: int = 4096, progress: bool = True) -> dict:
    """Write the pool from ``sources`` (see ``plada_core.io.sources``) in one streaming pass.

    Holds at most one shard of encoded images in memory. ``reference.json`` is written last, so its
    presence marks a complete pool; an interrupted build leaves no ``reference.json`` and is simply redone.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size!r}")
    if not sources:
        raise ValueError("no reference sources given: pass at least one source spec")
    if storage.exists(storage.join(out_url, "reference.json")):
        raise FileExistsError(
            f"{out_url} already holds a reference pool; PLADA never overwrites one (clients depend on its "
            "fingerprint). Choose another output URL or delete the old pool first."
        )
    digest, rows, shards, pending, seen_keys = hashlib.sha256(), [], [], [], {}
    total = sum(len(s) for s in sources)
    for sample, source_name in tqdm(_iter_all(sources), total=total, desc="reference", unit="img", disable=not progress):
        if sample.key in seen_keys:
            raise ValueError(
                f"duplicate key {sample.key!r} in sources {seen_keys[sample.key]!r} and {source_name!r}: "
                "is the same source given twice?"
            )
        seen_keys[sample.key] = source_name
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
        "sources": [{"spec": s.spec, "name": s.name, "n": len(s), "class_names": list(s.class_names)} for s in sources],
    }
    storage.write_json(storage.join(out_url, "reference.json"), reference)
    return reference


def _flush(out_url: str, shard_no: int, pending: list) -> dict:
    name = _shard_name(shard_no)
    _write_shard(storage.join(out_url, name), pending)
    return {"name": name, "n": len(pending), "first_index": pending[0][0]}


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


def shard_urls(reference_url: str) -> list[str]:
    return [storage.join(reference_url, s["name"]) for s in read_reference(reference_url)["shards"]]


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


def shards_holding(reference: dict, indices: Iterable[int]) -> list[str]:
    """Names of the shards that hold ``indices``: shards hold contiguous index ranges (reference.json)."""
    starts = np.array([s["first_index"] for s in reference["shards"]], dtype=np.int64)
    positions = np.searchsorted(starts, np.fromiter((int(i) for i in indices), dtype=np.int64), side="right") - 1
    return [reference["shards"][p]["name"] for p in np.unique(positions[positions >= 0])]


class _TarEndCheck:
    """Passes reads through, keeping the last 1 KiB, to notice a shard cut at a member boundary.

    tarfile's stream mode takes such a cut for the normal end of the archive and raises nothing, so the rest
    of the shard would vanish silently. A complete tar ends with at least two zero blocks (1 KiB); member
    data padded to 512 bytes does not, unless a member itself ends in 1 KiB of zeros (then a cut is missed).
    """

    def __init__(self, stream, url: str) -> None:
        self._stream, self._url, self._tail = stream, url, b""

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._tail = (self._tail + data[-1024:])[-1024:]
        return data

    def ended_with_marker(self) -> bool:
        """Reads what tarfile left (normally only the zero padding of the last record) and checks the tail."""
        while self.read(1 << 20):
            pass
        return self._tail == bytes(1024)

    def __repr__(self) -> str:  # webdataset appends str(stream) to its error messages
        return f"<shard {self._url}>"


def _samples(url: str, stats: ReadStats) -> Iterator[dict]:
    """The shard's samples; every problem is recorded in ``stats``, and the stream is always closed."""
    try:
        stream = storage.open_read(url, block_size=8 << 20)
    except FileNotFoundError:
        stats.record("missing_shard", f"MissingShard: {url} does not exist")
        return
    except Exception as exc:  # noqa: BLE001 - unreachable after retries, denied...: count it, read the next shard
        stats.handler(exc)
        return
    broken_before = stats.counts["unreadable_shard"] + stats.counts["transient"]
    checked = _TarEndCheck(stream, url)
    try:
        shard = [{"url": url, "stream": checked}]
        files = wds.tariterators.tar_file_expander(shard, handler=stats.handler, eof_value=None)
        yield from wds.tariterators.group_by_keys(files, handler=stats.handler)
        if stats.counts["unreadable_shard"] + stats.counts["transient"] == broken_before:
            _check_complete(checked, url, stats)
    finally:
        stream.close()


def _check_complete(checked: _TarEndCheck, url: str, stats: ReadStats) -> None:
    try:
        complete = checked.ended_with_marker()
    except Exception as exc:  # noqa: BLE001 - a read error while draining the tail is still just counted
        stats.handler(exc)
        return
    if not complete:
        stats.record("unreadable_shard", f"TruncatedShard: {url} ends without the tar end-of-archive marker; "
                     "the samples after the cut are lost. Rewrite the shard from its sources.")


# What every PNG / JPEG starts with. Checking it costs nanoseconds, not a decode, and catches garbage bytes.
_MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "jpg": b"\xff\xd8\xff"}


def iter_shard(url: str, stats: ReadStats) -> Iterator[tuple[int, bytes]]:
    """Yield ``(global index, encoded image bytes)`` from one shard, recording unreadable parts in ``stats``.

    Samples whose bytes do not start like their extension's format are dropped here and counted as
    ``undecodable_image``; bytes with a valid header but broken pixel data still reach the caller, whose
    decoder must count them.
    """
    for sample in _samples(url, stats):
        ext = "png" if "png" in sample else "jpg"
        image = sample.get(ext)
        try:
            index = int(json.loads(sample["json"])["index"])
        except (KeyError, ValueError, TypeError) as exc:
            stats.record("bad_sample", f"ValueError: sample {sample.get('__key__')!r} has no readable index: {exc}")
            continue
        if image is None:
            stats.record("bad_sample", f"ValueError: sample {sample.get('__key__')!r} (index {index}) has no image")
            continue
        if not image.startswith(_MAGIC[ext]):
            stats.record("undecodable_image", f"UndecodableImage: sample {sample.get('__key__')!r} (index {index}) "
                         f"in {url}: {len(image)} bytes starting {bytes(image[:8])!r} are not a {ext.upper()}")
            continue
        yield index, image


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
