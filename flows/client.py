"""Client side: train a student from a payload and the local pool alone; or follow a task's releases."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.params import StudentRequest
from tasks.student import resolve_release, train_student


@flow(name="train-student")
def student_run(request: StudentRequest) -> dict:
    """Train a student from ``request.payload`` into ``request.out``; returns its metrics (also in
    ``metrics.json``).

    With ``request.release`` instead: train the release's current version into ``<out>/<task>/<version>/``,
    or do nothing when it is already trained there. A request that names no student model (nor an input of its
    own) trains the student the release recommends (``student_recipe``: the publisher's proxy model and input).
    Returns ``status`` (``trained`` or ``skipped``), ``task``, ``version``, ``out`` and, when trained,
    ``student_recipe_from`` (``release`` or ``request``) and the ``metrics``.
    """
    if request.release is None:
        return _train(request, request.payload, request.out)
    plan = resolve_release(request.release, request.reference_url, request.out)
    done = {k: plan[k] for k in ("task", "version", "payload_url", "out")}
    if plan["trained"]:
        return {"status": "skipped", **done}
    request, recipe_from = request.following(plan["student_recipe"])
    get_run_logger().info("student %s at %s from the %s", request.student_model, request.preprocess, recipe_from)
    metrics = _train(request, plan["payload_url"], plan["out"])
    return {"status": "trained", **done, "student_recipe_from": recipe_from, "metrics": metrics}


def _train(request: StudentRequest, payload_url: str, out: str) -> dict:
    return train_student(payload_url, request.reference_url, out, request.student_config(), eval_spec=request.eval,
                         num_workers=request.num_workers, export=request.export)
