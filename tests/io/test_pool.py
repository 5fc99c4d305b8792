"""The reference pool on both backends: every ``storage_root`` test runs on a local folder and on moto's S3 server.

Building, ``reference.json``, the index and the layout; reading shards back is tests/io/test_tar_stream.py's.
"""

import io
import json

import pytest
import webdataset as wds
from fake_pool import FakeSource as _Source
from fake_pool import build_pool as _pool
from fake_pool import read_all as _read_all
from PIL import Image

from plada_core.io import pool, storage


def test_build_writes_shards_index_and_fingerprint(storage_root):
    url = storage.join(storage_root, "p")
    ref = pool.build_reference([_Source("a", 7), _Source("b", 5, seed=1)], url, shard_size=4, progress=False)
    assert ref["n"] == 12 and [s["n"] for s in ref["shards"]] == [4, 4, 4]
    assert [s["first_index"] for s in ref["shards"]] == [0, 4, 8]
    index = pool.read_index(url)
    assert index["index"].tolist() == list(range(12)) and index["key"].is_unique
    got, stats = _read_all(url)
    assert [i for i, _ in got] == list(range(12)) and stats.errors == [] and not stats.counts


def test_fingerprint_changes_with_content_and_order(storage_root):
    def fingerprint(name: str, source: _Source) -> str:
        return pool.build_reference([source], storage.join(storage_root, name), progress=False)["fingerprint"]

    a, same = fingerprint("1", _Source("a", 5)), fingerprint("2", _Source("a", 5))
    other = fingerprint("3", _Source("a", 5, seed=3))
    assert a == same and a != other and len(a) == 64


def test_disk_and_s3_pools_of_the_same_sources_are_identical(tmp_path, s3_root):
    sources = [_Source("a", 7), _Source("b", 5, seed=1)]
    on_disk = pool.build_reference(sources, str(tmp_path / "p"), shard_size=5, progress=False)
    on_s3 = pool.build_reference(sources, storage.join(s3_root, "p"), shard_size=5, progress=False)
    assert on_disk == on_s3, "reference.json (fingerprint included) must not depend on where the pool lives"
    assert pool.read_index(str(tmp_path / "p")).equals(pool.read_index(storage.join(s3_root, "p")))
    assert _read_all(str(tmp_path / "p"))[0] == _read_all(storage.join(s3_root, "p"))[0]


def test_existing_pool_is_never_overwritten(storage_root):
    url, _ = _pool(storage_root)
    with pytest.raises(FileExistsError, match="never overwrites"):
        pool.build_reference([_Source("a", 3)], url, progress=False)


def test_load_images_reads_only_requested(storage_root):
    url = storage.join(storage_root, "p")
    pool.build_reference([_Source("a", 10)], url, shard_size=3, progress=False)
    found, stats = pool.load_images(url, [1, 9], progress=False)
    assert sorted(found) == [1, 9] and stats.errors == []
    assert Image.open(io.BytesIO(found[9])).size == (6, 6)


def test_missing_pool_is_a_clear_error(storage_root):
    with pytest.raises(FileNotFoundError, match="plada reference build"):
        pool.read_reference(storage.join(storage_root, "nowhere"))


def test_atomic_write_leaves_nothing_on_failure(storage_root):
    target = storage.join(storage_root, "out.bin")
    with pytest.raises(RuntimeError), storage.atomic_open(target) as f:
        f.write(b"half")
        raise RuntimeError("boom")
    fs, path = storage.get_fs(storage_root)
    assert not storage.exists(target) and not (fs.exists(path) and fs.find(path))


def test_webdataset_pipelines_read_s3_through_the_registered_opener(s3_root):
    _, shards = _pool(s3_root)
    dataset = wds.WebDataset(shards, shardshuffle=False, nodesplitter=None)
    assert [json.loads(s["json"])["index"] for s in dataset] == list(range(8))


def test_index_rows_and_shards_for_a_few_indices(storage_root):
    url = storage.join(storage_root, "p")
    ref = pool.build_reference([_Source("a", 10)], url, shard_size=3, progress=False)
    rows = pool.read_index(url, [9, 1, 4], ["index", "key", "shard"])
    assert rows["index"].tolist() == [1, 4, 9] and list(rows.columns) == ["index", "key", "shard"]
    assert rows["shard"].tolist() == ["shard-000000.tar", "shard-000001.tar", "shard-000003.tar"]
    assert pool.shards_holding(ref, [9, 1, 4, 5]) == ["shard-000000.tar", "shard-000001.tar", "shard-000003.tar"]


@pytest.mark.parametrize("batch_size", [1, 3, 1 << 18])
def test_layout_is_the_runs_of_source_and_source_label(storage_root, batch_size):
    url = storage.join(storage_root, f"p{batch_size}")
    sources = [_Source("a", 7, labels=[0, 0, 0, 1, 1, 0, 0]), _Source("b", 3, labels=[0, 0, 0])]
    pool.build_reference(sources, url, shard_size=4, progress=False)
    # a 0s, a 1s, a 0s again, then source b (same label, other source): runs across record batches merge
    assert pool.read_layout(url, batch_size=batch_size).tolist() == [3, 2, 2, 3]


def test_sources_with_the_same_name_are_named_with_the_fix(tmp_path):
    """Two different files both called x.npz collide (keys start with the source's name, and a pool's keys must not
    depend on its other sources): the error names both specs and the fix; the same spec twice is refused early."""
    import numpy as np

    from plada_core.io.sources import open_source

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        np.savez(tmp_path / folder / "x.npz", images=np.full((2, 4, 4), ord(folder), np.uint8), labels=np.zeros(2, int))
    specs = [f"npz:{tmp_path / 'a' / 'x.npz'}", f"npz:{tmp_path / 'b' / 'x.npz'}"]
    with pytest.raises(ValueError, match=r"duplicate key 'x-00000000' in sources 'npz:.*a/x.npz' and 'npz:.*b/x.npz'.*"
                       r"rename one"):  # fmt: skip
        pool.build_reference([open_source(s) for s in specs], str(tmp_path / "pool"), progress=False)
    assert not (tmp_path / "pool" / "reference.json").exists()
    with pytest.raises(ValueError, match=r"source 'npz:.*a/x.npz' is given twice"):
        pool.build_reference([open_source(specs[0]), open_source(specs[0])], str(tmp_path / "p2"), progress=False)
