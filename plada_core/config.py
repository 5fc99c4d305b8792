"""Frozen, typed configuration for each stage that is not already owned by its own module.

Stage configs live beside their algorithms (``PreprocessConfig`` in images, ``TrainConfig`` in training,
``ScoringConfig`` in scoring, ``SelectionConfig`` in selection); this module composes them for the teacher
and the student and is what flows take as parameters and save next to their outputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from plada_core.images import PreprocessConfig
from plada_core.training import TrainConfig

__all__ = ["StudentConfig", "TeacherConfig", "to_dict"]


@dataclass(frozen=True)
class TeacherConfig:
    """Train ``train.model`` on the target train split, or load ``checkpoint`` (a URL) instead."""

    train: TrainConfig = field(default_factory=TrainConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    checkpoint: str | None = None


@dataclass(frozen=True)
class StudentConfig:
    """The client's recipe. The payload carries no preprocessing: the client chooses it (``plada run``
    gives the student the teacher's, so that only the data differs)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)


def to_dict(cfg) -> dict:
    return asdict(cfg)
