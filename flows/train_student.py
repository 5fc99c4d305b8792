"""Client side: decode the payload against the local pool, train a student, evaluate it."""

from __future__ import annotations

from prefect import flow

from plada_core.config import StudentConfig
from tasks.student import train_student as train_student_task


@flow(name="train-student")
def train_student(
    payload_url: str, reference_url: str, target_test: str, out_url: str, student: StudentConfig = StudentConfig()
) -> dict:
    """Train and evaluate a student from ``payload_url``; returns its metrics (also in ``out_url``/metrics.json)."""
    return train_student_task(payload_url, reference_url, target_test, out_url, student)
