"""A split's labels as the task's class ids: mapped by name where both sides name their classes, checked always."""

from __future__ import annotations

import numpy as np
import pytest

from plada_core.datasets import task_labels

TASK = ["cat", "dog", "fox"]


def test_same_names_keep_the_ids():
    assert task_labels(np.array([0, 2, 1]), TASK, TASK, "s").tolist() == [0, 2, 1]


def test_a_split_lacking_a_class_is_mapped_by_name():
    """An image folder without dog/ numbers fox 1: it is the task's class 2."""
    assert task_labels(np.array([0, 1, 1]), ["cat", "fox"], TASK, "s").tolist() == [0, 2, 2]
    assert task_labels(np.array([0, 1]), ("fox", "cat"), tuple(TASK), "s").tolist() == [2, 0]


def test_a_class_the_task_lacks_is_named():
    with pytest.raises(ValueError, match=r"test: classes \['wolf'\] are not among the task's 3 classes"):
        task_labels(np.array([0, 1]), ["cat", "wolf"], TASK, "test")
    assert task_labels(np.array([0]), ["cat", "wolf"], TASK, "s").tolist() == [0], "an unused name is no error"


def test_numbered_classes_are_ids_and_must_lie_in_the_task():
    assert task_labels(np.array([2, 0]), ["0", "1", "2"], TASK, "s").tolist() == [2, 0]
    assert task_labels(np.array([1]), ["a", "b"], ["0", "1", "2"], "s").tolist() == [1]
    with pytest.raises(ValueError, match=r"s: 1 of 2 labels lie outside the task's 3 classes \(0..2\), e.g. \[3\]"):
        task_labels(np.array([3, 0]), [str(i) for i in range(4)], TASK, "s")
