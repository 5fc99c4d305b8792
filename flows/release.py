"""Deployment flows: publish a versioned task release (nightly or from the UI), and the triggered student run."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

from prefect import flow, runtime
from prefect.task_runners import ThreadPoolTaskRunner

from flows.params import PublishRequest, StudentRequest
from flows.publish import publish
from plada_core.io import releases
from plada_core.io.storage import join
from tasks.publish_report import write_publish_report
from tasks.release import announce_release, finish_release
from tasks.select import select_and_encode
from tasks.student import train_student
from tasks.student_report import write_student_report


def _default_version() -> str:
    """The scheduled date of this run (UTC), so every re-run of one night writes the same version."""
    scheduled = runtime.flow_run.scheduled_start_time or datetime.now(timezone.utc)
    return scheduled.astimezone(timezone.utc).strftime("%Y-%m-%d")


@flow(name="publish-task", task_runner=ThreadPoolTaskRunner(max_workers=2))
def publish_task(request: PublishRequest, lock_wait_s: float = 3600.0) -> dict:
    """Publish ``request.task`` as release ``<root>/tasks/<task>/<version>/``, then move ``latest`` to it."""
    version = request.version or _default_version()
    out_url = releases.version_url(request.root_url, request.task, version)
    with releases.task_lock(request.root_url, request.task, owner=str(runtime.flow_run.id), wait_s=lock_wait_s):
        if releases.is_released(request.root_url, request.task, version):
            record = releases.read_release(request.root_url, request.task, version)  # idempotent re-run
        else:
            published = publish(
                request.reference_url,
                request.target_train,
                request.target_test,
                out_url,
                request.teacher_config(),
                request.scoring_config(),
                request.selection_config(),
                request.codec,
                request.max_payload_bytes,
            )
            random_cfg = dataclasses.replace(
                request.selection_config(), selector="random", keep=published["n_kept"], safety_net=False
            )
            baseline = select_and_encode(
                published["score_urls"],
                request.reference_url,
                published["teacher_url"],
                join(out_url, "baseline-random"),
                random_cfg,
                request.max_drop_rate,
                request.codec,
            )
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
    target_test: str,
    random_payload_url: str | None = None,
    publish_flow_run_id: str | None = None,
    student: StudentRequest = StudentRequest(),
) -> dict:
    """Train the client's student on a published payload (and on its random baseline when given) and report."""
    base = payload_url.rsplit("/", 1)[0]
    tag = f"{student.model}-seed{student.seed}"
    metrics = train_student(payload_url, reference_url, target_test, join(base, "students", tag), student.to_config())
    random_metrics = None
    if random_payload_url:
        random_metrics = train_student(
            random_payload_url, reference_url, target_test, join(base, "students", f"{tag}-random"), student.to_config()
        )
    return write_student_report(join(base, "students", tag), metrics, random_metrics, publish_flow_run_id, tag)
