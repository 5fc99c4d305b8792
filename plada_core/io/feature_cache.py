"""Pooled features of a payload's images, cached per pool shard, for students with a frozen backbone.

A frozen backbone computes the same features every epoch, so its student computes them once (one pass over the
``PayloadStream``) and trains the head on the cache, streamed with the same per-epoch shard shuffle, worker split
and shuffle buffer. Layout under the caller's cache URL::

    cache.json                          {"fingerprint", "preprocess", "model"}: what the features depend on
    <shard stem>-<digest>.npz           indices (int64), features (float32 n x d), drops (JSON of DropCounts)

``<digest>`` hashes the shard's selected indices, so a different payload never reads another one's features;
files are written atomically, so an interrupted pass resumes with the shards it lacks. Labels are not cached:
they come from the payload each time. The caller picks the URL; one that already holds features of another pool,
preprocessing or model is refused rather than mixed.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict
from typing import Iterator

import numpy as np
import torch

from plada_core.io import storage
from plada_core.io.payload_stream import PayloadStream
from plada_core.io.shard_stream import DropCounts, ShardStream

__all__ = ["FeatureCache", "FeatureStream"]


class FeatureCache:
    """Features of ``stream``'s images under ``url``; ``model_id`` names the backbone (part of the cache key)."""

    def __init__(self, url: str, stream: PayloadStream, model_id: str) -> None:
        self.url, self.images = storage.to_url(url), stream
        key = {"fingerprint": stream.fingerprint, "preprocess": asdict(stream.preprocess), "model": model_id}
        meta_url = storage.join(self.url, "cache.json")
        if storage.exists(meta_url):
            found = storage.read_json(meta_url)
            if found != key:
                raise ValueError(
                    f"the feature cache {self.url} holds features of {found}, not of {key}: give this model, pool "
                    "and preprocessing their own cache URL, or delete the old cache"
                )
        else:
            storage.write_json(meta_url, key)

    def shard_file(self, shard: str) -> str:
        indices, _ = self.images.wanted(shard)
        digest = hashlib.sha256(np.ascontiguousarray(indices, dtype="<i8").tobytes()).hexdigest()[:16]
        return storage.join(self.url, f"{shard.removesuffix('.tar')}-{digest}.npz")

    def missing_shards(self) -> list[str]:
        """The stream's shards whose features are not cached yet."""
        return [s for s in self.images.shards if not storage.exists(self.shard_file(s))]

    def write_shard(self, shard: str, indices: np.ndarray, features: np.ndarray, drops: DropCounts) -> str:
        """Store one shard's features (rows in the order of ``indices``) and the drops met computing them."""
        buf = io.BytesIO()
        np.savez(buf, indices=np.asarray(indices, np.int64), features=np.asarray(features, np.float32),
                 drops=np.frombuffer(json.dumps(drops.as_dict()).encode(), dtype=np.uint8))
        return storage.write_bytes(self.shard_file(shard), buf.getvalue())

    def stream(self) -> FeatureStream:
        """The cached features as a ``ShardStream`` shuffled like the image stream (same seed and buffer)."""
        missing = self.missing_shards()
        if missing:
            raise FileNotFoundError(f"{self.url} lacks the features of {len(missing)} shards ({missing[:3]} …); "
                                    "compute them first (stream_training does, on a pass over the images)")
        return FeatureStream(self)


class FeatureStream(ShardStream):
    """``(feature vector, label)`` samples from a complete ``FeatureCache``; ``loader()`` as for images. Each epoch
    reports again the drops met when the cache was filled, so its ``DropCounts`` match the image stream's."""

    def __init__(self, cache: FeatureCache) -> None:
        images = cache.images
        super().__init__(images.shards, images.sizes, images.seed, images.shuffle_buffer)
        self.shuffle_shards = images.shuffle_shards
        self.missing_from_index = images.missing_from_index
        self.cache = cache

    def _read_shard(self, s: int, drops: DropCounts) -> Iterator[tuple[torch.Tensor, int, int]]:
        shard = self.shards[s]
        with np.load(io.BytesIO(storage.read_bytes(self.cache.shard_file(shard)))) as npz:
            indices, features = npz["indices"], npz["features"]
            drops.add(DropCounts(**json.loads(npz["drops"].tobytes())))
        wanted, labels = self.cache.images.wanted(shard)
        label_of = labels[np.searchsorted(wanted, indices)]
        for i in range(len(indices)):
            yield torch.from_numpy(features[i].copy()), int(label_of[i]), int(indices[i])

    def _finish(self, raw, drops: DropCounts):
        return raw
