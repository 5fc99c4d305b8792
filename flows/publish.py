"""Publisher side: teacher → score every shard (mapped, in parallel) → select → manifest + payload."""

from __future__ import annotations

import time

from prefect import flow, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from plada_core.config import TeacherConfig
from plada_core.io.storage import join
from plada_core.scoring import ScoringConfig
from plada_core.selection import SelectionConfig
from tasks.score import score_shard
from tasks.select import select_and_encode
from tasks.shards import plan_shards
from tasks.teacher import train_teacher


@flow(name="publish", task_runner=ThreadPoolTaskRunner(max_workers=2))
def publish(
    reference_url: str,
    target_train: str,
    target_test: str,
    out_url: str,
    teacher: TeacherConfig = TeacherConfig(),
    scoring: ScoringConfig = ScoringConfig(),
    selection: SelectionConfig = SelectionConfig(),
    codec: str = "paper-zstd19",
    max_payload_bytes: int | None = None,
) -> dict:
    """Publish a task as a payload under ``out_url``; returns the selection summary plus teacher and score URLs."""
    start = time.perf_counter()
    teacher_url = train_teacher(target_train, target_test, join(out_url, "teacher"), teacher)
    teacher_s = time.perf_counter() - start
    shards = plan_shards(reference_url)
    futures = score_shard.map(
        [s["url"] for s in shards],
        [s["n"] for s in shards],
        unmapped(teacher_url),
        unmapped(out_url),
        unmapped(scoring),
    )
    score_urls = futures.result()
    scoring_s = time.perf_counter() - start - teacher_s
    summary = select_and_encode(
        score_urls, reference_url, teacher_url, out_url, selection, scoring.max_drop_rate, codec, max_payload_bytes
    )
    wall_s = {
        "teacher": teacher_s,
        "scoring": scoring_s,
        "selection": time.perf_counter() - start - teacher_s - scoring_s,
    }
    return {**summary, "teacher_url": teacher_url, "score_urls": score_urls, "wall_s": wall_s}
