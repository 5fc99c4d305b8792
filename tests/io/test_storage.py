"""storage / tables / checkpoints on both backends (local folder and moto's S3 server), same test bodies."""

import fsspec
import pandas as pd
import pytest
from fake_pool import FakeSource
from torch import nn

from plada_core.io import checkpoints, pool, storage, tables


def _staged_somewhere(url: str) -> bool:
    """Bytes of an unfinished write exist somewhere a reader of ``url`` does not look."""
    fs, path = storage.get_fs(url)
    if url.startswith("s3://"):
        bucket, key = path.split("/", 1)
        return any(u["Key"] == key for u in fs.list_multipart_uploads(bucket))
    return any(fs.size(p) > 0 for p in fs.glob(path + ".tmp-*"))


def _leftovers(root: str) -> list:
    """Anything a finished or failed write left besides its objects: temp files, open multipart uploads."""
    fs, path = storage.get_fs(root)
    if root.startswith("s3://"):
        bucket, prefix = path.split("/", 1)
        return [u["Key"] for u in fs.list_multipart_uploads(bucket) if u["Key"].startswith(prefix)]
    return [p for p in fs.find(path) if ".tmp-" in p]


def test_object_appears_only_when_the_write_completes(storage_root, monkeypatch):
    # 5 MiB blocks (fsspec config, what a user would set) make s3fs upload a real part mid-write.
    monkeypatch.setitem(fsspec.config.conf, "s3", {"default_block_size": 5 << 20})
    url, data = storage.join(storage_root, "deep/er/big.bin"), bytes(range(256)) * (24 << 10)  # 6 MiB
    with storage.atomic_open(url) as f:
        f.write(data)
        f.flush()
        assert _staged_somewhere(url), "the bytes are already on storage..."
        assert not storage.exists(url), "...but not at the final name"
    assert storage.read_bytes(url) == data and _leftovers(storage_root) == []


def test_failed_write_leaves_neither_object_nor_staged_bytes(storage_root, monkeypatch):
    monkeypatch.setitem(fsspec.config.conf, "s3", {"default_block_size": 5 << 20})
    url = storage.join(storage_root, "out.bin")
    with pytest.raises(RuntimeError, match="boom"), storage.atomic_open(url) as f:
        f.write(b"x" * (6 << 20))
        f.flush()
        raise RuntimeError("boom")
    assert not storage.exists(url) and _leftovers(storage_root) == []


def test_overwrite_replaces_the_whole_object(storage_root):
    url = storage.join(storage_root, "a.bin")
    storage.write_bytes(url, b"first version, longer")
    storage.write_bytes(url, b"second")
    assert storage.read_bytes(url) == b"second"


def test_bytes_json_exists_and_remove(storage_root):
    folder = storage.join(storage_root, "run")
    storage.write_json(storage.join(folder, "a.json"), {"n": 3, "k": [1, 2]})
    storage.write_bytes(storage.join(folder, "sub/b.bin"), b"\x00\x01")
    assert storage.read_json(storage.join(folder, "a.json")) == {"n": 3, "k": [1, 2]}
    assert storage.exists(storage.join(folder, "sub/b.bin")) and not storage.exists(storage.join(folder, "c"))
    storage.remove(storage.join(folder, "a.json"))
    assert not storage.exists(storage.join(folder, "a.json")) and storage.exists(storage.join(folder, "sub/b.bin"))
    storage.remove(folder)
    storage.remove(folder)  # absent is fine
    assert not storage.exists(storage.join(folder, "sub/b.bin"))


def test_missing_object_is_file_not_found_naming_the_url(storage_root):
    url = storage.join(storage_root, "nope.bin")
    with pytest.raises(FileNotFoundError, match="nope.bin does not exist"):
        storage.read_bytes(url)


def test_parquet_round_trip_keeps_schema_metadata(storage_root):
    url = storage.join(storage_root, "m.parquet")
    frame = pd.DataFrame({"index": [3, 1, 2], "label": [0, 1, 0], "name": ["a", "b", "c"]})
    tables.write_frame(frame, url, metadata={"fingerprint": "ab" * 32, "k": 3})
    table = tables.read_table(url)
    assert tables.table_metadata(table) == {"fingerprint": "ab" * 32, "k": 3}
    pd.testing.assert_frame_equal(table.to_pandas(), frame, check_dtype=False)


def test_checkpoint_round_trip(storage_root):
    model = nn.Linear(3, 2)
    meta = {"arch": "linear", "classes": ["a", "b"]}
    state, loaded = checkpoints.load_checkpoint(checkpoints.save_checkpoint(model, meta, storage.join(storage_root, "m.pt")))
    assert loaded == meta and all((state[k] == v).all() for k, v in model.state_dict().items())


def test_exists_sees_changes_made_by_another_process(storage_root):
    # Another worker writes and deletes behind our back. A second filesystem instance stands in for it;
    # with s3fs's listings cache on, `exists` answered from this process's stale listing.
    folder = storage.join(storage_root, "scores")
    storage.write_bytes(storage.join(folder, "a.parquet"), b"a")
    fs, path = storage.get_fs(folder)
    assert len(fs.ls(path)) == 1  # a listing through PLADA's filesystem, as a resumed run makes
    other = fsspec.filesystem(fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0], skip_instance_cache=True)
    other.pipe_file(path + "/b.parquet", b"b")
    other.rm_file(path + "/a.parquet")
    assert storage.exists(storage.join(folder, "b.parquet")) and not storage.exists(storage.join(folder, "a.parquet"))


def test_credentials_in_a_url_are_refused_without_echoing_them():
    with pytest.raises(ValueError, match="embeds credentials") as info:
        storage.read_bytes("s3://AKIAEXAMPLE:s3cr3t@bucket/key")
    assert "s3cr3t" not in str(info.value) and "AKIAEXAMPLE" not in str(info.value)


def test_writing_to_a_missing_bucket_is_a_clear_error_and_creates_nothing(s3_server):
    with pytest.raises(FileNotFoundError, match="Create the bucket first"):
        storage.write_bytes("s3://plada-no-such-bucket/x.bin", b"x")
    fs, _ = storage.get_fs("s3://plada-no-such-bucket")
    assert not fs.exists("plada-no-such-bucket")


def test_nothing_written_holds_credentials_or_endpoint(s3_root, s3_server, monkeypatch):
    url = storage.join(s3_root, "p")
    pool.build_reference([FakeSource("a", 5)], url, shard_size=2, progress=False)
    tables.write_frame(pd.DataFrame({"x": [1]}), storage.join(s3_root, "t.parquet"), metadata={"pool": url})
    fs, path = storage.get_fs(s3_root)
    secrets = [b"plada-test-key", b"plada-test-secret", s3_server.endpoint.split("//")[1].encode()]
    blobs = {p: fs.cat_file(p) for p in fs.find(path)}
    assert len(blobs) == 6 and not [(p, s) for p, b in blobs.items() for s in secrets if s in b]


def test_errors_raised_by_the_writing_code_pass_through_unchanged(storage_root):
    url = storage.join(storage_root, "x.bin")
    with pytest.raises(FileNotFoundError, match="^input gone$"), storage.atomic_open(url) as f:
        f.write(b"partial")
        raise FileNotFoundError("input gone")
    assert not storage.exists(url)
