"""Frozen, typed configuration for each stage that is not already owned by its own module.

Stage configs live beside their algorithms (``PreprocessConfig`` in images, ``TrainConfig`` in training,
``ScoringConfig`` in scoring, ``SelectionConfig`` in selection), each field with its default, bounds and help
in its annotation: they are the one definition the flows' request models, the Prefect forms and the ``plada``
flags are generated from (``flows/params.py``). This module composes them for the teacher and the student;
flows hand them to tasks, which save them next to their outputs.
"""

from __future__ import annotations

from dataclasses import asdict, field
from typing import Annotated

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from plada_core.images import PreprocessConfig
from plada_core.training import TrainConfig

__all__ = ["StudentConfig", "TeacherConfig", "to_dict"]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TeacherConfig:
    """Train ``train.model`` on the target train split, or load ``checkpoint`` (a URL) instead."""

    train: TrainConfig = field(default_factory=TrainConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    checkpoint: Annotated[
        str | None,
        Field(
            min_length=1,
            description="Load this teacher instead of training one: a PLADA checkpoint, or a bare state dict "
            "described by the teacher model and the preprocessing (loaded with weights_only=True).",
        ),
    ] = None


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class StudentConfig:
    """The client's recipe. The payload carries no preprocessing: the client chooses it (``plada run``
    gives the student the teacher's, so that only the data differs)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)


def to_dict(cfg) -> dict:
    return asdict(cfg)
