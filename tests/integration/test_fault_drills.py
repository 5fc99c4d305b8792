"""Fault drills: what an ops team would otherwise find out at night, provoked on loopback with real parts.

1. A Dask worker is killed (SIGKILL) while it scores: the run completes with the outputs of a clean run.
2. The S3 endpoint answers 503 SlowDown and resets connections for a stretch (``fault_proxy`` in front of moto):
   the publish retries, completes, and no partial object is ever visible.
3. A client reads ``latest`` and decodes its payload in a loop while two publishes of the task run: every read
   sees one complete release.
4. The store refuses a write mid-release (507, "storage full", every time it is tried): ``latest`` stays where it
   was, and the next run succeeds.

Publishes run as separate processes against the session's real Prefect server, as a deployment's would. Drills
2-4 share one task on S3 (``s3_task``: its first release is drill 2's publish), so each of them starts from a
released task. Each drill prints its numbers (``pytest -s``) and records them as junit properties; the README's
Reliability section quotes them. Anything lost must be zero.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Self

import pytest

from plada_core.io import pool, releases, storage
from plada_core.io.sources import open_source
from plada_core.payload import decode_payload
from tests.integration.fault_proxy import FaultProxy, Faults

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PLADA = Path(sys.executable).parent / "plada"
TASK = "drill"
# A publish-task run as a deployment starts it: one process, one flow run; the last line is its outcome.
PUBLISH_TASK = """
import json, sys
from flows.params import ReleaseRequest
from flows.release import publish_task
record = publish_task(ReleaseRequest(**json.loads(sys.argv[1])), lock_wait_s=300)
print("RESULT " + json.dumps({k: record.get(k) for k in ("status", "version", "payload_url")}))
"""


def _report(record_property, drill: str, numbers: dict) -> None:
    print(f"\nfault drill {drill}: {json.dumps(numbers, sort_keys=True)}")
    for name, value in numbers.items():
        record_property(f"{drill}.{name}", value)


def _env(prefect_api: dict, **extra: str) -> dict:
    # os.environ, not prefect_api alone: the S3 variables (s3_server) may have been set after the server started
    env = {**os.environ, "PLADA_TORCH_THREADS": "1", "PLADA_SCORING_THREADS": "1"}
    env.update({k: v for k, v in prefect_api.items() if k.startswith("PREFECT_")})
    return {**env, **extra}


def _build_pool(tiny_npz, url: str, shard_size: int) -> dict:
    pool.build_reference([open_source(tiny_npz["pool"])], url, shard_size=shard_size, progress=False)
    return pool.read_reference(url)


def _request(tiny_npz, root: str, reference_url: str, **overrides) -> dict:
    fields = {"task": TASK, "root_url": root, "reference_url": reference_url, "target_train": tiny_npz["train"],
              "target_test": tiny_npz["test"], "teacher_epochs": 3, "keep": 0.2, "preprocess": {"image_size": 8},
              "selector": "energy"}  # fmt: skip
    return {**fields, **overrides}


def _start_publish_task(env: dict, request: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-c", PUBLISH_TASK, json.dumps(request)], env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 300) -> dict | None:
    """The run's outcome (``status``, ``version``, ``payload_url``), or None when it failed."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"publish-task ran past {timeout} s; log tail:\n{log.read_text()[-3000:]}") from None
    lines = [line for line in log.read_text().splitlines() if line.startswith("RESULT ")]
    return json.loads(lines[-1].removeprefix("RESULT ")) if proc.returncode == 0 and lines else None


def _publish_task(env: dict, request: dict, log: Path) -> dict:
    result = _finish(_start_publish_task(env, request, log), log)
    assert result is not None, f"publish-task failed; log tail:\n{log.read_text()[-4000:]}"
    return result


def _plada_retries(*logs: Path) -> int:
    """Whole-operation retries PLADA logged (``retries.retrying``), on top of those the proxy saw on the wire."""
    return sum(len(re.findall(r"; retry \d+ of \d+ in ", log.read_text())) for log in logs)


def _check_release(root: str, fingerprint: str) -> dict:
    """Read ``latest`` as a client does and check that everything it names is one complete release; returns
    the version and how many images its payload keeps. Raises AssertionError on any mix."""
    current = releases.current_release(storage.join(root, "tasks", TASK))
    record = current["record"]
    data = storage.read_bytes(current["payload_url"])
    payload = decode_payload(data, expected_fingerprint=fingerprint)
    stored = releases.read_release(root, TASK, current["version"])  # RELEASE.json of the version latest names
    assert payload.task == TASK and payload.version == stored["version"] == current["version"], (
        f"latest names {current['version']}, its payload says {payload.version}, RELEASE.json {stored['version']}"
    )
    assert payload.k == record["report"]["n_kept"] == stored["report"]["n_kept"]
    assert len(data) == record["report"]["payload_bytes"], "payload size differs from its release record"
    return {"version": current["version"], "k": payload.k}


def _s3_objects(root: str) -> dict[str, int]:
    fs, path = storage.get_fs(root)
    return {key: info["size"] for key, info in fs.find(path, detail=True).items()}


def _open_uploads(root: str) -> list[str]:
    """Multipart uploads still open under ``root`` (an aborted or completed one is gone)."""
    fs, path = storage.get_fs(root)
    bucket, prefix, _ = fs.split_path(path)
    listing = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix)
    return [u["Key"] for u in listing.get("Uploads", [])]


# --- 1. a Dask worker killed mid-scoring --------------------------------------------------------------------


def _outputs(folder: Path) -> dict[str, object]:
    """Every data file a publish wrote, comparably: payloads and arrays as bytes; Parquet files as their table
    (schema and data) and metadata without wall times. JSON files (reports with timings) are left out."""
    import pyarrow.parquet as pq

    def untimed(value):
        if isinstance(value, dict):
            return {k: untimed(v) for k, v in value.items() if k != "wall_s"}
        return [untimed(v) for v in value] if isinstance(value, list) else value

    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            meta = {k.decode(): untimed(json.loads(v)) for k, v in (table.schema.metadata or {}).items()
                    if k == b"plada"}  # fmt: skip
            out[name] = (table.replace_schema_metadata(None), meta)
        elif path.suffix in (".plada", ".npz"):
            out[name] = path.read_bytes()
    return out


def _same(a: object, b: object) -> bool:
    if isinstance(a, tuple):
        return a[0].equals(b[0]) and a[1] == b[1]
    return a == b


def test_dask_worker_killed_mid_scoring_changes_nothing(prefect_api, tiny_npz, tmp_path, record_property):
    from distributed import Client, LocalCluster

    ref = tmp_path / "pool"
    n_shards = len(_build_pool(tiny_npz, str(ref), shard_size=50)["shards"])
    env = _env(prefect_api)
    worker_env = {
        k: env[k] for k in ("PREFECT_API_URL", "PREFECT_HOME", "PLADA_TORCH_THREADS", "PLADA_SCORING_THREADS")
    }
    out, clean = tmp_path / "out", tmp_path / "clean"  # both runs write to `out`: the same URLs in their metadata

    def start(address: str, log: Path) -> subprocess.Popen:
        cmd = [str(PLADA), "publish", "--reference-url", str(ref), "--target-train", tiny_npz["train"],
               "--target-test", tiny_npz["test"], "--out", str(out), "--teacher-epochs", "3", "--image-size", "8",
               "--keep", "0.2", "--selector", "energy", "--runner", "dask", "--dask-address", address]  # fmt: skip
        with open(log, "w") as f:
            return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)

    def finish(proc: subprocess.Popen, log: Path) -> None:
        try:
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == 0, f"publish failed:\n{log.read_text()[-4000:]}"

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      env=worker_env) as cluster, Client(cluster) as client:  # fmt: skip
        t0 = time.monotonic()
        finish(start(cluster.scheduler_address, tmp_path / "clean.log"), tmp_path / "clean.log")
        clean_s = time.monotonic() - t0
        out.rename(clean)

        t0 = time.monotonic()
        proc = start(cluster.scheduler_address, tmp_path / "killed.log")
        victim, done_at_kill, deadline = None, 0, time.monotonic() + 240
        while victim is None and proc.poll() is None and time.monotonic() < deadline:
            done_at_kill = len(list((out / "scores").glob("*.parquet")))
            busy = [w for w, keys in client.processing().items() if any("score_shard" in str(k) for k in keys)]
            if 1 <= done_at_kill < n_shards and busy:
                victim = busy[0]
                os.kill(client.run(os.getpid, workers=[victim])[victim], signal.SIGKILL)
            else:
                time.sleep(0.02)
        assert victim is not None, f"the kill never landed mid-scoring ({done_at_kill} of {n_shards} shards done)"
        finish(proc, tmp_path / "killed.log")
        killed_s = time.monotonic() - t0
        client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker

    clean_out, killed_out = _outputs(clean), _outputs(out)
    assert sorted(clean_out) == sorted(killed_out), "the runs wrote different files"
    assert len([k for k in clean_out if k.startswith("scores/")]) == n_shards and "payload.plada" in clean_out
    differing = [name for name in clean_out if not _same(clean_out[name], killed_out[name])]
    assert differing == [], f"files that differ from the clean run: {differing}"
    _report(record_property, "dask_worker_killed", {
        "shards": n_shards, "shards_done_at_kill": done_at_kill, "workers_killed": 1,
        "files_compared": len(clean_out), "files_differing": len(differing),
        "payload_bytes_identical": clean_out["payload.plada"] == killed_out["payload.plada"],
        "clean_run_s": round(clean_s, 1), "killed_run_s": round(killed_s, 1)})  # fmt: skip


# --- the S3 drills share one task: its first release is published while the endpoint throttles and resets -------


class _Reader(threading.Thread):
    """A client: reads ``latest`` and decodes its payload in a loop until stopped, and keeps every outcome."""

    def __init__(self, root: str, fingerprint: str) -> None:
        super().__init__(name="latest-reader", daemon=True)
        self.root, self.fingerprint = root, fingerprint
        self.halt = threading.Event()
        self.reads, self.absent, self.versions, self.errors = 0, 0, [], []

    def run(self) -> None:
        while not self.halt.wait(0.005):  # a short pause: moto serves the publishers from this process too
            try:
                seen = _check_release(self.root, self.fingerprint)
            except FileNotFoundError as exc:
                if "no release at" not in str(exc):  # a pointer naming a version that is not (all) there
                    self.errors.append(repr(exc))
                self.absent += 1  # the task has no release yet
                continue
            except Exception as exc:  # noqa: BLE001 - every failure is a finding; the test lists them
                self.errors.append(repr(exc))
                continue
            self.reads += 1
            if not self.versions or self.versions[-1] != seen["version"]:
                self.versions.append(seen["version"])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.halt.set()
        self.join(timeout=30)


@pytest.fixture(scope="module")
def s3_task(prefect_api, s3_server, tiny_npz, tmp_path_factory):
    """A task on S3 whose first release was published through ``FaultProxy`` while it answered a stretch of
    requests with 503 SlowDown and connection resets (drill 2), with a client reading ``latest`` meanwhile.
    The pool lives on S3 too, so reads are faulted as well as writes."""
    import uuid

    from tests.conftest import S3_TEST_BUCKET

    logs = tmp_path_factory.mktemp("s3-drills")
    base = f"s3://{S3_TEST_BUCKET}/fault-drills-{uuid.uuid4().hex[:8]}"
    reference, root = f"{base}/pool", f"{base}/store"
    info = _build_pool(tiny_npz, reference, shard_size=100)
    stretch = 16  # consecutive requests from the first that touches a teacher folder: reads, writes, listings
    with FaultProxy(s3_server.endpoint) as proxy, _Reader(root, info["fingerprint"]) as reader:
        proxy.inject(Faults(kinds=("slowdown", "reset"), trigger="/teachers?/", count=stretch))
        log = logs / "faulted.log"
        result = _publish_task(_env(prefect_api, AWS_ENDPOINT_URL=proxy.endpoint), _request(tiny_npz, root, reference),
                               log)  # fmt: skip
        stats = proxy.stats()
        time.sleep(0.2)  # a few reads of the release
    return {"root": root, "reference": reference, "fingerprint": info["fingerprint"], "logs": logs, "result": result,
            "stats": stats, "stretch": stretch, "log": log, "reader": reader}  # fmt: skip


def test_s3_slowdown_and_resets_are_retried_and_nothing_partial_is_visible(s3_task, record_property):
    stats, stretch, reader, root = s3_task["stats"], s3_task["stretch"], s3_task["reader"], s3_task["root"]
    assert s3_task["result"]["status"] == "published"
    assert stats["faults_injected"] == stretch and stats["faults"] == {"slowdown": stretch // 2, "reset": stretch // 2}
    assert stats["retries_seen"] >= stretch and stats["unrecovered"] == 0, stats
    assert reader.errors == [] and reader.versions == [s3_task["result"]["version"]], (
        reader.errors[:5],
        reader.versions,
    )

    objects = _s3_objects(root)
    temporary = [key for key in objects if ".tmp-" in key]
    empty = [key for key, size in objects.items() if size == 0]
    assert temporary == [] and empty == [] and _open_uploads(root) == [], (temporary, empty)
    assert _check_release(root, s3_task["fingerprint"])["version"] == s3_task["result"]["version"]
    _report(record_property, "s3_slowdown_and_resets", {
        "requests": sum(stats["requests"].values()), "faults_injected": stats["faults_injected"],
        "faults": stats["faults"], "retries_on_the_wire": stats["retries_seen"],
        "plada_retries": _plada_retries(s3_task["log"]), "unrecovered": stats["unrecovered"],
        "objects": len(objects), "partial_objects": len(temporary) + len(empty), "client_reads": reader.reads,
        "client_reads_before_release": reader.absent, "torn_or_failed_reads": len(reader.errors)})  # fmt: skip


def test_reads_of_latest_during_two_publishes_always_see_one_whole_release(
    s3_task, prefect_api, tiny_npz, record_property
):
    root, logs = s3_task["root"], s3_task["logs"]
    before = releases.read_latest(root, TASK)["version"]
    env = _env(prefect_api)
    with _Reader(root, s3_task["fingerprint"]) as reader:
        # two releases that differ (keep), started together: one waits for the other's lease
        procs = [(_start_publish_task(env, _request(tiny_npz, root, s3_task["reference"], keep=keep), log), log)
                 for keep, log in ((0.3, logs / "concurrent-a.log"), (0.4, logs / "concurrent-b.log"))]  # fmt: skip
        results = [_finish(proc, log) for proc, log in procs]
        assert None not in results, [log.read_text()[-3000:] for _, log in procs]
        time.sleep(0.2)  # a few reads of the final state
    assert reader.errors == [], reader.errors[:5]
    assert [r["status"] for r in results] == ["published", "published"]
    published = {r["version"] for r in results}
    assert len(published) == 2 and before not in published
    last = releases.read_latest(root, TASK)["version"]
    # latest only ever moves forward: the release there before, then each new one once, the last one last
    assert reader.versions[0] == before and reader.versions[-1] == last, reader.versions
    assert len(reader.versions) == len(set(reader.versions)) and set(reader.versions) <= {before} | published
    _report(record_property, "latest_reads_during_two_publishes", {
        "reads": reader.reads, "releases_seen": len(reader.versions), "torn_or_failed_reads": len(reader.errors),
        "reads_without_a_release": reader.absent})  # fmt: skip


def test_a_write_refused_mid_release_leaves_latest_and_the_next_run_succeeds(
    s3_task, s3_server, prefect_api, tiny_npz, record_property
):
    root, logs = s3_task["root"], s3_task["logs"]
    pointer = releases.latest_url(root, TASK)
    before = storage.read_bytes(pointer)
    request = _request(tiny_npz, root, s3_task["reference"], keep=0.5)
    with FaultProxy(s3_server.endpoint) as proxy, _Reader(root, s3_task["fingerprint"]) as reader:
        env = _env(prefect_api, AWS_ENDPOINT_URL=proxy.endpoint)
        # The new version's manifest cannot be written: the store answers "full" (507) each time it is tried.
        # Only that write fails, so the run can still release its lease (a store that refuses every write keeps
        # the lease until it expires: see the README's Reliability section).
        proxy.inject(Faults(kinds=("full",), methods=frozenset({"PUT", "POST"}), trigger="/manifest", count=1,
                            sticky=True))  # fmt: skip
        broken = logs / "refused.log"
        failed = _finish(_start_publish_task(env, request, broken), broken)
        refused = proxy.stats()["faults_injected"]
        assert failed is None, "the publish succeeded although its manifest could not be written"
        assert refused > 0, "no write was refused: the trigger never matched"
        assert storage.read_bytes(pointer) == before, "latest moved although the release failed"

        proxy.clear()  # space freed
        start = time.monotonic()
        again = _publish_task(env, request, logs / "next.log")
        next_s = time.monotonic() - start
    assert reader.errors == [], reader.errors[:5]
    assert again["status"] == "published" and json.loads(before)["version"] != again["version"]
    assert _check_release(root, s3_task["fingerprint"])["version"] == again["version"]
    objects = _s3_objects(root)
    temporary = [key for key in objects if ".tmp-" in key]
    assert temporary == [] and _open_uploads(root) == [], temporary
    _report(record_property, "write_refused_mid_release", {
        "write_attempts_refused": refused, "plada_retries": _plada_retries(broken), "latest_moved_by_failed_run": 0,
        "next_run": again["status"], "next_run_s": round(next_s, 1), "client_reads": reader.reads,
        "torn_or_failed_reads": len(reader.errors), "partial_objects": len(temporary)})  # fmt: skip
