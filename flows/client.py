"""Client side: train a student from a payload and the local pool alone; or follow a task's releases."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.params import StudentRequest
from tasks.student import payload_student_recipe, resolve_release, train_student


@flow(name="train-student")
def student_run(request: StudentRequest) -> dict:
    """Train a student from ``request.payload`` into ``request.out``; returns its metrics (also in
    ``metrics.json``) and ``student_recipe_from``.

    With ``request.release`` instead: train the release's current version into ``<out>/<task>/<version>/``,
    or do nothing when it is already trained there; returns ``status`` (``trained`` or ``skipped``), ``task``,
    ``version``, ``out`` and, when trained, ``student_recipe_from`` and the ``metrics``.

    A request that names no student model (nor an input of its own) trains the student the publisher
    recommends (``student_recipe``: its proxy model and input), from the release record or else the payload
    (format 3); ``student_recipe_from`` says ``release``, ``payload`` or ``request``.
    """
    if request.release is None:
        request, recipe_from = _following(request, None, request.payload)
        return {**_train(request, request.payload, request.out), "student_recipe_from": recipe_from}
    plan = resolve_release(request.release, request.reference_url, request.out)
    done = {k: plan[k] for k in ("task", "version", "payload_url", "out")}
    if plan["trained"]:
        return {"status": "skipped", **done}
    request, recipe_from = _following(request, plan["student_recipe"], plan["payload_url"])
    metrics = _train(request, plan["payload_url"], plan["out"])
    return {"status": "trained", **done, "student_recipe_from": recipe_from, "metrics": metrics}


def _following(request: StudentRequest, released: dict | None, payload_url: str) -> tuple[StudentRequest, str]:
    if released:
        request, recipe_from = request.following(released, "release")
    else:
        request, recipe_from = request.following(payload_student_recipe(payload_url), "payload")
    get_run_logger().info("student %s at %s from the %s", request.student_model, request.preprocess, recipe_from)
    return request, recipe_from


def _train(request: StudentRequest, payload_url: str, out: str) -> dict:
    return train_student(payload_url, request.reference_url, out, request.student_config(), eval_spec=request.eval,
                         num_workers=request.num_workers, export=request.export)
