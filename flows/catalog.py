"""Publish a whole task catalog: one ``publish-task`` subflow per task, side by side, one summary at the end.

A catalog is a YAML file (a path or any storage URL)::

    defaults:                      # merged into every task; a task's own value wins, nested blocks key by key
      root_url: /data/plada
      reference_url: /data/plada/pool
      preprocess: {image_size: 8, channels: 1, crop: content}
    tasks:
      - task: digits               # every field of the publish-task form (``ReleaseRequest``), same names
        target_train: sklearn-digits:train
        target_test: sklearn-digits:test
        keep: 0.1
        student: {student_epochs: 30}   # optional: train this student on each release and report its accuracy
        schedule: "0 2 * * 1"      # optional: publish only on the nights this cron (UTC) fires; default: every run

Each task is checked by ``CatalogEntry``, the publish-task form's model plus ``schedule`` and ``student``, so a
value the UI would refuse is refused here too, with the task, the field and what the field takes. An invalid task
is reported failed and the others still publish; a task whose inputs are unchanged trains nothing (its release's
input digest, ``flows/release.py``). The run ends with the table artifact ``plada-catalog`` (and
``plada-catalog-md`` with links) and returns the same rows: task, status (published, unchanged, failed, skipped),
reason, version, payload bytes, predicted and measured accuracy, wall time, the task's flow run.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from prefect import flow, runtime, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.schedules import CronSchedule
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.urls import url_for
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flows.params import ReleaseRequest, StudentRecipe
from flows.release import PUBLISHED, UNCHANGED, publish_task, train_student_release
from plada_core.io import releases, storage

__all__ = [
    "CatalogEntry",
    "CatalogError",
    "CatalogRequest",
    "TasksFailed",
    "load_catalog",
    "publish_catalog",
    "read_catalog",
    "run_catalog",
]

FAILED, SKIPPED = "failed", "skipped"
MAX_PARALLEL = 16  # threads of the flow's task runner; ``max_parallel`` picks how many of them publish at once
_WINDOW = timedelta(hours=24)  # a scheduled task is due when its cron fired within the day before this run


class CatalogError(ValueError):
    """A catalog file that cannot be read, or (``validate``) one with invalid tasks: every problem, one a line."""


class TasksFailed(RuntimeError):
    """Some tasks of a catalog run failed (the run ends Failed, so alerts fire); ``rows`` is the whole summary."""

    def __init__(self, message: str, rows: list[dict]) -> None:
        super().__init__(message)
        self.rows = rows


class CatalogEntry(ReleaseRequest):
    """One task of a catalog: the publish-task form's fields, plus when it publishes and which student measures it."""

    schedule: str | None = Field(
        None,
        description="Cron expression (UTC) of the nights this task publishes on, e.g. '0 2 * * 1' for Mondays; "
        "empty: every catalog run.",
    )
    student: StudentRecipe | None = Field(
        None,
        description="Student recipe trained on each release of the task (its seed, device and preprocessing "
        "default to the task's, its model to the payload's recipe); its test accuracy is the catalog's measured "
        "accuracy. Empty: no student.",
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str | None) -> str | None:
        if schedule is not None:
            try:
                CronSchedule(cron=schedule)  # Prefect's own check: the deployment schedule's syntax
            except ValidationError:
                raise ValueError(f"{schedule!r} is not a cron expression (minute hour day month weekday, UTC, "
                                 "e.g. '0 2 * * 1' for Mondays at 02:00)") from None  # fmt: skip
        return schedule

    def release_request(self, force: bool = False) -> ReleaseRequest:
        """The publish-task request of this task (``force`` or the task's own ``force``)."""
        fields = self.model_dump(exclude={"schedule", "student"})
        return ReleaseRequest(**{**fields, "force": self.force or force})

    def is_due(self, at: datetime) -> bool:
        """Whether the schedule fired in the day up to ``at`` (always, without a schedule)."""
        if self.schedule is None:
            return True
        from prefect._vendor.croniter import croniter  # Prefect's cron engine (pinned with Prefect 3.8.8)

        after = at.astimezone(UTC) + timedelta(seconds=1)  # a fire time exactly at ``at`` counts
        return croniter(self.schedule, after).get_prev(datetime) > at - _WINDOW


class CatalogRequest(BaseModel):
    """Publish every task of a catalog file (``plada catalog publish``, deployment ``publish-catalog/nightly``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    catalog: str = Field(..., min_length=1, description="The catalog YAML file: a path or a file:// or s3:// URL.")
    force: bool = Field(False, description=ReleaseRequest.model_fields["force"].description)
    max_parallel: int = Field(
        2, ge=1, le=MAX_PARALLEL, description="Tasks published at once (each also parallelises its own scoring)."
    )


# --- reading and checking a catalog --------------------------------------------------------------------------


def _merge(base: dict, override: dict) -> dict:
    """``override`` over ``base``; nested mappings merge key by key (a task sets one preprocess knob)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _field(model: type, path: tuple) -> Any:
    """The pydantic FieldInfo at ``path`` in ``model`` (nested models and config dataclasses), or None."""
    info = None
    for name in path:
        fields = getattr(model, "model_fields", None) or getattr(model, "__pydantic_fields__", {})
        info = fields.get(str(name))
        if info is None:
            return None
        model = info.annotation if isinstance(info.annotation, type) else _inner(info.annotation)
    return info


def _inner(annotation: Any) -> Any:
    """``X | None`` → ``X`` (a nested recipe that may be left out)."""
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    return args[0] if len(args) == 1 else annotation


def _explain(err: dict) -> str:
    """One pydantic error as ``field 'a.b': what is wrong. Fix: what the field takes``."""
    loc = tuple(str(p) for p in err["loc"])
    if not loc:  # a check of the whole task (several fields together)
        return str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
    where = f"field {'.'.join(loc)!r}"
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        parent = _field(CatalogEntry, loc[:-1]) if len(loc) > 1 else None
        model = CatalogEntry if parent is None else _inner(parent.annotation)
        known = list(getattr(model, "model_fields", None) or getattr(model, "__pydantic_fields__", {}))
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"its fields are {', '.join(sorted(known))}"
        owner = "a catalog task" if parent is None else repr(".".join(loc[:-1]))
        return f"{where} is not a field of {owner}: remove or rename it ({hint})"
    info = _field(CatalogEntry, loc)
    takes = f" It takes: {info.description}" if info is not None and info.description else ""
    if err["type"] == "missing":
        return f"{where} is required: set it on the task or under defaults.{takes}"
    message = str(err["ctx"]["error"]) if err["type"] == "value_error" else f"{err['msg']}, got {err['input']!r}"
    return f"{where}: {message}.{takes}"


def read_catalog(url: str) -> tuple[list[CatalogEntry], list[tuple[str, str]]]:
    """The valid tasks of the catalog at ``url``, and (task name, problem) for each invalid one. A file that is
    not a catalog at all (missing, not YAML, no ``tasks`` list) raises ``CatalogError``."""
    try:
        doc = yaml.safe_load(storage.read_bytes(url))
    except FileNotFoundError:
        raise CatalogError(f"no catalog at {url}: pass the path or URL of a catalog YAML file") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{url} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), list) or set(doc) - {"defaults", "tasks"}:
        raise CatalogError(f"{url}: a catalog is a mapping with a 'tasks' list and optional 'defaults' mapping "
                           f"(found {sorted(doc) if isinstance(doc, dict) else type(doc).__name__})")  # fmt: skip
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise CatalogError(f"{url}: 'defaults' must be a mapping of task fields, got {type(defaults).__name__}")
    entries, problems, seen = [], [], set()
    for i, raw in enumerate(doc["tasks"]):
        name = str(raw.get("task", f"tasks[{i}]")) if isinstance(raw, dict) else f"tasks[{i}]"
        if not isinstance(raw, dict):
            problems.append((name, f"tasks[{i}] must be a mapping of task fields, got {raw!r}"))
            continue
        if name in seen:
            problems.append((name, f"task {name!r} (tasks[{i}]) is listed twice: give each task its own name"))
            continue
        seen.add(name)
        fields, inherited = _merge(defaults, raw), set()
        if isinstance(fields.get("student"), dict):  # the student sees what the teacher sees unless told otherwise
            inherited = {k for k in ("seed", "device", "preprocess") if k in fields} - set(fields["student"])
            fields["student"] = {**{k: fields[k] for k in inherited}, **fields["student"]}
        try:
            entry = CatalogEntry(**fields)
            if entry.student is not None and "student_model" not in fields["student"]:
                entry = _recipe_student(entry, fields["student"])
            entries.append(entry)
        except ValidationError as exc:
            # an inherited value that is wrong is reported once, where it was written
            errors = [
                e for e in exc.errors() if e["loc"][:1] != ("student",) or e["loc"][1:2] not in {(k,) for k in inherited}
            ]
            problems.extend((name, f"task {name!r} (tasks[{i}]): {_explain(err)}") for err in errors)
    return entries, problems


def _recipe_student(entry: CatalogEntry, given: dict) -> CatalogEntry:
    """``entry`` with a student that names no model of its own trained as the payload's recipe: the proxies'
    model (with ``teacher_model: auto``, the one the target's images called for) and, unless ``given`` sets one,
    the task's input; so the catalog's measured accuracy is about the student its predicted accuracy is about."""
    values = {**given, "student_model": entry.proxy_config().model}
    values.setdefault("preprocess", entry.preprocess)
    return entry.model_copy(update={"student": StudentRecipe(**values)})


def load_catalog(url: str) -> list[CatalogEntry]:
    """Every task of the catalog at ``url``; any invalid task raises ``CatalogError`` listing all problems."""
    entries, problems = read_catalog(url)
    if problems:
        raise CatalogError(f"{url}: {len(problems)} problem(s):\n" + "\n".join(p for _, p in problems))
    return entries


# --- publishing ----------------------------------------------------------------------------------------------


def _accuracy(record: dict, entry: CatalogEntry) -> float | None:
    """The test accuracy of the entry's student on ``record``'s release: its report if trained, else trained now."""
    if entry.student is None:
        return None
    tag = f"{entry.student.student_model}-seed{entry.student.seed}"
    for report in releases.student_reports(entry.root_url, entry.task, tag):
        if report["version"] == record["version"]:
            return report.get("student_acc")
    report = train_student_release(record["payload_url"], record["reference_url"], record["target_test"], None,
                                   record.get("publish_flow_run_id"), entry.student)  # fmt: skip
    return report.get("student_acc")


def _row(name: str, status: str, reason: str | None = None, record: dict | None = None, **extra) -> dict:
    report = (record or {}).get("report") or {}
    predicted = report.get("predicted_acc") or {}
    return {"task": name, "status": status, "reason": reason, "version": (record or {}).get("version"),
            "payload_bytes": report.get("payload_bytes"), "predicted_acc": predicted.get("value"),
            "measured_acc": None, "wall_s": None, "flow_run_id": None, "flow_run_url": None, **extra}  # fmt: skip


def _publish_one(entry: CatalogEntry, force: bool) -> dict:
    state = publish_task.with_options(flow_run_name=entry.task)(entry.release_request(force), return_state=True)
    run_id = state.state_details.flow_run_id
    link = {"flow_run_id": str(run_id) if run_id else None, "flow_run_url": url_for("flow-run", obj_id=run_id)}
    if not state.is_completed():
        error = state.result(raise_on_failure=False)
        reason = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(state.message)
        return _row(entry.task, FAILED, reason, **link)
    record = state.result()
    row = _row(entry.task, record["status"], record.get("reason"), record, **link)
    try:
        row["measured_acc"] = _accuracy(record, entry)
    except Exception as exc:  # noqa: BLE001 - the release stands; say why it has no measured accuracy
        row["reason"] = f"{row['reason'] or 'published'}; student failed: {type(exc).__name__}: {exc}"
    return row


@task(cache_policy=NO_CACHE, task_run_name="publish {entry.task}")
def publish_entry(entry: CatalogEntry, force: bool, due: bool) -> dict:
    """Publish one task as a ``publish-task`` subflow (when ``due``) and return its summary row; whatever fails
    becomes a ``failed`` row with the reason, never an exception, so the other tasks go on."""
    start = time.perf_counter()
    if not due:
        row = _row(entry.task, SKIPPED, f"not due: schedule {entry.schedule!r} did not fire in the last 24 h")
    else:
        try:
            row = _publish_one(entry, force)
        except Exception as exc:  # noqa: BLE001 - one task's failure is its row, not the catalog's
            row = _row(entry.task, FAILED, f"{type(exc).__name__}: {exc}")
    return {**row, "wall_s": round(time.perf_counter() - start, 2)}


def _bounded(submit: Callable[[Any], Any], items: Iterable, limit: int) -> list:
    """Submit ``items`` with at most ``limit`` running at once; the results in the order of ``items``."""
    waiting, running, results = list(enumerate(items))[::-1], {}, {}
    while waiting or running:
        while waiting and len(running) < limit:
            i, item = waiting.pop()
            running[submit(item)] = i
        done = next(as_completed(list(running)))
        results[running.pop(done)] = done.result()
    return [results[i] for i in sorted(results)]


def _summary(catalog: str, rows: list[dict]) -> str:
    counts = {s: sum(r["status"] == s for r in rows) for s in (PUBLISHED, UNCHANGED, FAILED, SKIPPED)}
    return f"Catalog {catalog}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)


def _markdown(catalog: str, rows: list[dict]) -> str:
    def cell(value: Any) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

    head = "| task | status | version | payload bytes | predicted | measured | wall s | run | reason |\n" + "|---" * 9
    lines = [
        f"| {r['task']} | **{r['status']}** | {cell(r['version'])} | {cell(r['payload_bytes'])} | "
        f"{cell(r['predicted_acc'])} | {cell(r['measured_acc'])} | {cell(r['wall_s'])} | "
        + (f"[{r['flow_run_id'][:8]}]({r['flow_run_url']})" if r["flow_run_url"] else cell(r["flow_run_id"]))
        + f" | {cell(r['reason'])} |"
        for r in rows
    ]
    return f"# {_summary(catalog, rows)}\n\n{head}|\n" + "\n".join(lines) + "\n"


@flow(name="publish-catalog", task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL))
def publish_catalog(request: CatalogRequest) -> list[dict]:
    """Publish every task of ``request.catalog``, ``request.max_parallel`` at once, each as a ``publish-task``
    subflow tagged ``plada-task:<task>`` (a Prefect tag concurrency limit can hold one task back); ``force``
    publishes every task, unchanged or not due. Returns one row per task (valid ones in catalog order, then the
    invalid ones), also as artifacts; when a task failed the run ends Failed with ``TasksFailed``, which carries
    the rows (``run_catalog`` returns them either way)."""
    entries, problems = read_catalog(request.catalog)
    at = runtime.flow_run.scheduled_start_time or datetime.now(UTC)

    def submit(entry: CatalogEntry):
        due = request.force or entry.is_due(at)
        return publish_entry.with_options(tags=[f"plada-task:{entry.task}"]).submit(entry, request.force, due)

    rows = _bounded(submit, entries, request.max_parallel)
    invalid: dict[str, list[str]] = {}
    for name, problem in problems:
        invalid.setdefault(name, []).append(problem)
    rows += [_row(name, FAILED, "invalid catalog entry: " + "; ".join(found)) for name, found in invalid.items()]
    summary = _summary(request.catalog, rows)
    table = [{k: "" if v is None else str(v) for k, v in row.items()} for row in rows]
    create_table_artifact(key="plada-catalog", table=table, description=summary)
    create_markdown_artifact(key="plada-catalog-md", markdown=_markdown(request.catalog, rows), description=summary)
    failed = [row["task"] for row in rows if row["status"] == FAILED]
    if failed:
        raise TasksFailed(f"{summary} (failed: {', '.join(failed)}; reasons in the plada-catalog artifact)", rows)
    return rows


def run_catalog(request: CatalogRequest) -> list[dict]:
    """``publish_catalog``'s rows, whether or not a task failed (the CLI and tests read the rows either way); a
    catalog that cannot be read at all raises its error."""
    result = publish_catalog(request, return_state=True).result(raise_on_failure=False)
    if isinstance(result, TasksFailed):
        return result.rows
    if isinstance(result, BaseException):
        raise result
    return result
