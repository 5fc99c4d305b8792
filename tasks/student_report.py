"""Client-side report of a triggered student run, linked to the publish run that produced the payload."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from plada_core.io import storage


@task(cache_policy=NO_CACHE)
def write_student_report(
    out_url: str, metrics: dict, random_metrics: dict | None, publish_flow_run_id: str | None
) -> dict:
    """Write ``student_report.json`` next to the student and publish table + markdown artifacts."""
    report = {
        "student_acc": metrics["student_acc"],
        "random_acc": random_metrics["student_acc"] if random_metrics else None,
        "n_kept": metrics["n_train"] + metrics["n_missing"],
        "n_missing": metrics["n_missing"],
        "payload_bytes": metrics["payload_bytes"],
        "payload_url": metrics["payload_url"],
        "student_model": metrics["config"]["train"]["model"],
        "publish_flow_run_id": publish_flow_run_id,
    }
    storage.write_json(storage.join(out_url, "student_report.json"), report)
    create_table_artifact(
        key="plada-student",
        table=[{"metric": k, "value": str(v)} for k, v in report.items()],
        description="Student trained on a PLADA payload, beside the random baseline",
    )
    link = f"[publish run](/runs/flow-run/{publish_flow_run_id})" if publish_flow_run_id else "a manual payload"
    random = f"{report['random_acc']:.4f}" if report["random_acc"] is not None else "n/a"
    create_markdown_artifact(
        key="plada-student-md",
        markdown=f"# Student on `{report['payload_url']}`\n\nFrom {link}.\n\n| student_acc | random_acc | payload_bytes |"
        f"\n|---|---|---|\n| {report['student_acc']:.4f} | {random} | {report['payload_bytes']} |\n",
    )
    return report
