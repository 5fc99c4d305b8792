"""The client's training data: a payload's images streamed from the local pool with bounded memory.

``PayloadStream`` is a ``torch.utils.data.IterableDataset`` of ``(CxSxS float32 tensor, label)`` for the payload's
images only. It reads only the pool shards that hold selected images, each once per epoch, in a per-epoch shuffled
order, split across DataLoader workers (``plada_core.io.shard_stream`` has the mechanics: ``set_epoch``,
``loader``, drop counting across worker processes). Its shuffle buffer holds *encoded* images, decoded and
preprocessed only as they leave it, so memory is the plan (four int64 per selected image) plus ``shuffle_buffer``
encoded images, whatever k.

Reading only what is selected. The first read of a shard parses the whole tar (``iter_shard_located``) and notes
where each selected image's bytes lie; every later epoch fetches just those byte ranges (``read_members``: one
ranged read per run of images less than 256 KiB apart). A payload keeping 1 % of a pool of images over ~3 KB (any
natural photo: the selected ones then lie more than 256 KiB apart) so reads about 1 % of it per epoch after the
first, instead of every shard whole; in a pool of tiny images nearby picks share a read, and tar parsing and the
index JSON of the unselected samples are skipped either way.
The ranges live on the stream (learned in DataLoader workers too: they come back with the batches,
``ShardStream.shard_state``). A ranged read that fails or finds no image where one was is answered by a full read
of the shard, which learns its ranges afresh; nothing is lost by it.

Drops (``DropCounts``): ``missing_from_index`` (the pool's ``index.parquet`` does not list them; known up front, in
``stream.missing_from_index``), ``unreadable`` (their shard did not yield them: missing, truncated or corrupt shard,
bad sample; a shard whose read failed mid-way on storage is read once more first) and ``undecodable``.
"""

from __future__ import annotations

import copy
from typing import Iterable, Iterator

import numpy as np
import torch

from plada_core.images import PreprocessConfig, decode_image, preprocess
from plada_core.io import storage
from plada_core.io.pool import ReadStats, read_index, read_reference
from plada_core.io.shard_stream import Batch, DropCounts, ShardStream, StreamLoader
from plada_core.io.tar_stream import iter_shard_located, read_members
from plada_core.payload import Payload

__all__ = ["Batch", "DropCounts", "PayloadStream", "StreamLoader"]


class PayloadStream(ShardStream):
    """The payload's images from the pool at ``reference_url``, decoded and preprocessed (see the module docstring).

    Reads ``reference.json`` and the payload's rows of ``index.parquet`` here; shards are read while iterating.
    ``ranged_reads=False`` reads every shard whole in every epoch (the benchmark's comparison).
    """

    def __init__(self, reference_url: str, payload: Payload, preprocess_cfg: PreprocessConfig, *, seed: int = 0,
                 shuffle_buffer: int = 1024, ranged_reads: bool = True) -> None:  # fmt: skip
        self.reference_url = storage.to_url(reference_url)
        self.fingerprint = read_reference(self.reference_url)["fingerprint"]
        self.preprocess = preprocess_cfg
        order = np.argsort(payload.indices, kind="stable")  # a Payload's are sorted; one built by hand may not be
        wanted = np.asarray(payload.indices, dtype=np.int64)[order]
        rows = read_index(self.reference_url, wanted, columns=["index", "shard"]).sort_values("index")
        listed = np.isin(wanted, rows["index"].to_numpy())
        # Shards hold contiguous index ranges, so grouping the sorted rows by shard keeps the indices sorted.
        self._indices = rows["index"].to_numpy(np.int64)
        self._labels = np.asarray(payload.labels, dtype=np.int64)[order][listed]
        names, starts, sizes = np.unique(rows["shard"].to_numpy(str), return_index=True, return_counts=True)
        in_pool_order = np.argsort(starts)
        self._starts = starts[in_pool_order]
        super().__init__(names[in_pool_order].tolist(), sizes[in_pool_order], seed, shuffle_buffer)
        self.missing_from_index = wanted[~listed]
        self.ranged_reads = ranged_reads
        self._located: dict[str, np.ndarray] = {}  # shard → (offset, length) of each wanted image, in index order
        self.ranged_fallbacks = 0  # ranged reads answered by a full read (in this process)

    def shard_state(self, shard: str) -> np.ndarray | None:
        """Where the shard's selected images lie (n x 2 int64: offset, length), once a full read found them all."""
        return self._located.get(shard)

    def set_shard_state(self, shard: str, state: np.ndarray) -> None:
        self._located[shard] = state

    def only(self, shards: Iterable[str]) -> PayloadStream:
        """A copy restricted to the pool shards named in ``shards`` (e.g. those a cache still lacks)."""
        keep = np.isin(self.shards, list(shards))
        out = copy.copy(self)
        out.shards = np.asarray(self.shards)[keep].tolist()
        out.sizes, out._starts = self.sizes[keep], self._starts[keep]
        return out

    def wanted(self, shard: str) -> tuple[np.ndarray, np.ndarray]:
        """The selected pool indices in ``shard`` and their labels, in index order."""
        s = self.shards.index(shard)
        lo = self._starts[s]
        return self._indices[lo : lo + self.sizes[s]], self._labels[lo : lo + self.sizes[s]]

    def shard_url(self, shard: str) -> str:
        return storage.join(self.reference_url, shard)

    def _read_shard(self, s: int, drops: DropCounts) -> Iterator[tuple[bytes, int, int]]:
        shard = self.shards[s]
        url = self.shard_url(shard)
        wanted, labels = self.wanted(shard)
        got = np.zeros(len(wanted), bool)
        located = self._located.get(shard) if self.ranged_reads else None
        if located is not None:
            try:
                for p, data in enumerate(read_members(url, located[:, 0], located[:, 1])):
                    got[p] = True
                    yield data, int(labels[p]), int(wanted[p])
                return
            except Exception as exc:  # noqa: BLE001 - gone, rewritten, storage down: the full read counts what is lost
                del self._located[shard]
                self.ranged_fallbacks += 1
                drops.note("ranged_read_failed", f"{url}: {type(exc).__name__}: {exc}; read the shard whole")
        located = np.full((len(wanted), 2), -1, dtype=np.int64)
        for _ in range(2):  # a second read only when storage failed mid-read after its own retries
            stats = ReadStats()
            for index, data, offset in iter_shard_located(url, stats):
                p = int(np.searchsorted(wanted, index))
                if p < len(wanted) and wanted[p] == index:
                    located[p] = offset, len(data)
                    if not got[p]:
                        got[p] = True
                        yield data, int(labels[p]), index
            if got.all() or not stats.transient:
                break
        # ascending offsets: pool shards hold their samples in index order; a shard that does not is read whole
        if (located[:, 0] >= 0).all() and np.all(np.diff(located[:, 0]) > 0):
            self._located[shard] = located
        lost = int(len(got) - got.sum())
        if lost:  # the reader's events explain the loss; without a loss they concern unselected samples only
            drops.unreadable += lost
            drops.add(DropCounts(events=dict(stats.counts), errors=stats.errors))

    def _finish(self, raw: tuple[bytes, int, int], drops: DropCounts) -> tuple[torch.Tensor, int, int] | None:
        data, label, index = raw
        try:
            image = decode_image(data)
        except ValueError as exc:
            drops.undecodable += 1
            drops.note("undecodable_image", f"index {index}: {exc}")
            return None
        return torch.from_numpy(preprocess(image, self.preprocess)), label, index

    def feature_cache(self, url: str, model_id: str):
        """A ``FeatureCache`` of this stream's images under ``url`` (see ``plada_core.io.feature_cache``)."""
        from plada_core.io.feature_cache import FeatureCache

        return FeatureCache(url, self, model_id)
