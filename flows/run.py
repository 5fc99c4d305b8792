"""The whole loop for given sources: pool → publish → student, and the same student on a random selection."""

from __future__ import annotations

import dataclasses
import time

from prefect import flow

from flows.publish import publish
from flows.runners import RunnerSpec, make_task_runner
from flows.train_student import train_student
from plada_core.config import StudentConfig, TeacherConfig
from plada_core.io.storage import join
from plada_core.scoring import ScoringConfig
from plada_core.selection import SelectionConfig
from tasks.reference import build_reference_pool
from tasks.report import write_report
from tasks.select import select_and_encode


@flow(name="plada-run")
def plada_run(
    references: list[str],
    target_train: str,
    target_test: str,
    out_url: str,
    teacher: TeacherConfig = TeacherConfig(),
    scoring: ScoringConfig = ScoringConfig(),
    selection: SelectionConfig = SelectionConfig(),
    student: StudentConfig = StudentConfig(),
    shard_size: int = 4096,
    runner: RunnerSpec = RunnerSpec(),
    codec: str = "paper-zstd19",
    max_payload_bytes: int | None = None,
) -> dict:
    """Run PLADA end to end and write ``report.json`` / ``report.md`` under ``out_url``.

    ``max_payload_bytes`` turns on budget mode: the largest selection whose payload fits replaces ``keep``.
    """
    times, clock = {}, time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        times[stage] = time.perf_counter() - clock
        clock = time.perf_counter()

    reference_url = build_reference_pool(references, join(out_url, "reference"), shard_size)
    lap("reference")
    published = publish.with_options(task_runner=make_task_runner(runner))(
        reference_url, target_train, target_test, join(out_url, "publish"), teacher, scoring, selection, codec,
        max_payload_bytes,
    )
    lap("publish")
    times.update({f"publish.{k}": v for k, v in published["wall_s"].items()})
    # The baseline: same size, same seed, uniform over the pool, no Safety-Net.
    random_cfg = dataclasses.replace(selection, selector="random", keep=published["n_kept"], safety_net=False)
    baseline = select_and_encode(
        published["score_urls"],
        reference_url,
        published["teacher_url"],
        join(out_url, "baseline-random"),
        random_cfg,
        scoring.max_drop_rate,
        codec,
    )
    lap("random_selection")
    plada_student = train_student(published["payload"], reference_url, target_test, join(out_url, "student"), student)
    lap("student")
    random_student = train_student(
        baseline["payload"], reference_url, target_test, join(out_url, "student-random"), student
    )
    lap("random_student")
    return write_report(
        out_url, reference_url, published["teacher_url"], published, plada_student, random_student, times
    )
