"""Write report.json / report.md and publish the same table as Prefect artifacts."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from plada_core.io import checkpoints, layout, pool, storage
from plada_core.report import build_report, report_markdown, report_rows, student_vs_random
from tasks.common import eval_predictions


@task(cache_policy=NO_CACHE)
def write_report(
    out_url: str,
    reference_url: str,
    teacher_url: str,
    selection: dict,
    student: dict,
    random_student: dict,
    times: dict,
) -> dict:
    _, teacher = checkpoints.load_checkpoint(teacher_url)
    paired = student_vs_random(eval_predictions(student), eval_predictions(random_student))
    report = build_report(teacher, selection, student, random_student, pool.read_reference(reference_url), times,
                          student_vs_random=paired)  # fmt: skip
    markdown = report_markdown(report)
    json_url, markdown_url = layout.report_urls(out_url)
    storage.write_json(json_url, report)
    storage.write_bytes(markdown_url, markdown.encode())
    create_table_artifact(
        key="plada-report",
        table=[{k: str(v) for k, v in r.items()} for r in report_rows(report)],
        description="PLADA run: accuracy (with random baseline), payload size, wall times",
    )
    create_markdown_artifact(key="plada-report-md", markdown=markdown)
    return report
