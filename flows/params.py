"""Typed, bounded, documented flow parameters: what the Prefect UI renders as a form.

Deployments take these pydantic models; Prefect validates them against the model's JSON schema when a
run is created, so a bad value is refused before any work starts, with the field named. Each model turns
into the frozen ``plada_core`` configs with ``to_*`` methods.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from plada_core.config import StudentConfig, TeacherConfig
from plada_core.devices import check_device
from plada_core.images import PreprocessConfig
from plada_core.payload import HEADER_SIZE
from plada_core.scoring import ScoringConfig
from plada_core.selection import SelectionConfig
from plada_core.training import TrainConfig

__all__ = ["PreprocessParams", "PublishRequest", "StudentRequest"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


def _checked_device(device: str) -> str:
    check_device(device)  # only the spelling: "auto" is decided by the worker that runs the flow
    return device


Device = Annotated[
    str,
    AfterValidator(_checked_device),
    Field(min_length=1, description="Where models train and score: auto (a GPU when the worker has one), cpu, cuda:1, …"),
]


class PreprocessParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    image_size: int = Field(16, ge=4, le=1024, description="Side of the square model input, in pixels.")
    channels: Literal[1, 3] = Field(1, description="1 = grayscale, 3 = RGB.")
    crop: Literal["none", "content"] = Field(
        "none", description="'content' crops to the object's bounding box first (objects on dark backgrounds)."
    )

    def to_config(self) -> PreprocessConfig:
        return PreprocessConfig(image_size=self.image_size, channels=self.channels, crop=self.crop)


class PublishRequest(BaseModel):
    """Publish one task release: teacher → scores → selection → manifest + payload under
    ``<root_url>/tasks/<task>/<version>/``; ``latest`` moves only when everything is written."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str = Field(..., pattern=NAME_PATTERN, description="Task name: a path segment of the release URL.")
    version: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="Release version. Empty: the run's scheduled date (YYYY-MM-DD), so re-running a night is idempotent.",
    )
    root_url: str = Field(..., min_length=1, description="Where releases live (path, file:// or s3:// URL).")
    reference_url: str = Field(..., min_length=1, description="The reference pool (made by `plada reference build`).")
    target_train: str = Field(..., min_length=1, description="Source spec of the labelled target train split.")
    target_test: str = Field(..., min_length=1, description="Source spec of the target test split.")
    keep: float = Field(0.1, gt=0, description="Fraction of the pool in (0, 1], or a whole count > 1.")
    selector: Literal[
        "energy", "opposite_energy", "entropy", "random", "knn", "knn_agree", "knn_cover", "knn_sample", "auto_energy"
    ] = Field("energy", description="Selection rule (energy: the paper; knn_sample: never below random in benchmarks).")
    safety_net: bool = Field(True, description="Per-class quota K_c ∝ N_c^alpha over predicted classes.")
    alpha: float = Field(0.5, ge=-4, le=4, description="Safety-Net exponent.")
    temperature: float = Field(1.0, gt=0, le=100, description="Energy temperature T.")
    max_drop_rate: float = Field(0.01, ge=0, le=1, description="Fail above this fraction of unscorable pool images.")
    codec: Literal["paper-zstd19", "context-rc", "context-rc2", "layout-rc", "auto"] = Field(
        "paper-zstd19",
        description="Payload codec (paper-zstd19: the paper's; layout-rc: smallest on pools stored class by class; "
        "auto: the smallest payload of all).",
    )
    max_payload_bytes: int | None = Field(
        None, ge=HEADER_SIZE, description="Budget mode: keep the largest selection whose payload fits (replaces keep)."
    )
    seed: int = Field(0, ge=0, description="Seed of teacher training and selection.")
    teacher_model: str = Field("plada_cnn", min_length=1, description="timm model name of the teacher.")
    teacher_epochs: int = Field(30, ge=1, le=1000, description="Teacher training epochs.")
    device: Device = "auto"
    preprocess: PreprocessParams = Field(default_factory=PreprocessParams)

    @field_validator("keep")
    @classmethod
    def _whole_count_above_one(cls, keep: float) -> float | int:
        if keep > 1:
            if keep != int(keep):
                raise ValueError(f"keep above 1 is a count of images and must be whole, got {keep}")
            return int(keep)
        return keep

    def teacher_config(self) -> TeacherConfig:
        train = TrainConfig(model=self.teacher_model, epochs=self.teacher_epochs, seed=self.seed, device=self.device)
        return TeacherConfig(train=train, preprocess=self.preprocess.to_config())

    def scoring_config(self) -> ScoringConfig:
        return ScoringConfig(temperature=self.temperature, max_drop_rate=self.max_drop_rate, device=self.device)

    def selection_config(self) -> SelectionConfig:
        return SelectionConfig(
            selector=self.selector, keep=self.keep, safety_net=self.safety_net, alpha=self.alpha, seed=self.seed
        )


class StudentRequest(BaseModel):
    """The client's student recipe."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field("plada_cnn", min_length=1, description="timm model name of the student.")
    epochs: int = Field(30, ge=1, le=1000, description="Student training epochs.")
    lr: float = Field(3e-3, gt=0, le=1, description="Peak learning rate (one-cycle).")
    batch_size: int = Field(64, ge=1, le=4096, description="Batch size.")
    seed: int = Field(0, ge=0, description="Seed of student training.")
    device: Device = "auto"
    preprocess: PreprocessParams = Field(default_factory=PreprocessParams)

    def to_config(self) -> StudentConfig:
        train = TrainConfig(
            model=self.model, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed,
            device=self.device,
        )
        return StudentConfig(train=train, preprocess=self.preprocess.to_config())
