"""The nightly catalog against a real Prefect server: a three-task catalog with one broken task publishes two and
reports the third failed with its reason; the next night reports both unchanged; a new keep re-selects from the
cached teacher and scores.

Night 1 runs through the ``publish-catalog/nightly`` deployment and a process worker; nights 2 and 3 run the same
flow from this process against the same server (a worker's flow process takes 20-30 s to start on a busy 2-core
machine). Times are the server's run times of the catalog flow runs. The server is this module's own
(``conftest``'s helpers, stopped by PID): test_deployments reads back "the publish-task run" by flow name, and this
module's subflow runs must not be the ones it finds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from plada_core.io import pool
from plada_core.io.sources import open_source
from tests.integration.conftest import BIN, _free_port, _wait_healthy, stop

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
TINY = {"teacher_epochs": 2, "selector": "energy", "proxy_epochs": 1, "preprocess": {"image_size": 8}}


@pytest.fixture(scope="module")
def catalog_stack(tmp_path_factory, tiny_npz):
    """A Prefect server, the ``publish-catalog/nightly`` deployment of a catalog file, a process worker."""
    home, data = tmp_path_factory.mktemp("catalog-prefect"), tmp_path_factory.mktemp("catalog-data")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
           "PREFECT_WORKER_QUERY_SECONDS": "2", "PLADA_TORCH_THREADS": "1",
           "PLADA_ROOT": str(data / "store")}  # fmt: skip
    catalog = data / "store" / "catalog.yaml"  # where the deployment looks: $PLADA_ROOT/catalog.yaml
    catalog.parent.mkdir()
    pool.build_reference([open_source(tiny_npz["pool"])], str(data / "pool"), shard_size=128, progress=False)
    procs = []

    def prefect(*args):
        out = subprocess.run(
            [BIN / "prefect", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out

    def start(args: list, log) -> subprocess.Popen:
        procs.append(subprocess.Popen([BIN / "prefect", *args], env=env, cwd=ROOT, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))  # fmt: skip
        return procs[-1]

    with open(home / "server.log", "w") as server_log, open(home / "worker.log", "w") as worker_log:
        try:
            server = start(["server", "start", "--host", "127.0.0.1", "--port", str(port)], server_log)
            _wait_healthy(env["PREFECT_API_URL"], server)
            prefect("work-pool", "create", "plada-local", "--type", "process")
            prefect("--no-prompt", "deploy", "--name", "nightly", "--prefect-file", "deployments/prefect.yaml")
            start(["worker", "start", "--pool", "plada-local"], worker_log)
            yield {"env": env, "prefect": prefect, "data": data, "home": home, "catalog": catalog}
        finally:
            for proc in reversed(procs):
                stop(proc)


def _client(env: dict, code: str) -> object:
    """Run an async PrefectClient snippet in a subprocess; returns its JSON result."""
    script = ("import asyncio, json\nfrom prefect.client.orchestration import get_client\n"
              "async def main():\n    async with get_client() as client:\n"
              + "\n".join("        " + line for line in code.splitlines())
              + "\nprint(json.dumps(asyncio.run(main()), default=str))\n")  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


RUN = """
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
run = await client.read_flow_run("{id}")
found = await client.read_artifacts(artifact_filter=ArtifactFilter(
    key=ArtifactFilterKey(any_=["plada-catalog"]), flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
return {{"state": run.state_type.value, "message": run.state.message, "seconds": run.total_run_time.total_seconds(),
        "rows": found[0].data if found else None}}
"""


def _deployed_night(stack: dict, timeout: float = 240) -> dict:
    """Start one run of the nightly deployment now and wait for it: state, run seconds and summary rows."""
    out = stack["prefect"]("deployment", "run", "publish-catalog/nightly")
    run_id = next(word for line in out.stdout.splitlines() if "UUID" in line for word in line.split() if "-" in word)
    return _finished(stack, run_id, timeout)


def _night(stack: dict) -> dict:
    """One catalog run from this process against the stack's server (same flow, same catalog file)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.catalog import CatalogRequest, publish_catalog

    with temporary_settings({PREFECT_API_URL: stack["env"]["PREFECT_API_URL"]}):
        state = publish_catalog(CatalogRequest(catalog=str(stack["catalog"])), return_state=True)
    return _finished(stack, str(state.state_details.flow_run_id), timeout=30)


def _finished(stack: dict, run_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _client(stack["env"], RUN.format(id=run_id))
        if run["state"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            assert run["rows"] is not None, f"{run['state']}: {run['message']}\n" + (
                stack["home"] / "worker.log").read_text()[-3000:]  # fmt: skip
            rows = json.loads(run["rows"]) if isinstance(run["rows"], str) else run["rows"]
            return {**run, "rows": {r["task"]: r for r in rows}}
        time.sleep(2)
    raise TimeoutError(f"catalog run {run_id} unfinished after {timeout}s:\n"
                       + (stack["home"] / "worker.log").read_text()[-3000:])  # fmt: skip


def _catalog(stack: dict, tiny_npz: dict, keep_b: float) -> None:
    data = stack["data"]
    good = {"target_train": tiny_npz["train"], "target_test": tiny_npz["test"]}
    doc = {
        "defaults": {"root_url": str(data / "store"), "reference_url": str(data / "pool"), **TINY},
        "tasks": [
            {"task": "good-a", **good, "keep": 0.2, "student": {"student_epochs": 1}},
            # a named model: validation does not look at the target, so the task fails in its own flow run
            {"task": "broken", "target_train": "npz:/nonexistent/nope.npz", "target_test": tiny_npz["test"],
             "teacher_model": "plada_cnn"},
            {"task": "good-b", **good, "keep": keep_b},
        ],
    }
    stack["catalog"].write_text(yaml.safe_dump(doc))


def _cache_mtimes(data: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in (data / "store" / "cache").rglob("*") if p.is_file()}


def test_nightly_catalog_publishes_isolates_skips_unchanged_and_reselects(catalog_stack, tiny_npz):
    stack = catalog_stack
    _catalog(stack, tiny_npz, keep_b=0.1)

    first = _deployed_night(stack)
    rows = first["rows"]
    assert first["state"] == "FAILED" and "2 published, 1 failed (failed: broken" in first["message"]  # alerts fire
    assert rows["good-a"]["status"] == rows["good-b"]["status"] == "published", rows
    assert rows["broken"]["status"] == "failed" and "nope.npz" in rows["broken"]["reason"]
    assert rows["good-a"]["measured_acc"] and rows["good-a"]["predicted_acc"] and int(rows["good-a"]["payload_bytes"])
    assert rows["broken"]["flow_run_url"].endswith(f"/runs/flow-run/{rows['broken']['flow_run_id']}")
    cached = _cache_mtimes(stack["data"])
    assert sum(p.endswith(".parquet") for p in cached) == 3 and sum(p.endswith("teacher.pt") for p in cached) == 1

    second = _night(stack)
    assert second["rows"]["good-a"]["status"] == second["rows"]["good-b"]["status"] == "unchanged"
    assert second["rows"]["good-b"]["version"] == rows["good-b"]["version"]
    assert second["rows"]["broken"]["status"] == "failed"
    print(f"\ncatalog run 1: {first['seconds']:.1f} s; run 2 (both good tasks unchanged): {second['seconds']:.1f} s "
          f"({second['seconds'] / first['seconds']:.2f} of run 1); per task "
          f"{[rows[t]['wall_s'] for t in ('good-a', 'good-b')]} s then "
          f"{[second['rows'][t]['wall_s'] for t in ('good-a', 'good-b')]} s")  # fmt: skip

    _catalog(stack, tiny_npz, keep_b=0.3)
    third = _night(stack)
    assert third["rows"]["good-a"]["status"] == "unchanged"
    assert third["rows"]["good-b"]["status"] == "published"
    assert third["rows"]["good-b"]["version"] not in (rows["good-b"]["version"], "")  # a new version (<date>.2)
    assert _cache_mtimes(stack["data"]) == cached  # no shard re-scored, no teacher re-trained
    print(
        f"run 3 (good-b keep 0.1 → 0.3, re-selected): {third['seconds']:.1f} s; "
        f"good-b {third['rows']['good-b']['wall_s']} s"
    )
