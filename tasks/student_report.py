"""Client-side report of a triggered student run, linked to the publish run that produced the payload."""

from __future__ import annotations

import base64

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from plada_core.io import layout, releases, storage
from plada_core.plots import accuracy_vs_payload_png
from plada_core.report import student_vs_random
from tasks.common import eval_predictions


def _history_plot(report: dict, out_url: str, student_tag: str) -> str:
    """Markdown with accuracy vs payload size over every version of the task (written as PNG too)."""
    release = releases.release_of(report["payload_url"])
    if release is None:
        return ""
    rows = [{**r, "label": r["version"]} for r in releases.student_reports(*release, student_tag)
            if r.get("student_acc") is not None]  # runs without a test split have no accuracy to plot
    if not rows:
        return ""
    png = accuracy_vs_payload_png(rows, title=f"{release[1]}: student accuracy vs payload ({len(rows)} releases)")
    storage.write_bytes(layout.student_plot_url(out_url), png)
    return f"\n![accuracy vs payload](data:image/png;base64,{base64.b64encode(png).decode()})\n"


@task(cache_policy=NO_CACHE)
def write_student_report(
    out_url: str, metrics: dict, random_metrics: dict | None, publish_flow_run_id: str | None, student_tag: str = ""
) -> dict:
    """Write ``student_report.json`` (+ a plot over the task's releases) and publish table + markdown artifacts."""
    report = {
        "student_acc": metrics["student_acc"],
        "random_acc": random_metrics["student_acc"] if random_metrics else None,
        "n_kept": metrics["n_train"] + metrics["n_missing"],
        "n_missing": metrics["n_missing"],
        "payload_bytes": metrics["payload_bytes"],
        "payload_url": metrics["payload_url"],
        "student_model": metrics["config"]["train"]["model"],
        "publish_flow_run_id": publish_flow_run_id,
        "student_vs_random": student_vs_random(eval_predictions(metrics), eval_predictions(random_metrics)),
    }
    storage.write_json(layout.student_report_url(out_url), report)
    create_table_artifact(
        key="plada-student",
        table=[{"metric": k, "value": str(v)} for k, v in report.items()],
        description="Student trained on a PLADA payload, beside the random baseline",
    )
    link = f"[publish run](/runs/flow-run/{publish_flow_run_id})" if publish_flow_run_id else "a manual payload"
    random = f"{report['random_acc']:.4f}" if report["random_acc"] is not None else "n/a"
    student = f"{report['student_acc']:.4f}" if report["student_acc"] is not None else "n/a (no test split)"
    create_markdown_artifact(
        key="plada-student-md",
        markdown=f"# Student on `{report['payload_url']}`\n\nFrom {link}.\n\n| student_acc | random_acc | "
        f"payload_bytes |\n|---|---|---|\n| {student} | {random} | {report['payload_bytes']} |\n"
        + _history_plot(report, out_url, student_tag),
    )
    return report
