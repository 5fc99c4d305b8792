"""The whole loop for given sources: pool → publish → student, and the same student on a random selection."""

from __future__ import annotations

import time

from prefect import flow

from flows.client import student_run
from flows.params import RunRequest
from flows.publish import random_baseline, run_publish
from plada_core.io.storage import join
from tasks.reference import build_reference_pool
from tasks.report import write_report


@flow(name="plada-run")
def plada_run(request: RunRequest) -> dict:
    """Run PLADA end to end and write ``report.json`` / ``report.md`` under ``request.out``.

    ``max_payload_bytes`` turns on budget mode: the largest selection whose payload fits replaces ``keep``.
    """
    times, clock = {}, time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        times[stage] = time.perf_counter() - clock
        clock = time.perf_counter()

    out = request.out
    reference_url = build_reference_pool(request.references, join(out, "reference"), request.shard_size)
    lap("reference")
    publishing = request.publish_request(reference_url, join(out, "publish"))
    published = run_publish(publishing)
    lap("publish")
    times.update({f"publish.{k}": v for k, v in published["wall_s"].items()})
    baseline = random_baseline(publishing, published, join(out, "baseline-random"))
    lap("random_selection")
    plada_student = student_run(request.student_request(published["payload"], reference_url, join(out, "student")))
    lap("student")
    random_student = student_run(
        request.student_request(baseline["payload"], reference_url, join(out, "student-random"))
    )
    lap("random_student")
    return write_report(
        out, reference_url, published["teacher_url"], published, plada_student, random_student, times
    )
