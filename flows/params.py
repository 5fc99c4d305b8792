"""Request models: one per entry point, the typed, bounded, documented parameters of every flow.

Each stage's knobs are declared once, with default, bounds and help, on the frozen ``plada_core`` config
that uses them (``TrainConfig``, ``PreprocessConfig``, ``ScoringConfig``, ``SelectionConfig``). The field
groups below are *generated* from those configs (``teacher_epochs`` is ``TrainConfig.epochs``, with its
annotation and default), and the request models compose the groups with the fields that belong to one entry
point. Everything else is derived from the requests: the Prefect UI forms (their JSON schema; Prefect refuses
a bad value when a run is created, naming the field), the ``plada`` flags (``flows/cli.py``), and the stage
configs handed to tasks (the ``*_config`` methods). Knobs that fan out to several stages are one request
field each: ``seed`` (teacher training and selection), ``device`` (training and scoring), ``preprocess``
(teacher and student).

| model | entry points |
|---|---|
| ``ReferenceRequest`` | ``plada reference build`` |
| ``PublishRequest`` | flow ``publish``, ``plada publish`` |
| ``ReleaseRequest`` | flow ``publish-task`` (deployment ``publish-task/publish``) |
| ``RunRequest`` | flow ``plada-run``, ``plada run``, ``plada demo`` |
| ``StudentRequest`` | flow ``train-student`` (``flows/client.py``), ``plada train-student`` |
| ``StudentRecipe`` | the ``student`` of flow ``train-student-release`` (deployment ``train-student``) |
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import typing
from dataclasses import fields as dataclass_fields
from typing import Annotated, Any, Literal

import timm
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from flows.runners import TaskRunnerOptions
from plada_core.config import StudentConfig, TeacherConfig
from plada_core.images import PreprocessConfig
from plada_core.io.pool import DEFAULT_SHARD_SIZE
from plada_core.io.sources import first_images, labelled_only
from plada_core.model_choice import AUTO_MODEL, COLOUR_MODEL, GREY_MODEL, LOOK_IMAGES, auto_model, look_at
from plada_core.models import model_input
from plada_core.payload import AUTO, CODECS, HEADER_SIZE
from plada_core.proxy import AutoConfig
from plada_core.recipe import RECIPE_FIELDS, student_recipe
from plada_core.scoring import ScoringConfig
from plada_core.selection import SelectionConfig
from plada_core.training import TrainConfig

__all__ = [
    "PublishRequest",
    "ReferenceRequest",
    "ReleaseRequest",
    "RunRequest",
    "StudentRecipe",
    "StudentRequest",
    "config_fields",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
FANNED_OUT = ("seed", "device")  # one request field each, handed to every stage config that has it
Codec = Literal[(*CODECS, AUTO)]  # the codec registry, read at import: a new codec is a new choice


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def _values(self, config: type, prefix: str = "") -> dict[str, Any]:
        """This request's value of each field of ``config`` that it carries as ``prefix + name``."""
        mine = type(self).model_fields
        return {f.name: getattr(self, prefix + f.name) for f in dataclass_fields(config)
                if f.name not in FANNED_OUT and prefix + f.name in mine}  # fmt: skip

    def _shared_with(self, model: type[BaseModel]) -> dict[str, Any]:
        """The values of the fields this request has in common with ``model``."""
        return {name: getattr(self, name) for name in model.model_fields if name in type(self).model_fields}


def config_fields(config: type, *, prefix: str = "", exclude: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Pydantic field definitions for the fields of ``config`` (a core config dataclass): the same annotation
    (type, bounds, help) and default, named ``prefix + name``."""
    hints = typing.get_type_hints(config, include_extras=True)
    defaults = config.__pydantic_fields__
    return {prefix + f.name: (hints[f.name], Field(defaults[f.name].get_default(call_default_factory=False)))
            for f in dataclass_fields(config) if f.name not in exclude}  # fmt: skip


def _borrowed(config: type, name: str, **overrides) -> tuple:
    """One field of ``config`` with its annotation and default, its help replaced by ``overrides``."""
    annotation, field = config_fields(config)[name]
    return annotation, Field(field.default, **overrides)


def _optional_group(name: str, config: type, prefix: str, names: tuple[str, ...], empty: str, doc: str = "") -> type:
    """A request group of ``config``'s fields ``names``, each optional (None: ``empty`` says what stands
    instead), with the field's bounds and its help followed by ``empty``."""
    infos = config.__pydantic_fields__
    fields = {prefix + n: (Annotated[infos[n].annotation | None, *infos[n].metadata],
                           Field(None, description=f"{infos[n].description} {empty}")) for n in names}  # fmt: skip
    return create_model(name, __base__=_Request, __doc__=doc, __module__=__name__, **fields)


def _group(
    name: str,
    config: type,
    prefix: str = "",
    exclude: tuple[str, ...] = (),
    doc: str = "",
    defaults: dict | None = None,
) -> type:
    """A request group of ``config``'s fields; ``defaults`` replaces the defaults of some (the entry point's)."""
    fields = config_fields(config, prefix=prefix, exclude=FANNED_OUT + exclude)
    fields.update({k: (fields[k][0], Field(v)) for k, v in (defaults or {}).items()})
    return create_model(name, __base__=_Request, __doc__=doc, __module__=__name__, **fields)


TeacherTraining = _group("TeacherTraining", TrainConfig, "teacher_", doc="The teacher's ``TrainConfig``.",
                         defaults={"teacher_model": AUTO_MODEL})  # a publisher's teacher suits its target's images
StudentTraining = _group("StudentTraining", TrainConfig, "student_", doc="The student's ``TrainConfig``.")
_MODEL_HINT = config_fields(TrainConfig)["model"][0]  # a model field's type, bounds and help
TeacherSource = _group("TeacherSource", TeacherConfig, "teacher_", exclude=("train", "preprocess"))
# The scoring batch and the prefetch thread are the worker's throughput, not the task's: left at their defaults.
Scoring = _group("Scoring", ScoringConfig, exclude=("batch_size", "prefetch"), doc="``ScoringConfig``.")
Selection = _group("Selection", SelectionConfig, doc="``SelectionConfig``.")
AutoSelection = _group("AutoSelection", AutoConfig, doc="``AutoConfig``: validation split, proxies, leakage.")
# The proxies measure a head-only student (features computed once): the recipe never fine-tunes.
RECIPE_TRAINING = tuple(name for name in RECIPE_FIELDS if name != "finetune")
RecipeTraining = _optional_group(
    "RecipeTraining", TrainConfig, "recipe_", RECIPE_TRAINING,
    "The student recipe's, which the proxies train with and the predicted accuracy is about; empty: the "
    "teacher's (plada run: the student's).",
    doc="The student recipe's ``TrainConfig``, where it is not the teacher's.",
)  # fmt: skip
_SharedFields = create_model(
    "_SharedFields",
    __base__=_Request,
    __module__=__name__,
    seed=_borrowed(SelectionConfig, "seed", description="Seed of every stage: training and selection."),
    device=_borrowed(TrainConfig, "device"),
    preprocess=(
        PreprocessConfig | None,
        Field(None, description="Model input of the teacher and the student; what is left empty is the model's "
                                "own input (the teacher's, or the student's on a client: models.model_input)."),
    ),
)


class Shared(_SharedFields):
    """The knobs that fan out to several stages. ``preprocess`` is derived from the model (as timm's
    ``resolve_data_config`` does) for every leaf the caller leaves out: ``--model plada_effnet_lite0_ml``
    alone gives 32 px RGB, ``--image-size 64`` changes the size only."""

    @model_validator(mode="before")
    @classmethod
    def _model_input(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = _resolve_auto_models(cls, data)
        if isinstance(data.get("preprocess"), PreprocessConfig):
            return data
        fields = cls.model_fields
        owner = next((f for f in ("teacher_model", "student_model") if f in fields), None)
        if owner is None:
            return data
        base = dataclasses.asdict(model_input(data.get(owner, fields[owner].default)))
        return {**data, "preprocess": {**base, **(data.get("preprocess") or {})}}

    @field_validator("teacher_model", "student_model", "proxy_model", check_fields=False)
    @classmethod
    def _known_model(cls, name: str | None, info: ValidationInfo) -> str | None:
        """A model this installation can build (timm's registry, PLADA's models included), refused by name with
        the closest match otherwise; ``auto`` where the model is looked for (not the proxy's: empty means the
        teacher's there)."""
        if name is None or (name == AUTO_MODEL and info.field_name != "proxy_model") or timm.is_model(name):
            return name
        if name == AUTO_MODEL:
            raise ValueError("auto is not a proxy model: leave it empty for the teacher's (in plada run, the "
                             "student's)")  # fmt: skip
        close = difflib.get_close_matches(name, timm.list_models(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}: PLADA's are {', '.join(timm.list_models('plada_*'))}, "
                         "and any timm model name works (timm.list_models())")  # fmt: skip

    @model_validator(mode="after")
    def _auto_models_resolved(self) -> Shared:
        """A model left ``auto`` (nothing to look at) is an error naming the flag and the fix."""
        for name in ("teacher_model", "student_model"):
            if getattr(self, name, None) == AUTO_MODEL:
                _auto_model("--" + name.replace("_", "-"), getattr(self, "target_train", None))
        return self


def _auto_model(flag: str, spec: str | None) -> tuple[str, str]:
    """(model, reason) that ``plada_core.model_choice.auto_model`` picks from a look at the first images of the
    target train split ``spec``; a ValueError naming ``flag`` and the fix when there is nothing to look at."""
    if not spec:
        raise ValueError(f"{flag} auto picks the model from the target train split's images, and there is none "
                         f"here: name a model ({flag} {GREY_MODEL}, or {COLOUR_MODEL} for photos)")  # fmt: skip
    try:
        look = look_at(first_images(labelled_only(spec, "a target train split"), LOOK_IMAGES))
    except (ImportError, OSError, ValueError) as exc:
        raise ValueError(f"{flag} auto could not look at the target train split {spec!r} ({exc}): fix the spec, "
                         f"or name a model ({flag} {GREY_MODEL})") from None  # fmt: skip
    return auto_model(look)


def _resolve_auto_models(cls: type[BaseModel], data: dict) -> dict:
    """``data`` with each model field that is ``auto`` (given or by default) resolved before the input is
    derived from the model: the teacher's to what ``_auto_model`` picks (the choice and its reason printed as a
    note), a student's to the teacher's (they share one input). One that cannot be resolved stays ``auto``, for
    ``Shared._auto_models_resolved`` to report once the fields themselves are valid."""
    fields = cls.model_fields
    auto = [f for f in ("teacher_model", "student_model") if f in fields
            and data.get(f, fields[f].default) == AUTO_MODEL]  # fmt: skip
    if not auto:
        return data
    if auto[0] == "student_model" and "teacher_model" in fields:
        teacher = data.get("teacher_model", fields["teacher_model"].default)
        # an unknown teacher stays the teacher's error alone: the student is left to follow it
        return {**data, "student_model": teacher} if timm.is_model(teacher) else data
    flag = "--" + auto[0].replace("_", "-")
    try:
        name, reason = _auto_model(flag, data.get("target_train"))
    except ValueError:
        return data
    print(f"note: {flag} auto: {name}, because {reason}", file=sys.stderr)
    return {**data, **dict.fromkeys(auto, name)}


def _required(description: str, **constraints) -> Any:
    return Field(..., min_length=1, description=description, **constraints)


class _TargetTest(_Request):
    target_test: str = _required("Source spec of the target test split (e.g. sklearn-digits:test).")

    @field_validator("target_test", "target_train", check_fields=False)
    @classmethod
    def _labelled_split(cls, spec: str, info: ValidationInfo) -> str:
        """A split spec whose kind of source has no labels (``images:``) is refused here, before anything runs."""
        return labelled_only(spec, f"--{info.field_name.replace('_', '-')}")


class _Targets(_TargetTest):
    target_train: str = _required("Source spec of the labelled target train split (e.g. sklearn-digits:train).")


class _Pool(_Request):
    reference_url: str = _required("The reference pool: a URL made by `plada reference build`.")


class _Out(_Request):
    out: str = _required("Output URL (path, file:// or s3://).")


class _ShardSize(_Request):
    shard_size: int = Field(
        DEFAULT_SHARD_SIZE, ge=1, le=1_000_000, description="Images per webdataset shard of a new pool."
    )


class ReferenceRequest(_Out, _ShardSize):
    """Build a reference pool: webdataset shards + index.parquet + reference.json."""

    sources: list[str] = Field(..., min_length=1, description="Image source specs, labelled or not: e.g. mnist5k, "
                               "npz:PATH, images:PATH (a folder of image files).")  # fmt: skip


class PublishSettings(
    Shared, TeacherTraining, TeacherSource, Scoring, Selection, AutoSelection, RecipeTraining, TaskRunnerOptions
):
    """How a task is published, wherever its data lives."""

    codec: Codec = Field(
        AUTO,
        description="Payload codec (auto: encode with every codec, keep the smallest payload, the header names it; "
        "paper-zstd19: the paper's; layout-rc: smallest on pools stored class by class).",
    )
    max_payload_bytes: int | None = Field(
        None, ge=HEADER_SIZE, description="Budget mode: keep the largest selection whose payload fits (replaces keep)."
    )

    @field_validator("keep", mode="before")
    @classmethod
    def _whole_count_above_one(cls, keep: Any) -> Any:
        """A form or a flag may spell a count as 500.0."""
        if isinstance(keep, float) and keep > 1 and keep == int(keep):
            return int(keep)
        return keep

    @model_validator(mode="after")
    def _selector_has_its_column(self) -> PublishSettings:
        """The two selectors whose score columns are optional ask for them, before any work is done."""
        if self.selector == "density_ratio" and not self.density_ratio:
            raise ValueError("--selector density_ratio reads the density_ratio column: add --density-ratio")
        if self.selector == "reliable" and self.label_stability == "off":
            raise ValueError("--selector reliable reads the label_stable column: add --label-stability shifts (or "
                             "flip+shifts for mirror-symmetric classes such as natural photos)")  # fmt: skip
        return self

    def teacher_config(self) -> TeacherConfig:
        train = TrainConfig(**self._values(TrainConfig, "teacher_"), seed=self.seed, device=self.device)
        return TeacherConfig(train=train, preprocess=self.preprocess, **self._values(TeacherConfig, "teacher_"))

    def scoring_config(self) -> ScoringConfig:
        return ScoringConfig(**self._values(ScoringConfig), device=self.device)

    def selection_config(self) -> SelectionConfig:
        return SelectionConfig(**self._values(SelectionConfig), seed=self.seed)

    def auto_config(self) -> AutoConfig:
        return AutoConfig(**self._values(AutoConfig))

    def proxy_config(self) -> TrainConfig:
        """The student recipe the proxies train and the prediction is about: the teacher's ``TrainConfig`` with
        ``proxy_model`` and each ``recipe_*`` setting that is given (the proxies train ``proxy_epochs`` of its
        epochs), and no fine-tuning: a frozen backbone's proxies train its head alone, on features computed once,
        so a fine-tuning teacher's recipe would promise a student nobody measured."""
        train = self.teacher_config().train
        given = {name: value for name in RECIPE_TRAINING if (value := getattr(self, f"recipe_{name}")) is not None}
        return dataclasses.replace(train, model=self.proxy_model or train.model, finetune=0, **given)

    def student_recipe(self) -> dict:
        """The student a client should train when it has no preference: the model, input and training (epochs,
        batch size, learning rate, …: ``plada_core.recipe``) the predicted accuracy is about, those of
        ``proxy_config``. The payload (format 3) and the release record carry it, with the prediction once it
        is measured (``plada_core.recipe.with_prediction``)."""
        return student_recipe(self.proxy_config(), self.preprocess)


class PublishRequest(PublishSettings, _Pool, _Targets, _Out):
    """Publish a task from an existing pool: teacher → scores → selection → manifest + payload under ``out``."""

    payload_task: str | None = Field(
        None, pattern=NAME_PATTERN, description="Task name the payload carries for its clients (publish-task: the task)."
    )
    payload_version: str | None = Field(
        None, pattern=NAME_PATTERN, description="Release version the payload carries (publish-task: the version)."
    )


class ReleaseRequest(PublishSettings, _Pool, _Targets):
    """Publish one task release: teacher → scores → selection → manifest + payload under
    ``<root_url>/tasks/<task>/<version>/``; ``latest`` moves only when everything is written."""

    task: str = Field(..., pattern=NAME_PATTERN, description="Task name: a path segment of the release URL.")
    version: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="Release version. Empty: the run's scheduled date (YYYY-MM-DD; a second release on that date "
        "is YYYY-MM-DD.2, ...); a re-run whose inputs are unchanged publishes nothing.",
    )
    root_url: str = _required("Where releases live (path, file:// or s3:// URL).")
    force: bool = Field(
        False,
        description="Publish even when the inputs (target data, pool, these settings, package version) equal the "
        "latest release's; without it such a run trains nothing and reports the task unchanged.",
    )

    def publish_request(self, out: str, version: str) -> PublishRequest:
        shared = {k: v for k, v in self._shared_with(PublishRequest).items() if k not in ("task", "version")}
        return PublishRequest(**shared, out=out, payload_task=self.task, payload_version=version)


class StudentRecipe(Shared, StudentTraining):
    """The client's student recipe."""

    num_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="DataLoader worker processes that read and decode the student's images (0: in the training "
        "process; a GPU client keeps the device fed with 2-8).",
    )

    def student_config(self) -> StudentConfig:
        train = TrainConfig(**self._values(TrainConfig, "student_"), seed=self.seed, device=self.device)
        return StudentConfig(train=train, preprocess=self.preprocess)

    def following(self, recipe: dict | None, source: str = "release") -> tuple[StudentRecipe, str]:
        """This request with the publisher's ``student_recipe`` (``PublishSettings.student_recipe``; from
        ``source``: the release record or the payload) when it chose neither a student model nor an input of its
        own, and where the student came from: ``source`` or ``"request"``. The recipe's model and input are taken
        whole; of its training settings (``train``) each one the request did not set itself (``--student-epochs``
        … win), and only those this installation knows (``plada_core.recipe.unknown_settings`` names the rest). Releases and
        payloads made before recipes travelled have none; those made before training settings travelled carry
        model and input only, and the request's own training settings stay."""
        own_input = self.preprocess != model_input(self.student_model)
        if not recipe or "student_model" in self.model_fields_set or own_input:
            return self, "request"
        training = {f"student_{name}": value for name, value in (recipe.get("train") or {}).items()
                    if name in RECIPE_FIELDS and f"student_{name}" not in self.model_fields_set}  # fmt: skip
        values = {**self.model_dump(exclude_unset=True), "student_model": recipe.get("model"),
                  "preprocess": recipe.get("preprocess"), **training}  # fmt: skip
        try:
            return type(self)(**values), source
        except ValidationError as exc:
            raise ValueError(f"the {source} recommends the student {recipe!r}, which this installation cannot "
                             f"train ({exc.errors()[0]['msg']}): pass --student-model (and its input) "
                             "yourself") from None  # fmt: skip


class StudentRequest(StudentRecipe, _Pool, _Out):
    """Client side: decode ``payload`` (or the current version of ``release``) against the local pool, train the
    student from them alone; evaluate it when ``eval`` names a test split."""

    payload: str | None = Field(None, min_length=1, description="URL of the payload (payload.plada).")
    release: str | None = Field(
        None,
        min_length=1,
        description="Instead of --payload: a task's release folder ROOT/tasks/<task> (or its latest.json). Trains "
        "its current version into OUT/<task>/<version>/, and does nothing when that version is already trained.",
    )
    eval: str | None = Field(
        None, min_length=1, description="Source spec of a labelled test split to report accuracy on (optional)."
    )
    export: Literal["torchscript", "onnx"] | None = Field(
        None, description="Also export the student (network only; its input contract is in student.json)."
    )

    @field_validator("eval")
    @classmethod
    def _labelled_eval(cls, spec: str | None) -> str | None:
        return spec if spec is None else labelled_only(spec, "--eval")

    @model_validator(mode="after")
    def _payload_or_release(self) -> StudentRequest:
        if (self.payload is None) == (self.release is None):
            raise ValueError("give exactly one of --payload URL and --release URL")
        return self


class RunRequest(PublishSettings, StudentRecipe, _Targets, _Out, _ShardSize):
    """Everything for given sources: pool → publish → student, and the same student on a random selection."""

    references: list[str] = Field(..., min_length=1, description="Reference pool source specs, labelled or not: e.g. "
                                  "mnist5k, images:PATH (a folder of image files).")  # fmt: skip
    student_model: _MODEL_HINT = AUTO_MODEL  # the teacher's, unless named: a client's default stays the small CNN

    def publish_request(self, reference_url: str, out: str) -> PublishRequest:
        """The publish step; its proxy students, and so its student recipe and predicted accuracy, are this run's
        student (model and ``RECIPE_TRAINING`` settings), unless ``proxy_model`` and ``recipe_*`` say otherwise."""
        recipe = {f"recipe_{name}": value if (value := getattr(self, f"recipe_{name}")) is not None
                  else getattr(self, f"student_{name}") for name in RECIPE_TRAINING}  # fmt: skip
        given = {"reference_url": reference_url, "out": out, "proxy_model": self.proxy_model or self.student_model,
                 **recipe}  # fmt: skip
        return PublishRequest(**{**self._shared_with(PublishRequest), **given})

    def student_request(self, payload: str, reference_url: str, out: str) -> StudentRequest:
        given = {"payload": payload, "reference_url": reference_url, "out": out, "eval": self.target_test}
        return StudentRequest(**{**self._shared_with(StudentRequest), **given})

