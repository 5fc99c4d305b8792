"""Transient storage errors are retried with backoff; missing objects are not; a lasting outage is a clear error.

Two real failure sources, no patched PLADA code: an fsspec filesystem that drops its first connections
(deterministic counts), and moto's S3 server stopped for a second while PLADA reads from it.
"""

import logging
import time

import fsspec
import pytest
from fake_pool import FakeSource
from fsspec.implementations.memory import MemoryFileSystem

from plada_core.io import pool, storage, tar_stream


class FlakyMemoryFileSystem(MemoryFileSystem):
    """``flakymem://``: memory storage whose first ``failures`` reads fail like a reset connection."""

    protocol = "flakymem"
    failures = 0
    attempts = 0

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("flakymem://"))

    def _attempt(self) -> None:
        cls = type(self)
        cls.attempts += 1
        if cls.attempts <= cls.failures:
            raise ConnectionResetError(f"connection reset by peer (injected failure {cls.attempts} of {cls.failures})")

    def cat_file(self, path, start=None, end=None, **kwargs):
        self._attempt()
        return super().cat_file(path, start=start, end=end, **kwargs)

    def _open(self, path, mode="rb", **kwargs):
        if "r" in mode:
            self._attempt()
        return super()._open(path, mode, **kwargs)


@pytest.fixture
def flaky(monkeypatch):
    fsspec.register_implementation("flakymem", FlakyMemoryFileSystem, clobber=True)
    monkeypatch.setattr(FlakyMemoryFileSystem, "attempts", 0)
    monkeypatch.setattr(FlakyMemoryFileSystem, "failures", 0)
    yield FlakyMemoryFileSystem
    FlakyMemoryFileSystem.store.clear()


def test_transient_read_errors_are_retried_with_backoff(flaky, caplog):
    storage.write_bytes("flakymem://run/a.bin", b"payload")
    flaky.failures, flaky.attempts = 2, 0
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="plada_core.io.storage"):
        assert storage.read_bytes("flakymem://run/a.bin") == b"payload"
    assert flaky.attempts == 3 and time.monotonic() - start >= 0.75 * (0.5 + 1.0)
    retries = [r.getMessage() for r in caplog.records]
    assert len(retries) == 2
    assert all(m.startswith("reading flakymem://run/a.bin: ConnectionResetError") for m in retries)


def test_a_lasting_outage_is_a_transient_storage_error_naming_the_url(flaky, monkeypatch):
    monkeypatch.setenv("PLADA_STORAGE_RETRIES", "1")
    storage.write_bytes("flakymem://run/a.bin", b"payload")
    flaky.failures, flaky.attempts = 5, 0
    with pytest.raises(storage.TransientStorageError, match="reading flakymem://run/a.bin failed 2 time") as info:
        storage.read_bytes("flakymem://run/a.bin")
    assert isinstance(info.value, OSError) and "PLADA_STORAGE_RETRIES" in str(info.value) and flaky.attempts == 2


def test_missing_objects_are_not_retried(flaky):
    flaky.failures, flaky.attempts = 0, 0
    with pytest.raises(FileNotFoundError, match="does not exist"):
        storage.read_bytes("flakymem://run/nothing.bin")
    assert flaky.attempts == 1


def test_shard_open_is_retried_and_the_shard_read_whole(flaky):
    pool.build_reference([FakeSource("a", 6)], "flakymem://pool", shard_size=3, progress=False)
    flaky.failures, flaky.attempts = 2, 0
    stats = tar_stream.ReadStats()
    got = [i for url in pool.shard_urls("flakymem://pool") for i, _ in tar_stream.iter_shard(url, stats)]
    assert got == list(range(6)) and stats.errors == []


def test_a_shard_that_stays_unreachable_is_counted_as_transient(flaky, monkeypatch):
    pool.build_reference([FakeSource("a", 3)], "flakymem://pool", shard_size=3, progress=False)
    (shard,) = pool.shard_urls("flakymem://pool")
    monkeypatch.setenv("PLADA_STORAGE_RETRIES", "0")
    flaky.failures, flaky.attempts = 1, 0
    stats = tar_stream.ReadStats()
    assert list(tar_stream.iter_shard(shard, stats)) == []
    assert stats.counts == {"transient": 1} and stats.transient and "TransientStorageError" in stats.errors[0]


@pytest.fixture
def s3_client_retries_off(s3_server, monkeypatch):
    """botocore's own retries off (it reads AWS_MAX_ATTEMPTS when a client is made), so PLADA's are what count."""
    import s3fs

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()  # the next test gets a client with the default retries again


def test_reads_survive_a_brief_s3_outage(s3_root, s3_server, s3_client_retries_off, caplog):
    url = storage.join(s3_root, "p")
    pool.build_reference([FakeSource("a", 8)], url, shard_size=4, progress=False)
    shard = pool.shard_urls(url)[1]
    expected, start = storage.read_bytes(shard), time.monotonic()
    with caplog.at_level(logging.WARNING, logger="plada_core.io.storage"):
        with s3_server.outage(1.0):
            assert storage.read_bytes(shard) == expected
        assert time.monotonic() - start >= 1.0, "the read really waited out the outage"
        stats = tar_stream.ReadStats()
        with s3_server.outage(1.0):
            got = [i for i, _ in tar_stream.iter_shard(shard, stats)]
    assert got == [4, 5, 6, 7] and stats.errors == []
    retried = {r.getMessage().split(": ")[0] for r in caplog.records}
    assert retried == {f"reading {shard}", f"opening {shard}"}, "PLADA's backoff bridged both outages"
