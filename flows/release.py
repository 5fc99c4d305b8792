"""Deployment flows: publish a versioned task release (nightly or from the UI), and the triggered student run.

A release records its *input digest* (``plada_core.digest.input_digest``: target data, pool, the request with its
defaults resolved, package version). A run whose digest equals the latest release's trains and scores nothing and
reports the task ``unchanged``; ``force`` publishes anyway. The teacher and the shard scores live in
content-addressed folders under the root (``plada_core.io.layout.teacher_cache_url``, ``scores_cache_url``), so a
release that changes only how images are selected (keep, selector, codec, ...) re-selects from the scores an
earlier release left, without training or scoring.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, runtime
from prefect.task_runners import ThreadPoolTaskRunner

from flows.params import PublishRequest, ReleaseRequest, StudentRecipe
from flows.publish import random_baseline, run_publish, stores_features
from plada_core.config import to_dict
from plada_core.digest import input_digest, scores_key, teacher_key
from plada_core.io import layout, releases
from plada_core.io.storage import join
from tasks.inputs import fingerprint_inputs, package_version
from tasks.publish_report import write_publish_report
from tasks.release import announce_release, finish_release
from tasks.student import payload_student_recipe, train_student
from tasks.student_report import write_student_report

PUBLISHED, UNCHANGED = "published", "unchanged"


def _default_version() -> str:
    """The scheduled date of this run (UTC); a second release on one date is ``<date>.2`` (``next_version``)."""
    scheduled = runtime.flow_run.scheduled_start_time or datetime.now(UTC)
    return scheduled.astimezone(UTC).strftime("%Y-%m-%d")


def work_urls(request: ReleaseRequest, publishing: PublishRequest, inputs: dict, package: str) -> dict:
    """The content-addressed teacher folder and scoring folder of a release (``teacher_out``, ``scores_out``):
    the same for every release whose teacher inputs, and then whose pool and scoring settings, are the same."""
    auto = request.auto_config()
    holdout = {"val_fraction": auto.val_fraction, "val_min_per_class": auto.val_min_per_class}
    teacher = teacher_key(to_dict(request.teacher_config()), holdout, inputs, package)
    scores = scores_key(teacher, to_dict(request.scoring_config()), hashes=True, features=stores_features(publishing))
    return {
        "teacher_out": layout.teacher_cache_url(request.root_url, teacher),
        "scores_out": layout.scores_cache_url(request.root_url, teacher, inputs["pool"], scores),
    }


def _publish(request: ReleaseRequest, version: str, inputs: dict, package: str, digest: str) -> dict:
    """Teacher, scores (both reused when their folders are complete), selection, payload, random baseline and
    report of a new version; returns its release record."""
    out_url = releases.version_url(request.root_url, request.task, version)
    publishing = request.publish_request(out_url, version)
    work = work_urls(request, publishing, inputs, package)
    published = run_publish(publishing, **work)
    baseline = random_baseline(publishing, published, join(out_url, "baseline-random"))
    report = write_publish_report(out_url, published, baseline, request.model_dump())
    return {
        "url": out_url,
        "payload_url": report["payload_url"],
        "random_payload_url": report["random_payload_url"],
        "reference_url": request.reference_url,
        "target_test": request.target_test,
        "publish_flow_run_id": str(runtime.flow_run.id),
        "input_digest": digest,
        "inputs": {**inputs, "package": package},
        "teacher_url": published["teacher_url"],
        "scores_url": work["scores_out"],
        "report": report,
        "student_recipe": published["student_recipe"],  # the payload's, with the publisher's prediction
    }


@flow(name="publish-task", task_runner=ThreadPoolTaskRunner(max_workers=2))
def publish_task(request: ReleaseRequest, lock_wait_s: float = 3600.0) -> dict:
    """Publish ``request.task`` as release ``<root>/tasks/<task>/<version>/``, then move ``latest`` to it.

    Returns the release record with ``status``: ``published``, or ``unchanged`` with a ``reason`` (the inputs
    equal the latest release's, or the named version is released already) and the record of the release that
    stands. The version defaults to the run's scheduled date; a date already released gets ``<date>.2``, ...
    A named version that is released already is returned as it is (re-running it is idempotent), never rebuilt."""
    inputs = fingerprint_inputs(request.target_train, request.target_test, request.reference_url,
                                request.teacher_checkpoint)  # fmt: skip
    package = package_version()
    digest = input_digest(request.model_dump(mode="json"), inputs, package)
    root, task = request.root_url, request.task
    with releases.task_lock(root, task, owner=str(runtime.flow_run.id), wait_s=lock_wait_s) as lease:
        latest = releases.read_latest(root, task)
        if latest and latest.get("input_digest") == digest and not request.force:
            reason = f"inputs unchanged since version {latest['version']} (input digest {digest[:12]})"
            return {**latest, "status": UNCHANGED, "reason": reason}
        if request.version and releases.is_released(root, task, request.version):
            if request.force:
                raise ValueError(f"version {request.version!r} of task {task!r} is released already and a release "
                                 "is never overwritten: leave version empty (a new one is named after the date) "
                                 "or name a new one")  # fmt: skip
            record = finish_release(root, task, request.version, releases.read_release(root, task, request.version))
            return {**record, "status": UNCHANGED, "reason": f"version {request.version} was released already"}
        version = request.version or releases.next_version(root, task, _default_version())
        published = _publish(request, version, inputs, package, digest)
        lease.check()  # a run whose lease was taken over while it worked must not move `latest`
        record = finish_release(root, task, version, published)
    announce_release(record)
    return {**record, "status": PUBLISHED}


@flow(name="train-student-release")
def train_student_release(
    payload_url: str,
    reference_url: str,
    target_test: str | None = None,
    random_payload_url: str | None = None,
    publish_flow_run_id: str | None = None,
    student: StudentRecipe = StudentRecipe(),
) -> dict:
    """Train the client's student on a published payload (and on its random baseline when given) and report.

    The payload and the pool are all the student needs; ``target_test`` (the publisher's test split, when the
    release event carries it) adds the accuracies that compare the student with the random baseline. A
    ``student`` that names no model (nor an input) trains the payload's recipe, as ``plada train-student`` does,
    so the measured accuracy is about the student the release's predicted accuracy is about."""
    base = payload_url.rsplit("/", 1)[0]
    student, _ = student.following(payload_student_recipe(payload_url), "payload")  # a model named: as named
    tag = f"{student.student_model}-seed{student.seed}"
    config = student.student_config()
    common = {"eval_spec": target_test or None, "num_workers": student.num_workers}
    metrics = train_student(payload_url, reference_url, join(base, "students", tag), config, **common)
    random_metrics = None
    if random_payload_url:
        random_metrics = train_student(
            random_payload_url, reference_url, join(base, "students", f"{tag}-random"), config, **common
        )
    return write_student_report(join(base, "students", tag), metrics, random_metrics, publish_flow_run_id, tag)
