"""The run report's markdown: the warnings a reader must not miss."""

from __future__ import annotations

from plada_core.report import REPORT_KEYS, absent_classes_markdown, report_markdown


def _report(**extra) -> dict:
    return {**dict.fromkeys(REPORT_KEYS, 0.5), "n_kept": 10, "wall_s": {}, **extra}


def test_classes_without_training_images_are_a_visible_warning():
    absent = {"classes": [0], "names": ["0"], "n_test_images": 2, "n_test": 6}
    text = report_markdown(_report(classes_without_train_images=absent))
    assert "**1 class has no training image** (['0'])" in text and "2 of 6 test images" in text
    assert absent_classes_markdown(None) == [] and "no training image" not in report_markdown(_report())


def test_the_headline_table_names_the_models():
    text = report_markdown({**_report(), "teacher_model": "plada_effnet_lite0_ml", "student_model": "plada_cnn"})
    assert "| teacher_model | plada_effnet_lite0_ml |" in text and "| student_model | plada_cnn |" in text
