"""Shared plumbing for task adapters: torch threads, logging, target splits, a teacher's target bank."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from plada_core.datasets import check_label_range, labelled_tensors, task_labels
from plada_core.images import PreprocessConfig
from plada_core.io import layout, storage
from plada_core.io.arrays import read_npz
from plada_core.io.sources import open_source
from plada_core.relevance import TargetBank
from plada_core.training import configure_torch

__all__ = ["load_bank", "load_split", "logger", "one_writer", "setup_torch"]


def logger() -> logging.Logger:
    """The Prefect run logger inside a run, a plain logger when a task body is called directly."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("plada")


_writers: dict[str, threading.Lock] = {}
_writers_guard = threading.Lock()


def one_writer(url: str) -> threading.Lock:
    """The lock of one output URL in this process. Publish runs side by side (a catalog's tasks) may share a
    content-addressed teacher or scoring folder: the second waits for the first, then finds the output and
    reuses it. (Processes are not covered: there both may compute it, and on the CPU both write the same bytes.)"""
    with _writers_guard:
        return _writers.setdefault(url, threading.Lock())


def setup_torch(parallel: bool = False) -> None:
    """Pin torch threads: all cores for training, ``PLADA_SCORING_THREADS`` for tasks that run side by side
    (the CLI sets it to cores / workers: oversubscribed OpenMP threads were 10-70x slower on small ops).
    ``PLADA_TORCH_THREADS`` overrides both."""
    default = os.cpu_count() or 1
    if parallel:
        default = int(os.environ.get("PLADA_SCORING_THREADS", default))
    configure_torch(int(os.environ.get("PLADA_TORCH_THREADS", default)))


def load_split(spec: str, cfg: PreprocessConfig, task_classes: Sequence[str] | int | None = None):
    """(x, y, class_names) of a labelled split, preprocessed with ``cfg``. With ``task_classes`` (the task's class
    names, or only their count when the task names none) the labels are the task's class ids
    (``plada_core.datasets.task_labels``: mapped by name where the split names its classes differently), and a
    class or label the task does not have raises, naming the split. Images are decoded and preprocessed one at a
    time: a split of large photos never sits in memory at native size."""
    source = open_source(spec)
    source.require_labels()
    labels = source.labels()
    if isinstance(task_classes, int):
        check_label_range(labels, task_classes, spec)
    elif task_classes is not None:
        labels = task_labels(labels, source.class_names, task_classes, spec)
    x, y = labelled_tensors(source.iter_images(), labels, cfg)
    return x, y, list(source.class_names)


def load_bank(teacher_url: str) -> TargetBank | None:
    """The teacher's target bank, or None for a teacher published before banks existed."""
    url = layout.bank_url(teacher_url)
    return TargetBank.from_bytes(storage.read_bytes(url)) if storage.exists(url) else None


def eval_predictions(metrics: dict | None) -> dict | None:
    """A student's per-image evaluation predictions (``pred``, ``label``), when its metrics point at them."""
    url = (metrics or {}).get("eval_predictions")
    return read_npz(url) if url and storage.exists(url) else None
