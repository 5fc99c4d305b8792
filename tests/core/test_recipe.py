"""The student recipe (``plada_core.recipe``): what it holds, the prediction it carries, and that the largest
one still travels in a format-3 payload."""

from __future__ import annotations

import pytest

from plada_core.auto_selection import PredictedAccuracy
from plada_core.codecs.names_section import MAX_RECIPE_BYTES, recipe_text
from plada_core.images import PreprocessConfig
from plada_core.payload import encode_payload, read_header
from plada_core.recipe import (
    RECIPE_FIELDS,
    differences,
    prediction_of,
    student_recipe,
    unknown_settings,
    with_prediction,
)
from plada_core.training import TrainConfig


def _predicted(**overrides) -> dict:
    values = dict(value=0.97218, se=0.00553, ci95=(0.95874, 0.98143), n_val=900, n_candidates=26,
                  optimism_bound=0.0123, runner_up_gap=0.002, epochs=30, proxy_value=0.9889)  # fmt: skip
    return PredictedAccuracy(**{**values, **overrides}).as_dict()


def test_the_recipe_names_the_model_its_input_and_how_to_train_it_but_not_the_seed_or_device():
    train = TrainConfig(model="plada_cnn_wide", epochs=12, batch_size=32, lr=0.01, seed=7, device="cpu", finetune=2)
    recipe = student_recipe(train, PreprocessConfig(image_size=8, channels=1, crop="content"))
    assert recipe == {"model": "plada_cnn_wide", "preprocess": {"image_size": 8, "channels": 1, "crop": "content"},
                      "train": {"epochs": 12, "batch_size": 32, "lr": 0.01, "weight_decay": 5e-4, "shift": 0.125,
                                "finetune": 2}}  # fmt: skip
    # a training setting added to TrainConfig travels too, or is named here as the client's own
    assert set(TrainConfig.__dataclass_fields__) - set(RECIPE_FIELDS) == {"model", "seed", "device"}


def test_the_prediction_is_rounded_and_nothing_measured_leaves_the_recipe_as_it_is():
    recipe = student_recipe(TrainConfig(), PreprocessConfig())
    assert with_prediction(recipe, None) is recipe
    predicted = with_prediction(recipe, _predicted())["predicted"]
    assert predicted == {"acc": 0.9722, "se": 0.0055, "ci_low": 0.9587, "ci_high": 0.9814, "n_val": 900,
                         "epochs": 30}  # fmt: skip
    assert with_prediction(recipe, _predicted(epochs=0))["predicted"]["epochs"] == 0  # epochs not recorded


def test_the_largest_recipe_with_its_prediction_travels():
    """Longest model name in use, every preprocess and training field at its widest, a prediction of long
    decimals: inside the 512 bytes a recipe may take with room for a few settings more (317 bytes), and back
    unchanged from a payload."""
    train = TrainConfig(model="plada_effnet_lite0_ml", epochs=1000, batch_size=4096, lr=0.000123456789,
                        weight_decay=0.000123456789, shift=0.123456789, finetune=7)  # fmt: skip
    recipe = with_prediction(student_recipe(train, PreprocessConfig(image_size=1024, channels=3, crop="content")),
                             _predicted(value=0.123456, se=0.0123456, ci95=(0.1011111, 0.1511111)))  # fmt: skip
    assert len(recipe_text(recipe)) <= MAX_RECIPE_BYTES - 128
    data = encode_payload([1, 5, 9], [0, 1, 2], n_reference=10, n_classes=3, fingerprint="f" * 64,
                          class_names=["a", "b", "c"], student_recipe=recipe)  # fmt: skip
    header = read_header(data)
    assert header["student_recipe"] == recipe and prediction_of(header["student_recipe"]) == recipe["predicted"]


@pytest.mark.parametrize(
    "recipe",
    [None, {"model": "m"}, {"model": "m", "predicted": 0.9}, {"model": "m", "predicted": {"acc": 0.9}},
     {"model": "m", "predicted": {"acc": "high", "ci_low": 0.8, "ci_high": 0.95}},
     {"model": "m", "predicted": {"acc": 1.5, "ci_low": 0.8, "ci_high": 0.95}},
     {"model": "m", "predicted": {"acc": True, "ci_low": 0.8, "ci_high": 0.95}}],
)  # fmt: skip
def test_a_prediction_that_is_absent_or_not_an_accuracy_reads_as_none(recipe):
    assert prediction_of(recipe) is None


def test_a_well_formed_prediction_reads_back():
    predicted = {"acc": 0.9, "ci_low": 0.8, "ci_high": 0.95, "se": 0.01, "n_val": 100, "epochs": 5}
    assert prediction_of({"model": "m", "predicted": predicted}) == predicted


def test_differences_name_model_input_and_each_training_setting_the_recipe_gives():
    recipe = student_recipe(TrainConfig(model="plada_cnn", epochs=30), PreprocessConfig(image_size=8))
    assert differences(recipe, recipe) == [] and differences(recipe, None) == []
    own = student_recipe(TrainConfig(model="plada_cnn_wide", epochs=5, lr=0.01), PreprocessConfig(image_size=16))
    assert differences(own, recipe) == ["model", "preprocess", "epochs", "lr"]
    older = {"model": "plada_cnn", "preprocess": recipe["preprocess"]}  # published before training settings travelled
    assert differences(own, older) == ["model", "preprocess"]


def test_unknown_training_settings_are_named():
    assert unknown_settings({"model": "m", "train": {"epochs": 3, "warmup": 2, "ema": 1}}) == ["ema", "warmup"]
    assert unknown_settings({"model": "m"}) == unknown_settings(None) == []
