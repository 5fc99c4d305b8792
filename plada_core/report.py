"""The run report: one flat dict (report.json) and the same table as markdown (report.md)."""

from __future__ import annotations

__all__ = ["REPORT_KEYS", "build_report", "report_markdown", "report_rows"]

REPORT_KEYS = (
    "teacher_acc",
    "student_acc",
    "random_acc",
    "n_reference",
    "n_kept",
    "payload_bytes",
    "selector",
    "keep",
    "reference_fingerprint",
)


def build_report(
    teacher: dict, selection: dict, student: dict, random_student: dict, ref: dict, times: dict, **extra
) -> dict:
    """Flatten the stage outputs into the report; ``times`` maps stage name → wall seconds."""
    return {
        "teacher_acc": teacher.get("test_acc"),
        "student_acc": student["student_acc"],
        "random_acc": random_student["student_acc"],
        "n_reference": ref["n"],
        "n_kept": selection["n_kept"],
        "keep_reached": selection["n_kept"] / ref["n"],
        "max_payload_bytes": selection.get("max_payload_bytes"),
        "codec": selection.get("codec"),
        "payload_bytes": selection["payload_bytes"],
        "selector": selection["selection"]["selector"],
        "safety_net": selection["selection"]["safety_net"],
        "keep": selection["selection"]["keep"],
        "seed": selection["selection"]["seed"],
        "reference_fingerprint": ref["fingerprint"],
        "n_dropped": selection["drops"]["n_dropped"],
        "n_missing_at_client": student["n_missing"],
        "class_histogram": selection["class_histogram"],
        "teacher_model": teacher.get("model"),
        "student_model": student["config"]["train"]["model"],
        "wall_s": {k: round(v, 2) for k, v in times.items()},
        **extra,
    }


def report_rows(report: dict) -> list[dict]:
    """The headline table as rows of {metric, value}: what the markdown and the Prefect artifact show."""
    rows = [{"metric": k, "value": report[k]} for k in REPORT_KEYS]
    rows += [{"metric": f"wall_s.{k}", "value": v} for k, v in report["wall_s"].items()]
    return rows


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def report_markdown(report: dict, title: str = "PLADA run") -> str:
    lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {row['metric']} | {_fmt(row['value'])} |" for row in report_rows(report)]
    lines += [
        "",
        f"`random_acc` is the same student recipe trained on a random selection of the same size "
        f"({report['n_kept']} images) with the same seed.",
    ]
    return "\n".join(lines) + "\n"
