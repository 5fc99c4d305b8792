"""URLs and fsspec: the one place PLADA opens storage.

Every path in PLADA is a URL (``file://``, ``s3://``, ``memory://`` …); a bare path means a local file.
Writes are atomic: a reader (or a resumed run) never sees a half-written object.

Credentials and endpoints come from the environment, never from URLs, so URLs can be logged and stored in
manifests and reports as they are. For S3 (s3fs → botocore) that means ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` and, for MinIO / moto / other S3-compatible stores,
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (read when a client is created, so set them before the first
S3 call of a process). fsspec's own configuration (``~/.config/fsspec/*.json``, ``FSSPEC_S3_*`` variables set
before Python starts) applies as well. A URL with ``user:password@`` in it is refused.

Transient errors (dropped connections, timeouts, 5xx) are retried in three layers: botocore retries each S3
request (``S3_RETRIES``, set here once for every S3 client PLADA opens), s3fs retries each call (5 times, for
throttling and dropped connections), and ``retries.retrying`` retries the whole operation with exponential backoff
(``PLADA_STORAGE_RETRIES``, any store); missing objects and denied access fail at once. Under throttling that
does not let up, one S3 write thus gives up after 4 x 5 x 3 = 60 requests and about 45 s, with
``TransientStorageError`` naming the URL; botocore's default ("legacy", 5 attempts) made that 100 requests and
168 s (measured through ``tests/integration/fault_proxy.py``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, TypeVar

import fsspec

from plada_core.io.retries import TransientStorageError, is_transient, retrying

__all__ = [
    "TransientStorageError",
    "atomic_open",
    "create_new",
    "exists",
    "get_fs",
    "is_transient",
    "join",
    "list_names",
    "open_read",
    "read_bytes",
    "read_json",
    "remove",
    "to_url",
    "write_bytes",
    "write_json",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Object stores have no directories: "makedirs" on them can at most create a bucket, which a typo must never do.
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}
# s3fs can stage an upload invisibly (multipart, ``autocommit=False``) and publish it with one commit call.
_STAGED_UPLOADS = {"s3", "s3a"}
_S3 = {"s3", "s3a"}
# botocore's per-request retries: "standard" mode backs off exponentially with full jitter (capped at 20 s),
# retries throttling (503 SlowDown), 500/502/503/504 and dropped connections, and stops retrying when a client's
# retry quota runs out (most of its requests failing), which the default "legacy" mode never does. Operators
# override it with AWS_RETRY_MODE / AWS_MAX_ATTEMPTS or fsspec's s3 ``config_kwargs`` (those win).
S3_RETRIES = {"mode": "standard", "total_max_attempts": 3}
_CREDENTIALS_IN_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/@]*:[^/@]*@")
def to_url(path_or_url: str) -> str:
    """Return a URL; a plain path becomes an absolute ``file://`` URL."""
    if "://" in path_or_url:
        return path_or_url
    return "file://" + os.path.abspath(os.path.expanduser(path_or_url))


def _redact(url: str) -> str:
    return re.sub(r"://[^/@]*@", "://***@", url, count=1)


def _check_no_credentials(url: str) -> None:
    if _CREDENTIALS_IN_URL.match(url):
        raise ValueError(
            f"{_redact(url)}: the URL embeds credentials (user:password@), which would end up in logs and "
            "manifests. Remove them and set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or fsspec config) instead."
        )


def get_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Filesystem and protocol-less path for ``url``; credentials come from the environment, never from the URL.

    fsspec caches one filesystem per process (and re-creates it after a fork), so calling this per operation
    is cheap and fork-safe; never keep the result across a fork. The listings cache is off: another process
    (a worker, a resumed run) may add or delete objects at any time, and a stale listing made ``exists`` lie.
    """
    url = to_url(url)
    _check_no_credentials(url)
    options = _s3_options() if fsspec.utils.get_protocol(url) in _S3 else {}
    fs, path = fsspec.core.url_to_fs(url, use_listings_cache=False, **options)
    return fs, path


def _s3_options() -> dict:
    """s3fs options carrying ``S3_RETRIES`` under what the operator set: fsspec's s3 ``config_kwargs``
    (``FSSPEC_S3_CONFIG_KWARGS``, ``~/.config/fsspec/s3.json``) and ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS`` win."""
    config = dict(fsspec.config.conf.get("s3", {}).get("config_kwargs") or {})
    retries = dict(config.get("retries") or {})
    if "AWS_RETRY_MODE" not in os.environ:
        retries.setdefault("mode", S3_RETRIES["mode"])
    if "AWS_MAX_ATTEMPTS" not in os.environ and "max_attempts" not in retries:
        retries.setdefault("total_max_attempts", S3_RETRIES["total_max_attempts"])
    return {"config_kwargs": {**config, "retries": retries}}


def join(url: str, *parts: str) -> str:
    """Join URL path segments with '/' whatever the protocol."""
    out = to_url(url).rstrip("/")
    for part in parts:
        out += "/" + part.strip("/")
    return out


def exists(url: str) -> bool:
    fs, path = get_fs(url)
    return retrying("checking", url, lambda: fs.exists(path))


def read_bytes(url: str, start: int | None = None, end: int | None = None) -> bytes:
    """The whole object, or bytes ``start`` up to ``end`` of it (one ranged GET on S3; fewer only where the object
    is shorter); ``FileNotFoundError`` naming ``url`` when it is absent."""
    fs, path = get_fs(url)

    def read() -> bytes:
        try:
            return fs.cat_file(path, start=start, end=end)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{url} does not exist") from exc

    return retrying("reading", url, read)


def open_read(url: str, block_size: int | None = None) -> IO[bytes]:
    """A binary file object for streaming reads; the caller closes it. Only opening is retried here:
    s3fs retries each ranged read itself, and a stream cannot be resumed from our side."""
    fs, path = get_fs(url)
    kwargs = {} if block_size is None else {"block_size": block_size}
    return retrying("opening", url, lambda: fs.open(path, "rb", **kwargs))


def read_json(url: str) -> Any:
    return json.loads(read_bytes(url))


@contextmanager
def atomic_open(url: str) -> Iterator[IO[bytes]]:
    """Open ``url`` for binary writing; the object appears at ``url`` only if the block completes.

    S3: the bytes go to a multipart upload that stays invisible until it is completed (the commit) and is
    aborted if the block raises, so there is no copy and no stray temporary key. Elsewhere: write to the
    temporary sibling ``<url>.tmp-<uuid>`` and ``mv`` it into place (``os.replace`` on local disk, atomic on
    POSIX). A killed process can leave a ``.tmp-`` file (local) or an incomplete multipart upload (S3, removed
    by a bucket lifecycle rule); neither is ever read as the object.
    """
    fs, path = get_fs(url)
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & _STAGED_UPLOADS:
        with _staged_upload(fs, path, url) as f:
            yield f
        return
    parent = path.rsplit("/", 1)[0]
    if parent and not protocols & _OBJECT_STORES:
        fs.makedirs(parent, exist_ok=True)
    with _temp_then_move(fs, path) as f:
        yield f


@contextmanager
def _staged_upload(fs: fsspec.AbstractFileSystem, path: str, url: str) -> Iterator[IO[bytes]]:
    # fs._open, not fs.open: with autocommit=False, fs.open also files the handle in fs.transaction, a list
    # that lives as long as the cached filesystem and would keep every handle we ever wrote.
    f = fs._open(path, "wb", autocommit=False)
    try:
        yield f
    except BaseException:
        _abort(f, url)
        raise
    try:
        f.close()  # uploads the last (for small objects: the only) part; the key is still absent
        f.commit()  # CompleteMultipartUpload: the object appears whole
    except FileNotFoundError as exc:  # only a missing bucket: the key itself is being created
        _abort(f, url)
        raise FileNotFoundError(
            f"cannot write {url}: {exc}. Create the bucket first (infra/README.md shows how for MinIO)."
        ) from exc
    except BaseException:
        _abort(f, url)
        raise


def _abort(f: Any, url: str) -> None:
    """Drop a staged upload; a failure to do so must not hide the error that made us abort."""
    try:
        f.discard()  # AbortMultipartUpload, if one was started
    except Exception as exc:  # noqa: BLE001 - the upload stays invisible; lifecycle rules reclaim it
        log.warning("could not abort the upload to %s (%s: %s); it stays invisible", url, type(exc).__name__, exc)
    f.closed = True  # else the handle's __del__ would flush, i.e. start uploading again


@contextmanager
def _temp_then_move(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[IO[bytes]]:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        with fs.open(tmp, "wb") as f:
            yield f
        fs.mv(tmp, path)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise


def write_bytes(url: str, data: bytes) -> str:
    """Write ``data`` atomically; retried on transient errors (rewriting the same bytes is harmless).

    On S3 the bytes go up in one ``PutObject`` (s3fs switches to a multipart upload, completed last, above
    100 MB): S3 never shows a partial object from either, and one request instead of the three of a staged
    upload (create, part, complete): a scores file's write took ~4 ms instead of ~13 ms against moto."""
    fs, path = get_fs(url)
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)

    def put() -> None:
        try:
            fs.pipe_file(path, data)
        except FileNotFoundError as exc:  # only a missing bucket: the key itself is being created
            raise FileNotFoundError(
                f"cannot write {url}: {exc}. Create the bucket first (infra/README.md shows how for MinIO)."
            ) from exc

    def write() -> None:
        if protocols & _STAGED_UPLOADS:
            put()
            return
        with atomic_open(url) as f:
            f.write(data)

    retrying("writing", url, write)
    return to_url(url)


def write_json(url: str, obj: Any) -> str:
    return write_bytes(url, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def remove(url: str) -> None:
    """Delete ``url`` (a file, or a folder / prefix with everything under it); absent is fine."""
    fs, path = get_fs(url)

    def rm() -> None:
        if fs.exists(path):
            fs.rm(path, recursive=True)

    retrying("removing", url, rm)


# memory:// lives in this process, so a process-wide lock makes its check-then-put atomic.
_MEMORY_CREATE = threading.Lock()


def create_new(url: str, data: bytes) -> bool:
    """Write ``data`` at ``url`` only if nothing is there: True if this call created it, False if it existed.

    Atomic against any number of writers, and readers never see a partial object: local files are written to a
    temporary sibling and hard-linked into place (``link`` refuses an existing name, as ``O_EXCL`` does); S3 is one
    ``PutObject`` with ``If-None-Match: *`` (AWS S3, MinIO; moto checks and stores in two steps, see leases.py);
    ``memory://`` holds a process lock. Retried on transient errors, so False can also mean that an earlier
    attempt of this very call got through before its answer was lost: a caller that must know reads ``url`` back
    and compares. Other stores raise NotImplementedError rather than fall back to a racy check-then-put.
    """
    fs, path = get_fs(url)
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & _STAGED_UPLOADS:
        create = _create_new_s3
    elif "file" in protocols:
        create = _create_new_local
    elif "memory" in protocols:
        create = _create_new_memory
    else:
        raise NotImplementedError(
            f"cannot create {url} only-if-absent: PLADA knows no atomic conditional write for "
            f"{sorted(protocols)}. Use a file://, s3:// (AWS S3, MinIO) or memory:// URL for this root."
        )
    return retrying("creating", url, lambda: create(fs, path, url, data))


def _create_new_local(fs: fsspec.AbstractFileSystem, path: str, url: str, data: bytes) -> bool:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _create_new_memory(fs: fsspec.AbstractFileSystem, path: str, url: str, data: bytes) -> bool:
    with _MEMORY_CREATE:
        if fs.exists(path):
            return False
        fs.pipe_file(path, data)
        return True


def _create_new_s3(fs: Any, path: str, url: str, data: bytes) -> bool:
    bucket, key, _ = fs.split_path(path)
    try:
        fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        return True
    except FileExistsError:  # 412 PreconditionFailed on If-None-Match, as s3fs translates it
        return False
    except FileNotFoundError as exc:  # only a missing bucket: the key itself is being created
        raise FileNotFoundError(
            f"cannot write {url}: {exc}. Create the bucket first (infra/README.md shows how for MinIO)."
        ) from exc
    except OSError as exc:
        cause = getattr(exc.__cause__, "response", None) or {}
        if cause.get("Error", {}).get("Code") == "PreconditionFailed":  # 412 without the condition named
            return False
        raise  # 409 ConditionalRequestConflict (a concurrent write of the key) and 5xx: retrying tries again


def list_names(url: str) -> list[str]:
    """The names of the files directly inside folder (or prefix) ``url``, sorted; [] when there are none."""
    fs, path = get_fs(url)
    base = path.rstrip("/")

    def ls() -> list[str]:
        try:
            found = fs.ls(base, detail=False)
        except FileNotFoundError:
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in found if p.rstrip("/") != base)

    return retrying("listing", url, ls)
