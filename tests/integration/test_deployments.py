"""Deployments against a real Prefect server: deploy, trigger publish as the UI would, watch the student follow.

Uses the session's `prefect server start` (conftest) and starts a `process` worker, stopped by PID.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plada_core.io import pool
from plada_core.io.sources import open_source
from tests.integration.conftest import BIN, stop

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(prefect_api, tmp_path_factory, tiny_npz):
    home = Path(prefect_api["PREFECT_HOME"])
    root = tmp_path_factory.mktemp("releases")
    env = {
        **prefect_api,
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PLADA_TORCH_THREADS": "1",
        "PLADA_TASK": "tiny-digits",
        "PLADA_ROOT": str(root / "store"),
        "PLADA_REFERENCE_URL": str(root / "pool"),
        "PLADA_TARGET_TRAIN": tiny_npz["train"],
        "PLADA_TARGET_TEST": tiny_npz["test"],
    }
    pool.build_reference([open_source(tiny_npz["pool"])], env["PLADA_REFERENCE_URL"], shard_size=128, progress=False)
    log = open(home / "worker.log", "w")
    worker = None

    def run(*args):
        return subprocess.run([BIN / "prefect", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)

    try:
        created = run("work-pool", "create", "plada-local", "--type", "process")
        assert created.returncode == 0, created.stdout + created.stderr
        deployed = run("--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        worker = subprocess.Popen([BIN / "prefect", "worker", "start", "--pool", "plada-local"], env=env, cwd=ROOT,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        yield {"env": env, "run": run, "root": env["PLADA_ROOT"], "home": home}
    finally:
        if worker is not None:
            stop(worker)
        log.close()


def _client_call(env: dict, code: str) -> object:
    """Run an async PrefectClient snippet in a subprocess (keeps this process free of a second API context)."""
    script = (
        "import asyncio, json\nfrom prefect.client.orchestration import get_client\n"
        "async def main():\n    async with get_client() as client:\n"
        + "\n".join("        " + line for line in code.splitlines())
        + "\nprint(json.dumps(asyncio.run(main()), default=str))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


RUNS = """
runs = await client.read_flow_runs()
return [{"id": str(r.id), "name": r.name, "flow_id": str(r.flow_id), "state": r.state_type.value,
         "parameters": r.parameters, "deployment_id": str(r.deployment_id)} for r in runs]
"""
FLOWS = "return {str(f.id): f.name for f in await client.read_flows()}"
ARTIFACTS = "return [a.key for a in await client.read_artifacts()]"
STUDENT_MARKDOWN = """
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["plada-student-md"])))
return [{"id": str(a.id), "data": a.data} for a in found]
"""
PLOT = '<img src="data:image/png;base64,'


def _wait_for(env: dict, flow_name: str, timeout: float = 420) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = _client_call(env, FLOWS)
        runs = [r for r in _client_call(env, RUNS) if names.get(r["flow_id"]) == flow_name]
        done = [r for r in runs if r["state"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")]
        if done:
            return done[0]
        time.sleep(3)
    raise TimeoutError(f"no finished {flow_name!r} run after {timeout}s")


def test_bad_parameters_are_refused_before_any_work(stack):
    bad = json.dumps(
        {"task": "no spaces allowed", "root_url": "x", "reference_url": "x", "target_train": "x", "target_test": "x"}
    )
    out = stack["run"]("deployment", "run", "publish-task/publish", "--param", f"request={bad}")
    assert out.returncode != 0
    assert "Validation failed for field 'request.task'" in " ".join((out.stdout + out.stderr).split())


def test_triggered_publish_then_student(stack):
    out = stack["run"]("deployment", "run", "publish-task/publish")
    assert out.returncode == 0, out.stdout + out.stderr
    publish = _wait_for(stack["env"], "publish-task")
    assert publish["state"] == "COMPLETED", (stack["home"] / "worker.log").read_text()[-3000:]
    latest = json.loads((Path(stack["root"]) / "tasks" / "tiny-digits" / "latest.json").read_text())
    assert Path(latest["payload_url"].removeprefix("file://")).exists()

    student = _wait_for(stack["env"], "train-student-release")
    assert student["state"] == "COMPLETED", (stack["home"] / "worker.log").read_text()[-3000:]
    assert student["parameters"]["payload_url"] == latest["payload_url"]
    assert student["parameters"]["publish_flow_run_id"] == publish["id"]
    keys = set(_client_call(stack["env"], ARTIFACTS))
    assert {"plada-publish", "plada-student"} <= keys


def test_student_report_plot_is_embedded_and_rendered_by_the_ui(stack):
    """The accuracy-vs-payload plot travels inside the markdown artifact as a data URI; a headless browser on the
    real Prefect UI must find it as an <img> in the rendered page (the UI's markdown sanitiser could strip it)."""
    student = _wait_for(stack["env"], "train-student-release")
    assert student["state"] == "COMPLETED"
    artifacts = _client_call(stack["env"], STUDENT_MARKDOWN)
    assert artifacts and "](data:image/png;base64," in artifacts[0]["data"]
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no chromium on PATH to render the Prefect UI (apt-get install chromium); the data URI is checked")
    ui = stack["env"]["PREFECT_API_URL"].removesuffix("/api")
    dom = subprocess.run(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000", "--dump-dom",
         f"{ui}/artifacts/artifact/{artifacts[0]['id']}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert PLOT in dom.stdout, f"the artifact page rendered without the plot: {dom.stdout[:2000]}"
