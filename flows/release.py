"""Deployment flows: publish a versioned task release (nightly or from the UI), and the triggered student run."""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, runtime
from prefect.task_runners import ThreadPoolTaskRunner

from flows.params import ReleaseRequest, StudentRecipe
from flows.publish import random_baseline, run_publish
from plada_core.io import releases
from plada_core.io.storage import join
from tasks.publish_report import write_publish_report
from tasks.release import announce_release, finish_release
from tasks.student import train_student
from tasks.student_report import write_student_report


def _default_version() -> str:
    """The scheduled date of this run (UTC), so every re-run of one night writes the same version."""
    scheduled = runtime.flow_run.scheduled_start_time or datetime.now(timezone.utc)
    return scheduled.astimezone(timezone.utc).strftime("%Y-%m-%d")


@flow(name="publish-task", task_runner=ThreadPoolTaskRunner(max_workers=2))
def publish_task(request: ReleaseRequest, lock_wait_s: float = 3600.0) -> dict:
    """Publish ``request.task`` as release ``<root>/tasks/<task>/<version>/``, then move ``latest`` to it."""
    version = request.version or _default_version()
    out_url = releases.version_url(request.root_url, request.task, version)
    with releases.task_lock(request.root_url, request.task, owner=str(runtime.flow_run.id), wait_s=lock_wait_s):
        if releases.is_released(request.root_url, request.task, version):
            record = releases.read_release(request.root_url, request.task, version)  # idempotent re-run
        else:
            publishing = request.publish_request(out_url, version)
            published = run_publish(publishing)
            baseline = random_baseline(publishing, published, join(out_url, "baseline-random"))
            report = write_publish_report(out_url, published, baseline, request.model_dump())
            record = {
                "url": out_url,
                "payload_url": report["payload_url"],
                "random_payload_url": report["random_payload_url"],
                "reference_url": request.reference_url,
                "target_test": request.target_test,
                "publish_flow_run_id": str(runtime.flow_run.id),
                "report": report,
            }
        record = finish_release(request.root_url, request.task, version, record)
    announce_release(record)
    return record


@flow(name="train-student-release")
def train_student_release(
    payload_url: str,
    reference_url: str,
    target_test: str | None = None,
    random_payload_url: str | None = None,
    publish_flow_run_id: str | None = None,
    student: StudentRecipe = StudentRecipe(),
) -> dict:
    """Train the client's student on a published payload (and on its random baseline when given) and report.

    The payload and the pool are all the student needs; ``target_test`` (the publisher's test split, when the
    release event carries it) adds the accuracies that compare the student with the random baseline."""
    base = payload_url.rsplit("/", 1)[0]
    tag = f"{student.student_model}-seed{student.seed}"
    config = student.student_config()
    common = {"eval_spec": target_test or None, "num_workers": student.num_workers}
    metrics = train_student(payload_url, reference_url, join(base, "students", tag), config, **common)
    random_metrics = None
    if random_payload_url:
        random_metrics = train_student(
            random_payload_url, reference_url, join(base, "students", f"{tag}-random"), config, **common
        )
    return write_student_report(join(base, "students", tag), metrics, random_metrics, publish_flow_run_id, tag)
