"""Leases: a lock that expires, is renewed while its holder lives, and is taken over once it has expired.

A lease makes one piece of work exclusive across threads, processes and hosts (in PLADA: one publish per task,
``releases.task_lock``) and survives its holder: a holder killed with SIGKILL stops renewing, and the next
contender takes the lease over after ``ttl_s``, with a warning that names the previous holder.

The lease is a folder of records ``<url>/<generation>.json`` (12 digits), each a small JSON object: ``owner``,
``host``, ``pid``, ``since``, ``token`` (one random id per holding), ``expires_at`` (seconds since the epoch) and
``released``. The newest record is the lease's state: free (no record, or released), held until ``expires_at``,
or expired.

Protocol. Every change is the creation of the next generation's record with an atomic create-if-absent
(``storage.create_new``). Records are never overwritten and the newest is never deleted, so a generation number
is never reused:

- acquire: read the newest record, generation g. Free or expired: create g+1 with a new token (taking over an
  expired lease is this same step, logged). Held: poll until ``wait_s`` is spent, then raise ``LeaseHeld``.
- renew (a background thread while the block runs, every ``ttl_s / 3``): create g+1 with a later expiry and the
  same token. Renewing late is harmless: it races a taker-over for g+1 like anyone else.
- release: create g+1 marked released, so the next acquirer needs no takeover. Its read-back may already find
  that acquirer's g+2 (on S3 it can land within the settle): the release still counts, unless the newer record
  took this holding over (``took_over_from`` names it).

Whoever read g and tries g+1 (acquirers, takers-over, a late renewal) is decided by the store: exactly one
creation succeeds. A holder that fails to create its next generation has been taken over: it flags the lease
lost (``LeaseLost`` when its block ends, or from ``Lease.check()``) and never writes or deletes again, so it
cannot disturb the new holder. A creation counts only after a read-back: the newest record must be the one just
written, with this holder's token. That read-back covers a retried request whose first attempt got through (the
store answers "exists"), a straggler that re-creates a generation long since collected (it sees a newer one and
loses), and stores whose conditional write is not atomic (below). After each win the winner deletes the records
below its generation; that is housekeeping, never needed for correctness.

Stores (``storage.create_new``):

- local files: the record is written beside its name and hard-linked into place; ``link`` fails on an existing
  name, the ``O_EXCL`` guarantee, and a reader never sees half a record. Needs hard links (local disks, NFS).
- S3: ``PutObject`` with ``If-None-Match: *``, enforced atomically by AWS S3 and MinIO. moto 5.2.5 honours the
  header but checks and stores in two steps of one request, with no lock between: 16 threads racing for one key,
  200 rounds, gave two winners in 6 rounds when Python switched threads every microsecond (none at the default
  5 ms). So on S3 the read-back waits ``SETTLE_S`` first: a racing write that passed the same check lands within
  that time, overwrites, and the earlier writer reads the other token and loses. A straggler slower than that
  is caught at the next renewal, where only one of the two can create the next generation.
- ``memory://`` (tests, one process): a process lock. Anything else: ``NotImplementedError``.

Limits. Expiry compares the wall clocks of different hosts: keep ``ttl_s`` far above their skew. There is no
fencing token on the guarded writes: a holder frozen past its expiry (SIGSTOP, a suspended VM) and taken over
keeps running until its next renewal fails, at most ``ttl_s / 3`` after it wakes; the work it guards must be
idempotent atomic writes, as PLADA's are. Deleting the lease folder by hand while a holder runs breaks the
generation count: do it only when no holder is alive (never needed otherwise).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from plada_core.io import storage

__all__ = ["DEFAULT_TTL_S", "SETTLE_S", "Lease", "LeaseHeld", "LeaseLost", "acquire", "current", "describe", "hold"]

log = logging.getLogger(__name__)

# Five minutes: a crashed holder blocks its successor at most this long, while a live one renews twice before
# expiry even when every request of a renewal waits out storage's retries.
DEFAULT_TTL_S = 300.0
# Read-back delay after a conditional write, per URL scheme; only where the check-then-store may not be atomic.
SETTLE_S = {"s3": 0.25, "s3a": 0.25}

_RECORD = re.compile(r"^(\d{12})\.json(\.tmp-.*)?$")  # with .tmp-: a local write cut short, collected like a record


class LeaseHeld(RuntimeError):
    """The lease is held by someone else and did not come free within ``wait_s``; ``holder`` is their record."""

    def __init__(self, message: str, holder: dict) -> None:
        super().__init__(message)
        self.holder = holder

    def __reduce__(self):  # an orchestrator may pickle the error (a failed run's state): keep the holder
        return type(self), (str(self), self.holder)


class LeaseLost(RuntimeError):
    """The lease was taken over while its block ran: the block was not exclusive for all of its time."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def describe(record: dict) -> str:
    """Who holds (held) a lease, for messages: owner, host, pid, since."""
    return (
        f"owner {record.get('owner')!r} (host {record.get('host')}, pid {record.get('pid')}, "
        f"since {record.get('since')})"
    )


def _record_url(url: str, generation: int) -> str:
    return storage.join(url, f"{generation:012d}.json")


def _generations(url: str) -> list[int]:
    """Generations with a complete record, newest first."""
    names = (_RECORD.match(name) for name in storage.list_names(url))
    return sorted((int(m.group(1)) for m in names if m and not m.group(2)), reverse=True)


def current(url: str) -> dict | None:
    """The lease's newest record (with ``generation``), or None when it has none; says nothing about expiry."""
    for _ in range(20):
        generations = _generations(url)
        if not generations:
            return None
        record_url = _record_url(url, generations[0])
        try:
            raw = storage.read_bytes(record_url)
        except FileNotFoundError:
            continue  # collected after the listing, so a newer record exists: list again
        try:
            record = json.loads(raw)
            float(record["expires_at"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(
                f"{record_url} is not a lease record (JSON with expires_at). Something other than "
                f"plada_core.io.leases wrote it: delete {url} while no holder runs"
            ) from None
        return {**record, "generation": generations[0]}
    raise RuntimeError(f"lease {url} changed under every one of 20 reads: is something deleting its records?")


def _is_free(record: dict | None, now: float) -> bool:
    return record is None or bool(record.get("released")) or float(record["expires_at"]) <= now


def _followed_our_release(newest: dict | None, record: dict) -> bool:
    """Whether ``newest``, a generation above our release ``record``, is a holder that came after that release
    (it acquired a free lease, or renewed or released such a holding) rather than one that took our holding over."""
    if newest is None or newest["generation"] <= record["generation"]:
        return False
    taken = newest.get("took_over_from") or {}
    return (taken.get("owner"), taken.get("since")) != (record.get("owner"), record.get("since"))


def _advance(url: str, record: dict) -> tuple[bool, dict | None]:
    """Create generation ``record['generation']``; (won, newest record after the read-back)."""
    generation, token = record["generation"], record["token"]
    created = storage.create_new(_record_url(url, generation), json.dumps(record, sort_keys=True).encode())
    settle = SETTLE_S.get(storage.to_url(url).split("://", 1)[0], 0.0)
    if created and settle:
        time.sleep(settle)  # let a racing write that passed the same check land before reading back
    newest = current(url)
    if created and record.get("released") and _followed_our_release(newest, record):
        # the next acquirer saw our release and took the free lease inside the settle: the release counts, and
        # the records below the newest are its to collect
        return True, newest
    won = newest is not None and newest["generation"] == generation and newest.get("token") == token
    if won and not created and settle:  # an earlier attempt of ours got through: settle as if just created
        time.sleep(settle)
        newest = current(url)
        won = newest is not None and newest["generation"] == generation and newest.get("token") == token
    if won:
        _collect(url, generation)
    return won, newest


def _collect(url: str, below: int) -> None:
    """Delete records (and cut-short local writes) older than ``below``; failures only leave garbage behind."""
    for name in storage.list_names(url):
        m = _RECORD.match(name)
        if m and int(m.group(1)) < below:
            try:
                storage.remove(storage.join(url, name))
            except Exception as exc:  # noqa: BLE001 - garbage stays; the next winner tries again
                log.debug("could not delete old lease record %s/%s: %s", url, name, exc)


class Lease:
    """A held lease: ``renew()``, ``release()``, ``check()``; ``kept()`` renews in the background for a block."""

    def __init__(self, url: str, ttl_s: float, record: dict) -> None:
        self.url, self.ttl_s, self.record = url, ttl_s, record
        self.lost = threading.Event()
        self._lost_reason = ""
        self._released = False
        self._lock = threading.Lock()  # the renewal thread and release() never advance at once

    @property
    def owner(self) -> str:
        return self.record["owner"]

    @property
    def generation(self) -> int:
        return self.record["generation"]

    def check(self) -> None:
        """Raise LeaseLost if the lease was taken over; call before a step that must be exclusive."""
        if self.lost.is_set():
            raise LeaseLost(self._lost_reason)

    def _lose(self, newest: dict | None) -> None:
        by = describe(newest) if newest else "nobody (its records are gone)"
        self._lost_reason = (
            f"lease {self.url} of {self.owner!r} was taken over by {by}: its holder did not renew it before "
            f"{_iso(self.record['expires_at'])} (frozen, cut off from storage, or its clock is off). Work done "
            "since then was not exclusive; re-run it once the new holder is done."
        )
        self.lost.set()
        log.error("%s", self._lost_reason)

    def renew(self) -> bool:
        """Push the expiry ``ttl_s`` ahead; False (and ``lost`` set) when taken over, False once released."""
        with self._lock:
            if self.lost.is_set() or self._released:
                return False
            now = time.time()
            record = {
                **self.record,
                "generation": self.generation + 1,
                "renewed_at": _iso(now),
                "expires_at": now + self.ttl_s,
                "expires": _iso(now + self.ttl_s),
            }
            won, newest = _advance(self.url, record)
            if not won:
                self._lose(newest)
                return False
            self.record = record
            return True

    def release(self) -> None:
        """Mark the lease free for the next acquirer; does nothing when it was lost (it is someone else's)."""
        with self._lock:
            if self.lost.is_set() or self._released:
                return
            self._released = True
            now = time.time()
            record = {**self.record, "generation": self.generation + 1, "released": True, "released_at": _iso(now)}
            won, newest = _advance(self.url, record)
            if not won:
                self._lose(newest)

    def _keep_renewing(self, stop: threading.Event) -> None:
        every = self.ttl_s / 3
        wait = every
        while not stop.wait(wait):
            try:
                if not self.renew():
                    return
                wait = every
            except Exception as exc:  # noqa: BLE001 - storage trouble: keep trying, late renewal is still safe
                left = float(self.record["expires_at"]) - time.time()
                wait = max(0.1, min(every, left / 3))
                log.warning(
                    "could not renew lease %s (%s: %s); it expires in %.1f s; retrying in %.1f s",
                    self.url,
                    type(exc).__name__,
                    exc,
                    left,
                    wait,
                )

    @contextmanager
    def kept(self) -> Iterator[Lease]:
        """Renew in the background while the block runs, release after it. A block that completes after its
        lease was taken over raises LeaseLost (a block that raised keeps its own exception)."""
        stop = threading.Event()
        renewer = threading.Thread(target=self._keep_renewing, args=(stop,), name="lease-renewal", daemon=True)
        renewer.start()
        try:
            yield self
        finally:
            stop.set()
            renewer.join(timeout=self.ttl_s)
            try:
                self.release()
            except Exception as exc:  # noqa: BLE001 - never hide the block's own error; the lease expires anyway
                log.warning(
                    "could not release lease %s (%s: %s); it expires by itself at %s",
                    self.url,
                    type(exc).__name__,
                    exc,
                    self.record.get("expires"),
                )
        self.check()


def acquire(url: str, owner: str, ttl_s: float = DEFAULT_TTL_S, wait_s: float = 0.0, poll_s: float = 1.0) -> Lease:
    """Take the lease at folder ``url`` for ``owner`` (a label for people: a run id, a name); wait up to ``wait_s``
    for a holder to release or expire, polling every ``poll_s``, then raise LeaseHeld. Nothing renews the
    returned lease: use ``hold`` or ``Lease.kept`` for that."""
    if not ttl_s > 0:
        raise ValueError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
    token, host, pid = uuid.uuid4().hex, socket.gethostname(), os.getpid()
    deadline = time.monotonic() + wait_s
    while True:
        newest, now = current(url), time.time()
        if _is_free(newest, now):
            record = {
                "owner": owner,
                "host": host,
                "pid": pid,
                "since": _iso(now),
                "renewed_at": _iso(now),
                "token": token,
                "ttl_s": ttl_s,
                "expires_at": now + ttl_s,
                "expires": _iso(now + ttl_s),
                "generation": newest["generation"] + 1 if newest else 1,
            }
            expired = newest is not None and not newest.get("released")
            if expired:
                record["took_over_from"] = {k: newest.get(k) for k in ("owner", "host", "pid", "since", "expires")}
            won, _ = _advance(url, record)
            if won:
                if expired:
                    log.warning(
                        "lease %s: took over from %s, which expired at %s (%.1f s before); new holder %r",
                        url,
                        describe(newest),
                        newest.get("expires"),
                        now - float(newest["expires_at"]),
                        owner,
                    )
                return Lease(url, ttl_s, record)
            continue  # another contender created that generation first: look again
        left = deadline - time.monotonic()
        if left <= 0:
            raise LeaseHeld(
                f"lease {url} is held by {describe(newest)} until {newest.get('expires')} "
                f"({float(newest['expires_at']) - now:.0f} s from now unless renewed). Wait longer for it to "
                "finish; if that holder is gone, the lease is taken over by itself once it expires: nothing to "
                "delete by hand.",
                newest,
            )
        time.sleep(min(poll_s, left))


@contextmanager
def hold(
    url: str, owner: str, ttl_s: float = DEFAULT_TTL_S, wait_s: float = 0.0, poll_s: float = 1.0
) -> Iterator[Lease]:
    """``acquire`` the lease, renew it while the block runs, release it after (``Lease.kept``)."""
    with acquire(url, owner, ttl_s=ttl_s, wait_s=wait_s, poll_s=poll_s).kept() as lease:
        yield lease
