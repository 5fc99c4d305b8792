"""Leases (plada_core/io/leases.py) on local files and on moto's S3 server: races, crashes, renewal, takeover.

Processes are started with ``spawn`` (a fresh interpreter, as a second worker pod would be) and reach moto through
the AWS variables the ``s3_server`` fixture put in the environment. Every wait is bounded.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from plada_core.io import leases, releases, storage

ROUNDS = 5
WAIT = 60  # seconds: the bound on every barrier and queue wait, far above what a round takes


def _contend(url: str, name: str, rounds: int, barrier, report) -> None:
    """Each round: try the lease once with no waiting, hold it (if won) until every contender has tried, release."""
    try:
        for r in range(rounds):
            barrier.wait(timeout=WAIT)
            try:
                lease = leases.acquire(url, name, ttl_s=30, wait_s=0)
            except leases.LeaseHeld:
                lease = None
            report.put((r, name, lease is not None))
            barrier.wait(timeout=WAIT)  # the winner still holds while the others try
            if lease is not None:
                lease.release()
            barrier.wait(timeout=WAIT)
    except BaseException as exc:
        report.put(("error", name, repr(exc)))
        barrier.abort()  # the others stop at once instead of waiting out their timeouts
        raise


def _winners_per_round(report, contenders: int, rounds: int) -> dict[int, list[str]]:
    winners: dict[int, list[str]] = {r: [] for r in range(rounds)}
    for _ in range(contenders * rounds):
        r, name, won = report.get(timeout=WAIT)
        assert r != "error", f"{name} failed: {won}"
        if won:
            winners[r].append(name)
    return winners


def test_threads_racing_for_a_lease_have_exactly_one_winner_each_round(storage_root):
    url, n = storage.join(storage_root, "lease"), 8
    barrier, report = threading.Barrier(n), queue.Queue()
    threads = [threading.Thread(target=_contend, args=(url, f"t{i}", ROUNDS, barrier, report)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=WAIT)
    winners = _winners_per_round(report, n, ROUNDS)
    assert {r: len(w) for r, w in winners.items()} == {r: 1 for r in range(ROUNDS)}, winners
    assert leases.current(url)["released"] is True


def test_processes_racing_for_a_lease_have_exactly_one_winner_each_round(storage_root):
    url, n, ctx = storage.join(storage_root, "lease"), 4, multiprocessing.get_context("spawn")
    barrier, report = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(url, f"p{i}", ROUNDS, barrier, report)) for i in range(n)]
    for p in procs:
        p.start()
    try:
        winners = _winners_per_round(report, n, ROUNDS)
    finally:
        for p in procs:
            p.join(timeout=WAIT)
            if p.is_alive():
                p.kill()
    assert {r: len(w) for r, w in winners.items()} == {r: 1 for r in range(ROUNDS)}, winners
    assert [p.exitcode for p in procs] == [0] * n


def _hold_until(url: str, owner: str, ttl_s: float, ready, go, outcome) -> None:
    """Hold the lease (renewed) until ``go`` is set, then report how the block ended."""
    try:
        with leases.hold(url, owner, ttl_s=ttl_s):
            ready.put(os.getpid())
            go.wait(timeout=WAIT)
        outcome.put("ok")
    except leases.LeaseLost as exc:
        outcome.put(f"LeaseLost: {exc}")


def _start_holder(url: str, owner: str, ttl_s: float):
    ctx = multiprocessing.get_context("spawn")
    ready, go, outcome = ctx.Queue(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_hold_until, args=(url, owner, ttl_s, ready, go, outcome))
    proc.start()
    pid = ready.get(timeout=WAIT)
    return proc, pid, go, outcome


def test_a_holder_killed_with_sigkill_is_taken_over_after_its_expiry(storage_root, caplog):
    url = storage.join(storage_root, "lease")
    proc, pid, _, _ = _start_holder(url, "victim", ttl_s=2)
    os.kill(pid, signal.SIGKILL)
    proc.join(timeout=WAIT)
    dead = leases.current(url)
    assert (dead["owner"], dead["pid"], dead.get("released")) == ("victim", pid, None), "the crash left it behind"
    if time.time() < dead["expires_at"] - 0.5:  # skipped only if this process itself stalled for over a second
        with pytest.raises(leases.LeaseHeld, match=rf"held by owner 'victim' \(host .*, pid {pid}, since"):
            leases.acquire(url, "successor", wait_s=0)
    with caplog.at_level(logging.WARNING, logger="plada_core.io.leases"):
        lease = leases.acquire(url, "successor", ttl_s=30, wait_s=WAIT, poll_s=0.1)
    assert time.time() >= dead["expires_at"], "taken over only after the expiry"
    assert lease.record["took_over_from"]["pid"] == pid
    assert f"took over from owner 'victim' (host {dead['host']}, pid {pid}, since {dead['since']})" in caplog.text
    lease.release()
    assert leases.current(url)["released"] is True


def test_a_frozen_holder_taken_over_leaves_the_new_lease_alone_and_ends_with_lease_lost(storage_root):
    url = storage.join(storage_root, "lease")
    proc, pid, go, outcome = _start_holder(url, "sleeper", ttl_s=2)
    os.kill(pid, signal.SIGSTOP)  # a GC pause, a suspended VM: alive but silent past its expiry
    try:
        frozen = leases.current(url)
        time.sleep(max(0.0, frozen["expires_at"] - time.time()) + 0.1)
        newcomer = leases.acquire(url, "newcomer", ttl_s=30, wait_s=0)
    finally:
        os.kill(pid, signal.SIGCONT)
    go.set()
    assert outcome.get(timeout=WAIT).startswith("LeaseLost: lease")
    proc.join(timeout=WAIT)
    now = leases.current(url)
    assert (now["owner"], now["token"], now.get("released")) == ("newcomer", newcomer.record["token"], None)
    assert newcomer.renew(), "the woken holder did not touch the newcomer's lease"
    newcomer.release()


def test_a_taken_over_holder_cannot_renew_or_release_the_new_owners_lease(storage_root, caplog):
    url = storage.join(storage_root, "lease")
    old = leases.acquire(url, "old", ttl_s=0.5)  # never renewed: as if its process hung
    time.sleep(0.6)
    with caplog.at_level(logging.WARNING, logger="plada_core.io.leases"):
        new = leases.acquire(url, "new", ttl_s=30)
    assert "took over from owner 'old'" in caplog.text
    assert old.renew() is False and old.lost.is_set()
    old.release()
    with pytest.raises(leases.LeaseLost, match="taken over by owner 'new'"):
        old.check()
    assert leases.current(url)["token"] == new.record["token"]
    new.release()


def test_renewal_keeps_a_long_running_holder_past_its_ttl(storage_root):
    url, ttl = storage.join(storage_root, "lease"), 1.5
    refused = 0
    with leases.hold(url, "long", ttl_s=ttl) as lease:
        first, end = lease.generation, time.monotonic() + 2.5 * ttl
        while time.monotonic() < end:
            with pytest.raises(leases.LeaseHeld, match="held by owner 'long'"):
                leases.acquire(url, "intruder", wait_s=0)
            refused += 1
            time.sleep(0.2)
        assert lease.generation - first >= 3, "renewed every ttl/3"
    assert refused >= 5 and not lease.lost.is_set()
    assert leases.current(url)["released"] is True


def test_stores_whose_conditional_write_is_not_atomic_still_have_one_winner(tmp_path, monkeypatch):
    """moto checks If-None-Match and stores in two steps: every racer can pass the check. Simulate exactly that
    (all contenders pass the check before any writes); the read-back after the settle picks one winner."""
    n, url = 6, storage.join(tmp_path.as_uri(), "lease")
    passed_check = threading.Barrier(n)

    def check_then_put(target: str, data: bytes) -> bool:
        absent = not storage.exists(target)
        passed_check.wait(timeout=WAIT)
        if absent:
            storage.write_bytes(target, data)
        return absent

    monkeypatch.setattr(leases.storage, "create_new", check_then_put)
    monkeypatch.setitem(leases.SETTLE_S, "file", 0.5)
    won, errors = [], []

    def contend(name: str) -> None:
        try:
            won.append(leases.acquire(url, name, ttl_s=30, wait_s=0))
        except leases.LeaseHeld:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(f"t{i}",)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=WAIT)
    assert errors == [] and len(won) == 1, (errors, [lease.owner for lease in won])
    assert leases.current(url)["token"] == won[0].record["token"]


def test_task_lock_names_the_holder_the_expiry_and_the_fix(storage_root):
    with releases.task_lock(storage_root, "t", owner="nightly", ttl_s=30) as lease:
        assert lease.url == storage.join(storage_root, "tasks", "t", ".lease")
        with pytest.raises(releases.LockHeld) as held, releases.task_lock(storage_root, "t", owner="second"):
            pass
    message = str(held.value)
    assert "another publish of task 't' is running" in message
    assert f"held by owner 'nightly' (host {lease.record['host']}, pid {os.getpid()}" in message
    assert f"until {lease.record['expires']}" in message and "taken over by itself once it expires" in message
    assert isinstance(held.value, leases.LeaseHeld) and held.value.holder["owner"] == "nightly"


class _NoConditionalWrites(MemoryFileSystem):
    protocol = "plada-nocas"


def test_a_store_without_conditional_writes_is_refused_with_the_supported_ones():
    fsspec.register_implementation("plada-nocas", _NoConditionalWrites, clobber=True)
    with pytest.raises(NotImplementedError, match=r"no atomic conditional write .*file://, s3://"):
        leases.acquire("plada-nocas://somewhere/lease", "me")


def test_latest_is_never_torn_while_publishes_alternate(storage_root):
    for version in ("v1", "v2"):
        releases.write_release(storage_root, "t", version, {"payload_url": f"p-{version}"})
    releases.promote(storage_root, "t", "v1")
    done, reads, torn = threading.Event(), [], []

    def publish() -> None:
        for i in range(20):
            releases.promote(storage_root, "t", ("v1", "v2")[i % 2])
        done.set()

    writer = threading.Thread(target=publish)
    writer.start()
    while not done.is_set() or not reads:
        record = releases.current_release(storage.join(storage_root, "tasks", "t"))["record"]
        reads.append(record["version"])
        if record.get("payload_url") != f"p-{record['version']}":
            torn.append(record)
    writer.join(timeout=WAIT)
    assert torn == [] and set(reads) <= {"v1", "v2"}


def test_a_release_read_back_that_finds_the_next_holder_already_there_still_counts(tmp_path, monkeypatch):
    """The next acquirer may see the release and take the free lease before the releaser reads its record back
    (on S3 the read-back waits ``SETTLE_S``): the releaser must not call that a takeover and fail its block."""
    url = storage.join(tmp_path.as_uri(), "lease")
    create_new, followers = storage.create_new, []

    def create_then_let_the_next_acquirer_in(target: str, data: bytes) -> bool:
        created = create_new(target, data)
        if created and b'"released": true' in data and not followers:
            followers.append(leases.acquire(url, "next", ttl_s=30, wait_s=0))  # between create and read-back
        return created

    monkeypatch.setattr(leases.storage, "create_new", create_then_let_the_next_acquirer_in)
    with leases.hold(url, "first", ttl_s=30) as lease:
        pass  # kept() releases here and ends with check(): no LeaseLost
    assert not lease.lost.is_set() and len(followers) == 1
    newest = leases.current(url)
    assert (newest["owner"], newest["token"], newest.get("released")) == ("next", followers[0].record["token"], None)
    assert followers[0].renew(), "the next holder's lease is untouched"
    followers[0].release()


def test_a_release_after_a_takeover_is_still_lost(tmp_path):
    url = storage.join(tmp_path.as_uri(), "lease")
    old = leases.acquire(url, "old", ttl_s=0.3)
    time.sleep(0.4)
    new = leases.acquire(url, "new", ttl_s=30)
    new.renew()  # the taker's record is now above the generation old's release would create
    old.release()
    assert old.lost.is_set() and leases.current(url)["token"] == new.record["token"]
    new.release()
