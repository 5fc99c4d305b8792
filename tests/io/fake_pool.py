"""A tiny in-memory reference source for pool tests (n random 6x6 grey PNGs with alternating labels), and a pool
built from one and read back with the shard reader."""

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from plada_core.io import pool, storage, tar_stream


@dataclass(frozen=True)
class FakeSample:
    key: str
    data: bytes
    ext: str
    label: int


class FakeSource:
    """Looks like a ``plada_core.io.sources`` source: ``spec``, ``name``, ``class_names``, ``len``, ``iter_encoded``."""

    def __init__(self, name: str, n: int, seed: int = 0, labels: list[int] | None = None):
        self.spec, self.name, self.class_names = f"fake:{name}", name, ["a", "b"]
        rng = np.random.default_rng(seed)
        labels = [i % 2 for i in range(n)] if labels is None else labels
        self._samples = [FakeSample(f"{name}-{i:08d}", png(rng.integers(0, 256, (6, 6), dtype=np.uint8)), "png",
                                    labels[i]) for i in range(n)]

    def __len__(self):
        return len(self._samples)

    def iter_encoded(self):
        return iter(self._samples)


def png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, format="PNG")
    return buf.getvalue()


def build_pool(root: str, n: int = 8, shard_size: int = 4) -> tuple[str, list[str]]:
    """(pool URL, shard URLs) of a pool of ``n`` fake images under ``root``."""
    url = storage.join(root, "p")
    pool.build_reference([FakeSource("a", n)], url, shard_size=shard_size, progress=False)
    return url, pool.shard_urls(url)


def read_all(url: str) -> tuple[list[tuple[int, bytes]], tar_stream.ReadStats]:
    """Every (index, image bytes) of every shard of the pool at ``url``, with what the reader dropped."""
    stats = tar_stream.ReadStats()
    return [s for shard in pool.shard_urls(url) for s in tar_stream.iter_shard(shard, stats)], stats
