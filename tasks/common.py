"""Shared plumbing for task adapters: torch threads, logging, target splits."""

from __future__ import annotations

import logging
import os

from prefect.logging import get_run_logger
from prefect.exceptions import MissingContextError

from plada_core.datasets import labelled_tensors
from plada_core.images import PreprocessConfig
from plada_core.io.sources import open_source
from plada_core.training import configure_torch

__all__ = ["load_split", "logger", "setup_torch"]


def logger() -> logging.Logger:
    """The Prefect run logger inside a run, a plain logger when a task body is called directly."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("plada")


def setup_torch() -> None:
    """Threads per task from PLADA_TORCH_THREADS (flows set it to cores / parallel tasks)."""
    configure_torch(int(os.environ.get("PLADA_TORCH_THREADS", "0")) or None)


def load_split(spec: str, cfg: PreprocessConfig):
    """(x, y, class_names) of a labelled split, preprocessed with ``cfg``."""
    source = open_source(spec)
    images, labels = source.load_arrays()
    x, y = labelled_tensors(images, labels, cfg)
    return x, y, list(source.class_names)
