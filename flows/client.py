"""Client side: train a student from a payload and the local pool alone; or follow a task's releases."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.params import StudentRequest
from plada_core.recipe import differences, prediction_of, student_recipe, unknown_settings
from tasks.student import payload_student_recipe, resolve_release, train_student


@flow(name="train-student")
def student_run(request: StudentRequest) -> dict:
    """Train a student from ``request.payload`` into ``request.out``; returns its metrics (also in
    ``metrics.json``), ``student_recipe_from``, ``recipe_ignored``, ``differs_from_recipe`` and
    ``publisher_prediction``.

    With ``request.release`` instead: train the release's current version into ``<out>/<task>/<version>/``,
    or do nothing when it is already trained there; returns ``status`` (``trained`` or ``skipped``), ``task``,
    ``version``, ``out`` and, when trained, those four and the ``metrics``.

    A request that names no student model (nor an input of its own) trains the student the publisher
    recommends (``student_recipe``: its proxy model, input and training settings; a flag the request set itself,
    such as ``--student-epochs``, wins), from the release record or else the payload (format 3);
    ``student_recipe_from`` says ``release``, ``payload`` or ``request``; ``recipe_ignored`` lists the
    recipe's training settings this installation does not know (trained without them), with a warning, and
    ``differs_from_recipe`` where the student trained differs from the recipe's (``model``, ``preprocess``,
    training settings; a warning when a recipe was followed with flags of the request's own).
    ``publisher_prediction`` is the accuracy the publisher expects the recipe's student to reach
    (``plada_core.recipe``; None when the recipe has none): it is about this student only when
    ``differs_from_recipe`` is empty.
    """
    if request.release is None:
        request, followed = _following(request, None, request.payload)
        return {**_train(request, request.payload, request.out), **followed}
    plan = resolve_release(request.release, request.reference_url, request.out)
    done = {k: plan[k] for k in ("task", "version", "payload_url", "out")}
    if plan["trained"]:
        return {"status": "skipped", **done}
    request, followed = _following(request, plan["student_recipe"], plan["payload_url"])
    metrics = _train(request, plan["payload_url"], plan["out"])
    return {"status": "trained", **done, **followed, "metrics": metrics}


def _following(request: StudentRequest, released: dict | None, payload_url: str) -> tuple[StudentRequest, dict]:
    recipe, source = (released, "release") if released else (payload_student_recipe(payload_url), "payload")
    request, recipe_from = request.following(recipe, source)
    record = {"student_recipe_from": recipe_from,
              "recipe_ignored": unknown_settings(recipe) if recipe_from != "request" else [],
              "differs_from_recipe": differences(student_recipe(request.student_config().train, request.preprocess),
                                                 recipe),
              "publisher_prediction": prediction_of(recipe)}  # fmt: skip
    _log_following(request, source, record)
    return request, record


def _log_following(request: StudentRequest, source: str, record: dict) -> None:
    logger = get_run_logger()
    logger.info("student %s at %s, %d epochs (batch %d, lr %g), from the %s", request.student_model,
                request.preprocess, request.student_epochs, request.student_batch_size, request.student_lr,
                record["student_recipe_from"])  # fmt: skip
    if record["recipe_ignored"]:
        logger.warning("the %s's recipe sets %s, which this PLADA version does not know: trained without them "
                       "(upgrade PLADA to follow the whole recipe)", source,
                       ", ".join(record["recipe_ignored"]))  # fmt: skip
    differs = ", ".join(record["differs_from_recipe"])
    if differs and record["student_recipe_from"] != "request":  # following the recipe, with flags of its own
        logger.warning("%s set here, not as the %s's recipe says: the predicted accuracy is about the recipe's "
                       "student, not this one", differs, source)  # fmt: skip
    if predicted := record["publisher_prediction"]:
        logger.info("the %s predicts %.4f (95 %% CI %.4f-%.4f) for %s", source, predicted["acc"], predicted["ci_low"],
                    predicted["ci_high"], f"the recipe's student; this one differs in {differs}" if differs
                    else "this student")  # fmt: skip


def _train(request: StudentRequest, payload_url: str, out: str) -> dict:
    return train_student(payload_url, request.reference_url, out, request.student_config(), eval_spec=request.eval,
                         num_workers=request.num_workers, export=request.export)
