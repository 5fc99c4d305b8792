"""Versioned task releases on storage: ``tasks/<task>/<version>/`` plus a ``latest`` pointer and a lock.

Layout under a root URL::

    tasks/<task>/<version>/...      everything one publish run wrote (manifest, payload, report)
    tasks/<task>/<version>/RELEASE.json   written last: the version is complete
    tasks/<task>/latest.json        {"version", "url", "payload_url", ...}; moved only after RELEASE.json exists
    tasks/<task>/.lease/            the publish lease of <task> (leases.py), held while a publish runs

The pointer is a small JSON object replaced atomically, so a reader sees the old or the new release,
never a mix. A failed run never reaches the pointer, so ``latest`` stays where it was.

A client follows a task by its release folder ``<root>/tasks/<task>`` or that folder's ``latest.json``
(``current_release``), wherever the folder was copied: the payload is read from the version folder beside the
pointer, not from the publisher's URL in it. Its students go under its own output folder, one per release
(``client_version_url``)::

    <out>/<task>/<version>/         student.pt, metrics.json (written last: the version is trained), exports
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

from plada_core.io import leases, storage
from plada_core.io.layout import STUDENT_REPORT_NAME, STUDENTS_DIR, payload_url

__all__ = [
    "LockHeld",
    "client_version_url",
    "current_release",
    "is_released",
    "latest_url",
    "next_version",
    "pointer_url",
    "promote",
    "read_latest",
    "read_release",
    "release_of",
    "release_url",
    "student_reports",
    "task_lock",
    "validate_name",
    "version_url",
    "write_release",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_TASKS = "tasks"  # the folder under a root URL that holds every task


class LockHeld(leases.LeaseHeld):
    """Another publish of the same task holds its lease; ``holder`` is the holder's record (owner, host, pid,
    since, expires)."""


def validate_name(kind: str, value: str) -> str:
    """Task names and versions become path segments: letters, digits, '.', '_' and '-' only."""
    if not isinstance(value, str) or not _NAME.match(value) or value in (".", ".."):
        raise ValueError(
            f"{kind} {value!r} is not a valid name: use 1-100 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return value


def _task_url(root: str, task: str) -> str:
    return storage.join(root, _TASKS, validate_name("task", task))


def release_of(url: str) -> tuple[str, str] | None:
    """(root, task) when ``url`` lies inside a release version ``<root>/tasks/<task>/<version>/``, else None."""
    head, sep, tail = url.rpartition(f"/{_TASKS}/")
    parts = tail.split("/")
    return (head, parts[0]) if sep and len(parts) >= 3 else None


def version_url(root: str, task: str, version: str) -> str:
    return storage.join(_task_url(root, task), validate_name("version", version))


def release_url(root: str, task: str, version: str) -> str:
    return storage.join(version_url(root, task, version), "RELEASE.json")


def latest_url(root: str, task: str) -> str:
    return storage.join(_task_url(root, task), "latest.json")


def is_released(root: str, task: str, version: str) -> bool:
    return storage.exists(release_url(root, task, version))


def next_version(root: str, task: str, base: str) -> str:
    """``base`` if that version is not released yet, else the first free ``base.2``, ``base.3``, ...: a second
    publish on one date (its inputs changed, or forced) gets a version of its own; released ones stay as they are."""
    validate_name("version", base)
    version, n = base, 1
    while is_released(root, task, version):
        n += 1
        version = f"{base}.{n}"
    return version


def read_release(root: str, task: str, version: str) -> dict:
    return storage.read_json(release_url(root, task, version))


def write_release(root: str, task: str, version: str, record: dict) -> str:
    """Mark the version complete; call only after every other file of the version is written."""
    return storage.write_json(release_url(root, task, version), {"task": task, "version": version, **record})


def read_latest(root: str, task: str) -> dict | None:
    url = latest_url(root, task)
    return storage.read_json(url) if storage.exists(url) else None


def promote(root: str, task: str, version: str) -> dict:
    """Point ``latest`` at a released version (atomic replace of latest.json)."""
    if not is_released(root, task, version):
        raise RuntimeError(f"version {version!r} of task {task!r} is not released (no RELEASE.json): not promoting it")
    record = {**read_release(root, task, version), "promoted_at": datetime.now(timezone.utc).isoformat()}
    storage.write_json(latest_url(root, task), record)
    return record


@contextmanager
def task_lock(
    root: str,
    task: str,
    owner: str,
    wait_s: float = 0.0,
    poll_s: float = 1.0,
    ttl_s: float = leases.DEFAULT_TTL_S,
) -> Iterator[leases.Lease]:
    """Hold the publish lease of ``task`` (``tasks/<task>/.lease/``, see leases.py) for the block: it expires
    ``ttl_s`` after its last renewal, is renewed in the background while the block runs and released after it,
    and a holder that died is taken over once its lease expires. Waits up to ``wait_s`` for a live holder, then
    raises LockHeld; a block whose lease was taken over while it ran ends with ``leases.LeaseLost``."""
    url = storage.join(_task_url(root, task), ".lease")
    try:
        lease = leases.acquire(url, owner, ttl_s=ttl_s, wait_s=wait_s, poll_s=poll_s)
    except leases.LeaseHeld as exc:
        raise LockHeld(f"another publish of task {task!r} is running: {exc}", exc.holder) from None
    with lease.kept():
        yield lease


def pointer_url(release: str) -> str:
    """The ``latest.json`` of a task release folder ``<root>/tasks/<task>`` given as the folder or the file."""
    release = storage.to_url(release).rstrip("/")
    return release if release.endswith("/latest.json") else storage.join(release, "latest.json")


def current_release(release: str) -> dict:
    """The version ``latest.json`` points at, for the release folder or pointer ``release`` (``pointer_url``):
    ``task``, ``version``, ``url`` (the version folder beside the pointer), ``payload_url`` (in that folder),
    ``latest_url`` and ``record`` (the pointer's JSON). A missing pointer is a ``FileNotFoundError`` that says
    which URL was tried and what to pass instead."""
    pointer = pointer_url(release)
    if not storage.exists(pointer):
        raise FileNotFoundError(
            f"no release at {release}: {pointer} does not exist. Pass a task's release folder ROOT/tasks/<task> "
            "(or its latest.json) where a publish-task run has released a version"
        )
    record = storage.read_json(pointer)
    if not isinstance(record, dict) or "version" not in record:
        raise ValueError(f"{pointer} is not a release pointer (no 'version'): it must be written by publish-task")
    folder = pointer.rsplit("/", 1)[0]
    task = validate_name("task", str(record.get("task") or folder.rsplit("/", 1)[-1]))
    version = validate_name("version", str(record["version"]))
    url = storage.join(folder, version)
    return {"task": task, "version": version, "url": url, "payload_url": payload_url(url),
            "latest_url": pointer, "record": record}


def client_version_url(out: str, task: str, version: str) -> str:
    """Where a client trains release ``version`` of ``task``: ``<out>/<task>/<version>``."""
    return storage.join(out, validate_name("task", task), validate_name("version", version))


def student_reports(root: str, task: str, student_tag: str) -> list[dict]:
    """Every ``student_report.json`` of ``student_tag`` across the task's versions, with ``version`` added."""
    fs, path = storage.get_fs(_task_url(root, task))
    pattern = f"{path}/*/{STUDENTS_DIR}/{student_tag}/{STUDENT_REPORT_NAME}"
    out = []
    for found in sorted(fs.glob(pattern)):
        version = found[len(path) + 1 :].split("/", 1)[0]
        with fs.open(found, "rb") as f:
            out.append({**json.loads(f.read()), "version": version})
    return out
