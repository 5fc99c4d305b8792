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
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import fsspec
import pandas as pd
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
]

POOL_FORMAT = "plada-reference/1"


def _fsspec_gopen(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    # Built per call (fsspec caches instances per process), never in a parent before a fork:
    # s3fs instances are not fork-safe.
    return fsspec.open(url, mode, block_size=8 << 20).open()


for _scheme in ("s3", "memory"):
    wds.gopen_schemes[_scheme] = _fsspec_gopen


@dataclass
class ReadStats:
    """What a shard reader had to drop, with reasons; never skip silently."""

    errors: list[str] = field(default_factory=list)

    def handler(self, exc: Exception) -> bool:
        self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
        return True  # keep reading what is still readable


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


def read_index(reference_url: str) -> pd.DataFrame:
    return tables.read_frame(storage.join(reference_url, "index.parquet"))


def _samples(url: str, stats: ReadStats) -> Iterator[dict]:
    path = storage.to_url(url)
    if path.startswith("file://"):
        path = path[len("file://") :]
    if not path.startswith(("s3://", "memory://")) and not storage.exists(url):
        stats.errors.append(f"MissingShard: {url} does not exist")
        return
    pipeline = wds.DataPipeline(wds.SimpleShardList([path]), wds.tarfile_to_samples(handler=stats.handler))
    yield from pipeline


def iter_shard(url: str, stats: ReadStats) -> Iterator[tuple[int, bytes]]:
    """Yield ``(global index, encoded image bytes)`` from one shard, recording unreadable parts in ``stats``."""
    for sample in _samples(url, stats):
        image = sample.get("png", sample.get("jpg"))
        try:
            index = int(json.loads(sample["json"])["index"])
        except (KeyError, ValueError, TypeError) as exc:
            stats.handler(ValueError(f"sample {sample.get('__key__')!r} has no readable index: {exc}"))
            continue
        if image is None:
            stats.handler(ValueError(f"sample {sample.get('__key__')!r} (index {index}) has no image"))
            continue
        yield index, image


def load_images(reference_url: str, indices: Iterable[int], progress: bool = True) -> tuple[dict[int, bytes], ReadStats]:
    """Encoded images for ``indices``, reading only the shards that hold them (one at a time)."""
    wanted = set(int(i) for i in indices)
    index = read_index(reference_url)
    shards = sorted(index.loc[index["index"].isin(wanted), "shard"].unique())
    found, stats = {}, ReadStats()
    for name in tqdm(shards, desc="load selected", unit="shard", disable=not progress):
        for i, data in iter_shard(storage.join(reference_url, name), stats):
            if i in wanted:
                found[i] = data
    return found, stats
