"""Publisher-side report of a release: teacher accuracy, kept images, payload bytes (students come later)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from plada_core.io import checkpoints, layout, storage
from plada_core.report import absent_classes_markdown


@task(cache_policy=NO_CACHE)
def write_publish_report(out_url: str, published: dict, baseline: dict, request: dict) -> dict:
    """Write ``publish_report.json`` and publish a table artifact; returns the report."""
    _, teacher = checkpoints.load_checkpoint(published["teacher_url"])
    report = {
        "teacher_acc": teacher.get("test_acc"),
        "teacher_model": teacher.get("model"),
        "classes_without_train_images": teacher.get("classes_without_train_images"),
        "n_reference": published["n_reference"],
        "n_kept": published["n_kept"],
        "keep_reached": published["n_kept"] / published["n_reference"],
        "payload_bytes": published["payload_bytes"],
        "selector": published["selection"]["selector"],
        "safety_net": published["selection"]["safety_net"],
        # the client's expected accuracy: the chosen selection's proxy student on the held-out validation split
        "predicted_acc": (published.get("auto_selection") or {}).get("predicted_accuracy"),
        "auto_selection": published.get("auto_selection"),
        "leakage": published.get("leakage"),
        "n_dropped": published["drops"]["n_dropped"],
        "payload_url": published["payload"],
        "random_payload_url": baseline["payload"],
        "wall_s": {k: round(v, 2) for k, v in published["wall_s"].items()},
        "request": request,
    }
    storage.write_json(layout.publish_report_url(out_url), report)
    rows = [
        {"metric": k, "value": str(report[k])}
        for k in ("teacher_acc", "n_reference", "n_kept", "keep_reached", "payload_bytes", "selector", "payload_url")
    ]
    if report["predicted_acc"]:
        p = report["predicted_acc"]
        rows.append({"metric": "predicted_acc", "value": f"{p['value']:.4f} ± {p['se']:.4f} (95 % CI "
                     f"{p['ci95'][0]:.4f}–{p['ci95'][1]:.4f}, {p['n_val']} validation images)"})  # fmt: skip
    create_table_artifact(key="plada-publish", table=rows, description=f"Release at {out_url}")
    create_markdown_artifact(
        key="plada-publish-md",
        markdown=f"# Published `{out_url}`\n\nPayload: `{report['payload_url']}` ({report['payload_bytes']} bytes, "
        f"{report['n_kept']} of {report['n_reference']} images). Teacher accuracy {report['teacher_acc']:.4f}.\n"
        "Student accuracy appears on the triggered **train-student** run.\n"
        + "\n".join(absent_classes_markdown(report["classes_without_train_images"])),
    )
    return report
