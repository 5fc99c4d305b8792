"""The run report: one flat dict (report.json) and the same table as markdown (report.md)."""

from __future__ import annotations

import numpy as np

from plada_core.paired import paired_difference

__all__ = [
    "REPORT_KEYS",
    "absent_classes_markdown",
    "build_report",
    "leakage_markdown",
    "report_markdown",
    "report_rows",
    "student_vs_random",
    "validation_markdown",
]

REPORT_KEYS = (
    "teacher_acc",
    "student_acc",
    "random_acc",
    "predicted_acc",
    "teacher_model",  # with teacher_model auto, the one the target's images called for
    "student_model",
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
        "classes_without_train_images": teacher.get("classes_without_train_images"),
        **_measured(selection),
        **extra,
    }


def student_vs_random(student: dict | None, random_student: dict | None) -> dict | None:
    """The PLADA student's accuracy minus the random baseline's, paired image by image (``PairedDifference``),
    from the two students' evaluation predictions (``pred``, ``label``); None when either has none (a run
    without a test split, or students trained before predictions were kept)."""
    if student is None or random_student is None:
        return None
    if not np.array_equal(student["label"], random_student["label"]):
        raise ValueError("the two students were evaluated on different test splits: they cannot be compared")
    label = student["label"]
    return paired_difference(student["pred"] == label, random_student["pred"] == label).summary()


def _measured(selection: dict) -> dict:
    """The publisher's own measurements: the validation table of the candidate selections with the predicted
    client accuracy (the winning selection's validation accuracy, see ``PredictedAccuracy``, its SE and 95 % Wilson
    interval), and the leakage check."""
    auto = selection.get("auto_selection")
    predicted = (auto or {}).get("predicted_accuracy") or {}
    return {
        "predicted_acc": predicted.get("value"),
        "predicted_acc_se": predicted.get("se"),
        "predicted_acc_ci95": predicted.get("ci95"),
        "auto_selection": auto,
        "leakage": selection.get("leakage"),
    }


def validation_markdown(auto: dict | None) -> list[str]:
    """The validation table of an ``auto_selection`` summary as markdown lines (none without one)."""
    if not auto:
        return []
    if not auto.get("predicted_accuracy"):
        return ["", f"Selection not measured: {auto.get('skipped')}"]
    p = auto["predicted_accuracy"]
    lines = ["", f"## Selection measured on a held-out validation split ({p['n_val']} images)", "",
             f"Chosen: `{auto['winner']}`; predicted client accuracy {p['value']:.4f} ± {p['se']:.4f} "
             f"(95 % CI {p['ci95'][0]:.4f}–{p['ci95'][1]:.4f}). {p['note'][:1].upper()}{p['note'][1:]}.", "",
             "| candidate | val acc | ± se | val NLL | n kept | payload bytes | chosen |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['candidate']} | {r['val_acc']:.4f} | {r['val_acc_se']:.4f} | {_nll_cell(r.get('val_nll'))} | "
              f"{r['n_kept']} | {r['payload_bytes']} | {'yes' if r['chosen'] else ''} |"
              for r in auto["candidates"]]  # fmt: skip
    return lines


def _nll_cell(nll: float | None) -> str:
    """A summary written before the NLL was recorded has none."""
    return "–" if nll is None else f"{nll:.4f}"


def leakage_markdown(leakage: dict | None) -> list[str]:
    """One line per target split: pool images that duplicate its images, and how many the selection skipped."""
    if not leakage:
        return []
    if not leakage.get("checked"):
        return ["", f"Leakage check skipped: {leakage.get('reason')}"]
    lines = ["", f"## Leakage (perceptual hash within {leakage['test']['max_hamming']} bits, or exact pixels)", ""]
    for split in ("test", "train"):
        found = leakage[split]
        lines.append(f"- target {split}: {found['pool_images_matched']} pool images match "
                     f"{found['target_images_matched']} images ({found['exact_pairs']} exact pairs, "
                     f"{found['near_pairs']} near); examples [pool index, {split} position, bits]: "
                     f"{found['examples']}")  # fmt: skip
    lines.append(f"- never selected (duplicates of test images): {leakage.get('n_excluded', 0)} pool images")
    return lines


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
    lines += _versus_random_markdown(report.get("student_vs_random"))
    lines += absent_classes_markdown(report.get("classes_without_train_images"))
    lines += validation_markdown(report.get("auto_selection")) + leakage_markdown(report.get("leakage"))
    return "\n".join(lines) + "\n"


def absent_classes_markdown(absent: dict | None) -> list[str]:
    """A warning line for the task's classes without a training image (none when every class has one)."""
    if not absent:
        return []
    n = len(absent["classes"])
    line = (f"**{n} {'class has' if n == 1 else 'classes have'} no training image** ({absent['names'][:20]}): the "
            f"teacher cannot learn them and no payload labels them; {absent['n_test_images']} of {absent['n_test']} "
            "test images are in them and count as errors.")  # fmt: skip
    return ["", line]


def _versus_random_markdown(paired: dict | None) -> list[str]:
    if not paired:
        return []
    lo, hi = paired["ci95"]
    line = (f"Student − random, paired on the same {paired['n']} test images: {100 * paired['diff']:+.2f} points "
            f"± {100 * paired['se']:.2f} (95 % CI {100 * lo:+.2f} to {100 * hi:+.2f}); {paired['a_only']} images only "
            f"the student gets right, {paired['b_only']} only the random baseline; "
            f"McNemar p = {paired['p_value']:.3g}.")
    return ["", line]
