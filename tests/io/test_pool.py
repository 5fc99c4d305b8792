import io
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from plada_core.io import pool, storage


@dataclass(frozen=True)
class _Sample:
    key: str
    data: bytes
    ext: str
    label: int


class _Source:
    def __init__(self, name: str, n: int, seed: int = 0):
        self.spec, self.name, self.class_names = f"fake:{name}", name, ["a", "b"]
        rng = np.random.default_rng(seed)
        self._samples = [_Sample(f"{name}-{i:08d}", _png(rng.integers(0, 256, (6, 6), dtype=np.uint8)), "png", i % 2)
                         for i in range(n)]

    def __len__(self):
        return len(self._samples)

    def iter_encoded(self):
        return iter(self._samples)


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, format="PNG")
    return buf.getvalue()


def test_build_writes_shards_index_and_fingerprint(tmp_path):
    ref = pool.build_reference([_Source("a", 7), _Source("b", 5, seed=1)], str(tmp_path / "p"), shard_size=4, progress=False)
    assert ref["n"] == 12 and [s["n"] for s in ref["shards"]] == [4, 4, 4]
    assert [s["first_index"] for s in ref["shards"]] == [0, 4, 8]
    index = pool.read_index(str(tmp_path / "p"))
    assert index["index"].tolist() == list(range(12)) and index["key"].is_unique
    stats = pool.ReadStats()
    got = [i for url in pool.shard_urls(str(tmp_path / "p")) for i, _ in pool.iter_shard(url, stats)]
    assert got == list(range(12)) and stats.errors == []


def test_fingerprint_changes_with_content_and_order(tmp_path):
    a = pool.build_reference([_Source("a", 5)], str(tmp_path / "1"), progress=False)["fingerprint"]
    same = pool.build_reference([_Source("a", 5)], str(tmp_path / "2"), progress=False)["fingerprint"]
    other = pool.build_reference([_Source("a", 5, seed=3)], str(tmp_path / "3"), progress=False)["fingerprint"]
    assert a == same and a != other and len(a) == 64


def test_truncated_and_missing_shards_are_counted_not_raised(tmp_path):
    url = str(tmp_path / "p")
    pool.build_reference([_Source("a", 8)], url, shard_size=4, progress=False)
    first, second = pool.shard_urls(url)
    data = storage.read_bytes(first)
    (tmp_path / "p" / "shard-000000.tar").write_bytes(data[: len(data) // 2])
    stats = pool.ReadStats()
    kept = [i for i, _ in pool.iter_shard(first, stats)]
    assert len(kept) < 4 and stats.errors, "a truncated shard yields what is readable and records the error"
    (tmp_path / "p" / "shard-000001.tar").unlink()
    stats = pool.ReadStats()
    assert list(pool.iter_shard(second, stats)) == [] and "MissingShard" in stats.errors[0]


def test_load_images_reads_only_requested(tmp_path):
    url = str(tmp_path / "p")
    pool.build_reference([_Source("a", 10)], url, shard_size=3, progress=False)
    found, stats = pool.load_images(url, [1, 9], progress=False)
    assert sorted(found) == [1, 9] and stats.errors == []


def test_missing_pool_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="plada reference build"):
        pool.read_reference(str(tmp_path / "nowhere"))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with storage.atomic_open(str(target)) as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []
