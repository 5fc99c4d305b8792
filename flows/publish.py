"""Publisher side: teacher → score every shard (mapped, in parallel) → leakage check → measured selection →
manifest + payload.

The teacher step holds out a validation split of the target train split (``AutoConfig``; always, so that every
release predicts its accuracy; a fixed selector on a target split too small for one publishes unmeasured, and
the report says so): the teacher and its target bank fit the rest. ``auto_select`` then trains a proxy
student per candidate selection (``--selector auto``: the whole grid; a fixed selector: that one) and the payload
is encoded with the winner. Pool images that duplicate a target test image are never selected (unless
``exclude_test_duplicates`` is off), by the winner or by the random baseline.

``random_baseline`` is the one place that makes the random selection every accuracy is compared with.
"""

from __future__ import annotations

import dataclasses
import time

from prefect import flow, unmapped

from flows.params import PublishRequest
from flows.runners import TaskRunnerOptions
from plada_core.io.storage import join
from plada_core.recipe import reserving_prediction, with_prediction
from plada_core.selection import AUTO_SELECTOR
from tasks.auto_select import auto_select, check_leakage, is_frozen_backbone, winner_config, winner_kept
from tasks.score import fit_density_ratio, score_shard
from tasks.select import select_and_encode
from tasks.shards import plan_shards
from tasks.teacher import train_teacher


def stores_features(request: PublishRequest) -> bool:
    """Whether scoring keeps the pool's pooled features: only the proxies of a frozen-backbone teacher's own
    model, on the same preprocessing, can reuse them (a trained backbone's features are not a fresh student's,
    and a given checkpoint may bring its own preprocessing)."""
    proxy = request.proxy_config().model
    same = proxy == request.teacher_model and request.teacher_checkpoint is None
    return request.auto_config().pool_features and same and is_frozen_backbone(proxy)


def _payload_header(request: PublishRequest) -> dict:
    """What the payload carries besides the selection, as the candidates are sized: the recipe with a prediction
    as long as any, which is known only once a candidate has won."""
    return {"task": request.payload_task, "version": request.payload_version,
            "student_recipe": reserving_prediction(request.student_recipe())}  # fmt: skip


def _leakage_record(leakage: dict, excluded: list[int]) -> dict:
    """``leakage.json`` without the full index list, plus how many pool images the selection may not take."""
    return {**{k: v for k, v in leakage.items() if k != "test_duplicates"}, "n_excluded": len(excluded)}


@flow(name="publish", task_runner=TaskRunnerOptions().task_runner())
def publish(request: PublishRequest, teacher_out: str | None = None, scores_out: str | None = None) -> dict:
    """Publish a task as a payload under ``request.out``; returns the selection summary (with the validation
    table ``auto_selection`` and the ``leakage`` check) plus teacher and score URLs and the ``student_recipe`` the
    payload carries (with the predicted accuracy). Run it with ``run_publish`` to score on the task runner the
    request names.

    The teacher folder and the scoring pass's folder default to ``<out>/teacher`` and ``<out>``; publish-task
    passes content-addressed folders (``plada_core.io.layout.teacher_cache_url``, ``scores_cache_url``), where
    finished work of an earlier release is found and skipped."""
    start = time.perf_counter()
    auto = request.auto_config()
    teacher_url = train_teacher(
        request.target_train, request.target_test, teacher_out or join(request.out, "teacher"),
        request.teacher_config(), auto,
        require_validation=request.selector == AUTO_SELECTOR,
    )  # fmt: skip
    teacher_s = time.perf_counter() - start
    shards = plan_shards(request.reference_url)
    scoring = request.scoring_config()
    if scoring.density_ratio:  # the column's classifier, fit on a pool sample before any shard is scored
        fit_density_ratio([s["url"] for s in shards], sum(s["n"] for s in shards), teacher_url,
                          scores_out or request.out, scoring)  # fmt: skip
    futures = score_shard.map(
        [s["url"] for s in shards],
        [s["n"] for s in shards],
        unmapped(teacher_url),
        unmapped(scores_out or request.out),
        unmapped(scoring),
        unmapped(True),
        unmapped(stores_features(request)),
    )
    score_urls = futures.result()
    scoring_s = time.perf_counter() - start - teacher_s
    leakage = check_leakage(score_urls, teacher_url, request.out, auto.max_hamming)
    excluded = leakage["test_duplicates"] if auto.exclude_test_duplicates else []
    choice = auto_select(
        score_urls, request.reference_url, teacher_url, request.target_train, request.out,
        request.selection_config(), auto, request.proxy_config(), request.preprocess, request.codec,
        request.max_payload_bytes, excluded, header=_payload_header(request),
    )  # fmt: skip
    auto_s = time.perf_counter() - start - teacher_s - scoring_s
    recipe = with_prediction(request.student_recipe(), choice.get("predicted_accuracy"))
    summary = select_and_encode(
        score_urls, request.reference_url, teacher_url, request.out, winner_config(choice),
        scoring.max_drop_rate, request.codec, request.max_payload_bytes, winner_kept(choice),
        task=request.payload_task, version=request.payload_version, exclude=excluded,
        extra={"auto_selection": choice, "leakage": _leakage_record(leakage, excluded)},
        student_recipe=recipe,
    )  # fmt: skip
    wall_s = {
        "teacher": teacher_s,
        "scoring": scoring_s,
        "auto_selection": auto_s,
        "selection": time.perf_counter() - start - teacher_s - scoring_s - auto_s,
    }
    return {**summary, "teacher_url": teacher_url, "score_urls": score_urls, "excluded": excluded, "wall_s": wall_s,
            "student_recipe": recipe}


def run_publish(request: PublishRequest, teacher_out: str | None = None, scores_out: str | None = None) -> dict:
    """``publish``, with shard scoring on the task runner ``request`` names (threads or Dask)."""
    return publish.with_options(task_runner=request.task_runner())(request, teacher_out, scores_out)


def random_baseline(request: PublishRequest, published: dict, out_url: str) -> dict:
    """The baseline of a publish run, under ``out_url``: as many images as it kept, drawn uniformly from the
    pool with the same seed, no Safety-Net, same codec, and the same pool images off limits (test duplicates).
    Returns its selection summary."""
    cfg = dataclasses.replace(
        request.selection_config(), selector="random", keep=published["n_kept"], safety_net=False
    )
    return select_and_encode(
        published["score_urls"], request.reference_url, published["teacher_url"], out_url, cfg,
        request.max_drop_rate, request.codec, task=request.payload_task, version=request.payload_version,
        exclude=published.get("excluded", []), student_recipe=request.student_recipe(),
    )  # fmt: skip
