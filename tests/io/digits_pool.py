"""A real reference pool for client-side tests: sklearn digits as PNGs, in shards of 20, and payloads over it."""

import numpy as np
from fake_pool import FakeSample, png

from plada_core.io import pool, storage
from plada_core.payload import Payload

SHARD = 20


class DigitsSource:
    """``n`` sklearn digits as PNGs with their labels (a ``plada_core.io.sources``-like source); ``broken``
    indices get PNG bytes with garbage pixel data, which the shard reader passes on and the decoder rejects."""

    def __init__(self, n: int, broken: tuple[int, ...] = ()):
        from sklearn.datasets import load_digits

        d = load_digits()
        images = np.round(d.images[:n] * (255 / 16)).astype(np.uint8)
        self.spec, self.name, self.class_names = "digits", "digits", [str(i) for i in range(10)]
        self.samples = [FakeSample(f"d-{i:06d}", png(img) if i not in broken else png(img)[:16] + b"garbage",
                                   "png", int(d.target[i])) for i, img in enumerate(images)]

    def __len__(self):
        return len(self.samples)

    def iter_encoded(self):
        return iter(self.samples)


def make_pool(root: str, n: int = 200, broken: tuple[int, ...] = ()) -> tuple[str, DigitsSource]:
    url = storage.join(root, "pool")
    source = DigitsSource(n, broken)
    pool.build_reference([source], url, shard_size=SHARD, progress=False)
    return url, source


def make_payload(url: str, source: DigitsSource, indices) -> Payload:
    ref = pool.read_reference(url)
    indices = np.asarray(sorted(indices), dtype=np.int64)
    labels = np.array([source.samples[i].label for i in indices], dtype=np.int32)
    return Payload(indices, labels, ref["n"], 10, ref["fingerprint"], "test")
