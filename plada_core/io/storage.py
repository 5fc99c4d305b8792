"""URLs and fsspec: the one place PLADA opens storage.

Every path in PLADA is a URL (``file://``, ``s3://``, ``memory://`` …); a bare path means a local file.
Writes are atomic: bytes go to a temporary sibling first and are moved into place only when complete,
so a reader (or a resumed run) never sees a half-written object.
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from typing import IO, Any, Iterator

import fsspec

__all__ = [
    "atomic_open",
    "exists",
    "get_fs",
    "join",
    "read_bytes",
    "read_json",
    "remove",
    "to_url",
    "write_bytes",
    "write_json",
]


def to_url(path_or_url: str) -> str:
    """Return a URL; a plain path becomes an absolute ``file://`` URL."""
    if "://" in path_or_url:
        return path_or_url
    return "file://" + os.path.abspath(os.path.expanduser(path_or_url))


def get_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Filesystem and protocol-less path for ``url``; credentials come from the environment, never from the URL."""
    fs, path = fsspec.core.url_to_fs(to_url(url))
    return fs, path


def join(url: str, *parts: str) -> str:
    """Join URL path segments with '/' whatever the protocol."""
    out = to_url(url).rstrip("/")
    for part in parts:
        out += "/" + part.strip("/")
    return out


def exists(url: str) -> bool:
    fs, path = get_fs(url)
    return fs.exists(path)


def read_bytes(url: str) -> bytes:
    fs, path = get_fs(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"{url} does not exist")
    with fs.open(path, "rb") as f:
        return f.read()


def read_json(url: str) -> Any:
    return json.loads(read_bytes(url))


@contextmanager
def atomic_open(url: str) -> Iterator[IO[bytes]]:
    """Open ``url`` for binary writing; the object appears at ``url`` only if the block completes.

    Local files: write to ``<url>.tmp-<uuid>`` and ``os.replace`` (atomic on POSIX). Object stores: a
    single PUT is already all-or-nothing, but s3fs uploads large files in parts, so we stage under a
    temporary key and ``mv`` it (copy + delete on S3), which keeps the final key absent until complete.
    """
    fs, path = get_fs(url)
    parent = path.rsplit("/", 1)[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
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
    with atomic_open(url) as f:
        f.write(data)
    return to_url(url)


def write_json(url: str, obj: Any) -> str:
    return write_bytes(url, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def remove(url: str) -> None:
    fs, path = get_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)
