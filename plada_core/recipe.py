"""The student recipe: which student a publisher recommends and how well it expects that student to do.

A client holds only its pool and the payload, so the payload (format 3, ``plada_core.codecs.names_section``)
and the release record carry the recipe as a small JSON object:

- ``model`` and ``preprocess``: the student network and its input;
- ``train``: how to train it (``RECIPE_FIELDS`` of a ``TrainConfig``; the seed and the device are each
  client's own);
- ``predicted`` (once the publisher has measured it): the accuracy the publisher expects that student to reach on
  the task, a validation accuracy with its SE and 95 % interval (``plada_core.auto_selection``), so that a
  partner with nothing but the payload knows what to expect.

A client that follows the recipe trains exactly the student the prediction is about (``flows.params``).
"""

from __future__ import annotations

from plada_core.config import to_dict
from plada_core.images import PreprocessConfig
from plada_core.training import TrainConfig

__all__ = ["RECIPE_FIELDS", "differences", "prediction_of", "reserving_prediction", "student_recipe",
           "unknown_settings", "with_prediction"]

RECIPE_FIELDS = ("epochs", "batch_size", "lr", "weight_decay", "shift", "finetune")
"""The fields of a ``TrainConfig`` that say how a model is trained, as a recipe's ``train`` carries them."""

_DIGITS = 4  # a prediction's decimals: finer than any validation split resolves, and a few bytes each
# As long as any prediction in JSON (4 decimals, under a million validation images, at most 1,000 epochs); varied
# digits, so that a Zstd-compressed section does not come out shorter than with a real one.
_WIDEST = {"value": 0.1234, "se": 0.5678, "ci95": (0.9012, 0.3456), "n_val": 987_654, "epochs": 1000}


def student_recipe(train: TrainConfig, preprocess: PreprocessConfig | None) -> dict:
    """The recipe of the student ``train`` describes (its model and training settings) on ``preprocess``."""
    return {"model": train.model, "preprocess": to_dict(preprocess),
            "train": {name: getattr(train, name) for name in RECIPE_FIELDS}}  # fmt: skip


def with_prediction(recipe: dict, predicted: dict | None) -> dict:
    """``recipe`` with the publisher's prediction for its student under ``predicted``: ``acc``, ``se``,
    ``ci_low``/``ci_high`` (95 %), ``n_val`` (validation images) and ``epochs`` (of the student that scored it), from
    an ``AutoChoice``'s ``predicted_accuracy`` (rounded to 4 decimals: about 70 bytes of JSON). ``recipe`` as it is
    when nothing was measured (``predicted`` None)."""
    if not predicted:
        return recipe
    low, high = predicted["ci95"]
    return {**recipe, "predicted": {
        "acc": round(predicted["value"], _DIGITS), "se": round(predicted["se"], _DIGITS),
        "ci_low": round(low, _DIGITS), "ci_high": round(high, _DIGITS), "n_val": int(predicted["n_val"]),
        "epochs": int(predicted.get("epochs") or 0),
    }}  # fmt: skip


def reserving_prediction(recipe: dict) -> dict:
    """``recipe`` with a stand-in prediction at least as long as the real one will be: what sizes a payload
    before the prediction is known (the candidates under a byte budget, ``tasks.auto_select``), so that the
    published payload, prediction included, holds about as many images as the candidate that won."""
    return with_prediction(recipe, _WIDEST)


def prediction_of(recipe: dict | None) -> dict | None:
    """The ``predicted`` entry of a recipe read from a payload or a release (untrusted): None when there is none
    or when ``acc``, ``ci_low`` or ``ci_high`` is not a number in [0, 1] (a payload from another tool, say)."""
    predicted = (recipe or {}).get("predicted")
    if not isinstance(predicted, dict):
        return None
    numbers = [predicted.get(key) for key in ("acc", "ci_low", "ci_high")]
    ok = all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for v in numbers)
    return predicted if ok else None


def unknown_settings(recipe: dict | None) -> list[str]:
    """The training settings of a publisher's ``recipe`` that are not ``RECIPE_FIELDS`` (a newer publisher's),
    sorted: a client trains without them and reports them."""
    return sorted(set((recipe or {}).get("train") or {}) - set(RECIPE_FIELDS))


def differences(trained: dict, recipe: dict | None) -> list[str]:
    """Where ``trained`` (the ``student_recipe`` of the student a client trains) differs from the publisher's
    ``recipe``, whose accuracy was predicted: ``model``, ``preprocess`` and each training setting the recipe names
    (``RECIPE_FIELDS`` order); empty when it is the recipe's student, or there is no recipe."""
    if not recipe:
        return []
    train = recipe.get("train") or {}
    differ = [key for key in ("model", "preprocess") if trained[key] != recipe.get(key)]
    return differ + [name for name in RECIPE_FIELDS if name in train and trained["train"][name] != train[name]]
