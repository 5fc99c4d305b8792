"""The shard reader (``plada_core.io.tar_stream``) on both backends: every ``storage_root`` test runs on a local folder
and on moto's S3 server.

Broken data is real: truncated, garbage and image-less shards are written to disk or S3 and read back. The lean
tar parser is checked against webdataset's own reader (tarfile underneath) on every cut of a real shard and on
archives from other tar writers.
"""

import io
import json
import multiprocessing
import tarfile

import numpy as np
import pytest
import webdataset as wds
from fake_pool import build_pool as _pool
from fake_pool import read_all as _read_all

from plada_core.io import storage, tar_stream


def _member_offsets(tar: bytes) -> list[int]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return [m.offset for m in t.getmembers()]


@pytest.mark.parametrize("cut", ["mid_member", "member_boundary"])
def test_truncated_shard_is_counted_not_raised(storage_root, cut):
    # A cut at a member boundary is the nasty one: tarfile's stream mode reads it as a normal end of archive.
    url, (first, _) = _pool(storage_root)
    data = storage.read_bytes(first)
    end = len(data) // 2 + 100 if cut == "mid_member" else _member_offsets(data)[2]  # [2]: after sample 0
    storage.write_bytes(first, data[:end])
    got, stats = _read_all(url)
    kept = [i for i, _ in got]
    assert kept[-4:] == [4, 5, 6, 7] and len(kept) < 8, "the intact shard is read whole, the cut one in part"
    assert stats.counts["unreadable_shard"] == 1 and any(first in e for e in stats.errors)
    if cut == "member_boundary":
        assert kept == [0, 4, 5, 6, 7] and stats.counts == {"unreadable_shard": 1}
        assert "TruncatedShard" in stats.errors[0]


def test_corrupt_shard_is_counted_not_raised(storage_root):
    url, (first, _) = _pool(storage_root)
    storage.write_bytes(first, np.random.default_rng(0).bytes(5000))
    got, stats = _read_all(url)
    assert [i for i, _ in got] == [4, 5, 6, 7]
    assert stats.counts == {"unreadable_shard": 1} and "ReadError" in stats.errors[0]


def test_undecodable_image_in_a_valid_shard_is_counted_not_raised(storage_root):
    url, (first, _) = _pool(storage_root)
    samples = list(tar_stream.iter_shard(first, tar_stream.ReadStats()))
    with storage.atomic_open(first) as f, wds.TarWriter(f) as writer:  # same shard, sample 2's png is garbage
        for index, data in samples:
            png = b"\x00garbage, not a png" if index == 2 else data
            writer.write({"__key__": f"a-{index:08d}", "png": png, "json": json.dumps({"index": index}).encode()})
    got, stats = _read_all(url)
    assert [i for i, _ in got] == [0, 1, 3, 4, 5, 6, 7]
    assert stats.counts == {"undecodable_image": 1} and "index 2" in stats.errors[0]


def test_missing_shard_is_counted_not_raised(storage_root):
    url, (first, _) = _pool(storage_root)
    storage.remove(first)
    got, stats = _read_all(url)
    assert [i for i, _ in got] == [4, 5, 6, 7]
    assert stats.counts == {"missing_shard": 1} and "MissingShard" in stats.errors[0]


def _count_in_child(shard_url: str) -> tuple[int, list[str]]:
    stats = tar_stream.ReadStats()
    return sum(1 for _ in tar_stream.iter_shard(shard_url, stats)), stats.errors


def test_shards_read_in_forked_workers_after_the_parent_used_s3(s3_root):
    # DataLoader / multiprocessing workers fork after the parent has used s3fs; an s3fs instance carried
    # across the fork raises "This class is not fork-safe". The opener must build its own in the child.
    _, shards = _pool(s3_root)
    assert storage.read_bytes(shards[0])  # the parent's s3fs client and event loop now exist
    with multiprocessing.get_context("fork").Pool(2) as workers:
        assert workers.map(_count_in_child, shards) == [(4, []), (4, [])]


def _webdataset_groups(data: bytes) -> tuple[list[dict], list[Exception]]:
    """webdataset's own reader (tarfile underneath) on ``data``: the reference for the lean shard reader."""
    errors: list[Exception] = []

    def handler(exc: Exception) -> bool:
        errors.append(exc)
        return True

    files = wds.tariterators.tar_file_expander([{"url": "x", "stream": io.BytesIO(data)}], handler=handler,
                                               eof_value=None)
    groups = wds.tariterators.group_by_keys(files, handler=handler)
    return [{k: v for k, v in g.items() if k != "__url__"} for g in groups], errors


def _lean_groups(path, data: bytes) -> tuple[list[dict], tar_stream.ReadStats]:
    path.write_bytes(data)
    stats = tar_stream.ReadStats()
    return list(tar_stream._samples(str(path), stats)), stats


def test_lean_reader_matches_webdataset_at_every_cut(tmp_path):
    # Cut a real shard every 64 bytes: the lean reader yields exactly webdataset's samples (whole ones, and the
    # partial one in progress at the cut), and counts one unreadable_shard event for every cut before the end
    # of the end-of-archive marker, none after it (the zero padding of the last record may go).
    _, (shard,) = _pool(str(tmp_path), n=3, shard_size=3)
    data = storage.read_bytes(shard)
    marker_end = _member_offsets(data)[-1] + 2048 + 1024  # last member: pax header, its data, header, data
    assert data[marker_end - 1024 : marker_end] == bytes(1024) and len(data) > marker_end
    for cut in range(0, len(data) + 1, 64):
        expected, _ = _webdataset_groups(data[:cut])
        got, stats = _lean_groups(tmp_path / "cut.tar", data[:cut])
        assert got == expected, f"cut at {cut}"
        assert stats.counts == ({"unreadable_shard": 1} if cut < marker_end else {}), f"cut at {cut}: {stats.errors}"


def test_a_corrupt_header_mid_shard_is_counted_where_tarfile_ends_silently(tmp_path):
    _, (shard,) = _pool(str(tmp_path), n=4, shard_size=4)
    data = bytearray(storage.read_bytes(shard))
    data[_member_offsets(bytes(data))[4] + 10] ^= 0xFF  # a name byte in sample 2's first header
    got, stats = _lean_groups(tmp_path / "bad.tar", bytes(data))
    assert [g["__key__"] for g in got] == ["a-00000000", "a-00000001"]
    assert stats.counts == {"unreadable_shard": 1} and "bad checksum" in stats.errors[0]
    # tarfile takes a bad header after the first for the end of the archive: webdataset loses samples 2 and 3
    # without an error, and the end-of-archive padding is intact, so no tail check could notice.
    expected, errors = _webdataset_groups(bytes(data))
    assert expected == got and errors == []


def _tar(fmt: int, members: list[tuple[str, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            if payload is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif name.endswith(".lnk"):
                info.type, info.linkname = tarfile.SYMTYPE, "x" * (50 if fmt == tarfile.USTAR_FORMAT else 150)
                tar.addfile(info)
            else:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_lean_reader_reads_what_tar_writers_write_as_webdataset_does(tmp_path, fmt):
    deep = "d/" * 40 + "img-1"  # > 100 characters: pax path / GNU long name / ustar prefix + name
    members = [("d", None), (f"{deep}.PNG", b"\x89PNG one"), (f"{deep}.json", b'{"index": 1}'),
               ("__meta__", b"skipped"), ("k.lnk", b""), ("img-2.seg.png", b"\x89PNG two"), ("img-2.json", b"2"),
               ("empty.bin", b""), ("img-3.png", bytes(700)), ("img-3.json", b"3" * 513)]
    data = _tar(fmt, members)
    got, stats = _lean_groups(tmp_path / "s.tar", data)
    expected, errors = _webdataset_groups(data)
    assert got == expected and errors == [] and stats.errors == []
    assert [g["__key__"] for g in got] == [deep, "img-2", "empty", "img-3"] and got[0]["png"] == b"\x89PNG one"


def test_duplicate_suffix_and_trailing_garbage_are_counted(tmp_path):
    data = _tar(tarfile.PAX_FORMAT, [("a.png", b"\x89PNG 1"), ("a.png", b"\x89PNG 2"), ("a.json", b"{}")])
    got, stats = _lean_groups(tmp_path / "dup.tar", data)
    assert got == [{"__key__": "a", "png": b"\x89PNG 1", "json": b"{}"}]
    assert stats.counts == {"unreadable_shard": 1} and "duplicate file name" in stats.errors[0]
    got, stats = _lean_groups(tmp_path / "tail.tar", data[:-10] + b"not zeros!")
    assert stats.counts["unreadable_shard"] == 2 and "after the end-of-archive marker" in stats.errors[-1]
