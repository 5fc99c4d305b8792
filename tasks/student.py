"""Client side: a payload + the local reference pool → a trained student (evaluated only when given a test split)."""

from __future__ import annotations

import hashlib
import time

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from plada_core.classifier import checkpoint_meta, class_names_for, fit_classifier_streaming, model_from_checkpoint
from plada_core.config import StudentConfig, to_dict
from plada_core.inference import EXPORT_FORMATS, check_export, export_model, model_card
from plada_core.io import checkpoints, layout, pool, releases, storage
from plada_core.io.arrays import write_npz
from plada_core.io.payload_stream import PayloadStream
from plada_core.payload import PayloadError, read_header
from plada_core.training import predict
from tasks.common import load_split, logger, setup_torch


@task(cache_policy=NO_CACHE)
def train_student(payload_url: str, reference_url: str, out_url: str, cfg: StudentConfig, eval_spec: str | None = None,
                  num_workers: int = 0, export: str | None = None) -> dict:  # fmt: skip
    """Write ``student.pt`` and ``metrics.json`` (last) under ``out_url``; return the metrics.

    Only the payload and the local pool are used for training: the payload's fingerprint must match the local
    pool's, its images are streamed from the pool shards that hold them (``PayloadStream``, decoded in
    ``num_workers`` DataLoader workers), and images the pool cannot provide are counted (``n_missing``, ``drops``).
    Class names come from the payload (format 2), else from the ``eval_spec`` split, else ``class_<i>``
    (``class_names_from`` says which). ``eval_spec`` (a source spec) adds ``student_acc`` and ``eval_predictions``
    (each test image's prediction, ``layout.eval_predictions_url``), both None without it.
    ``export`` (``torchscript`` or ``onnx``) also writes the exported model and its ``student.json`` card.
    """
    if export is not None:
        check_export(export)  # before training: a missing exporter is known now, not after an hour
    metrics_url = layout.metrics_url(out_url)
    if storage.exists(metrics_url):
        if export is not None:
            _export(out_url, export)
        return storage.read_json(metrics_url)
    setup_torch()
    start = time.perf_counter()
    data = storage.read_bytes(payload_url)
    payload = pool.decode_for_pool(data, reference_url)
    stream = PayloadStream(reference_url, payload, cfg.preprocess, seed=cfg.train.seed)
    if stream.n_expected == 0:
        raise RuntimeError(f"none of the {payload.k} payload images is listed in {reference_url}/index.parquet: "
                           "is this the complete pool the payload was built for?")
    task_classes = payload.class_names or payload.n_classes  # a format-1 payload names no classes
    evaluation = load_split(eval_spec, cfg.preprocess, task_classes) if eval_spec else None  # before training
    fit = fit_classifier_streaming(stream, payload.n_classes, cfg.preprocess.channels, cfg.train, num_workers,
                                   desc="student", feature_cache_url=storage.join(out_url, "features"))
    drops = fit.drops[-1]
    if drops.total:
        logger().warning("%d of %d payload images are missing or unreadable in the local pool: %s", drops.total,
                         payload.k, drops.as_dict())
    acc, eval_names, predictions_url = None, None, None
    if evaluation is not None:
        x_test, y_test, eval_names = evaluation
        pred = predict(fit.model, x_test).argmax(1)
        acc = float((pred == y_test).float().mean())
        predictions_url = write_npz(layout.eval_predictions_url(out_url), pred=pred.numpy().astype(np.int32),
                                    label=y_test.numpy().astype(np.int32))  # fmt: skip
    class_names, found = class_names_for(payload.n_classes, payload.class_names, eval_names)
    names_from = {0: "payload", 1: "eval", None: "generated"}[found]
    if names_from != "payload":
        logger().warning("the payload names no classes (format %d): class names are %s", payload.format_version,
                         "the evaluation split's" if found == 1 else "class_0 .. class_{C-1}")
    provenance = {
        "payload_sha256": hashlib.sha256(data).hexdigest(),
        "reference_fingerprint": payload.fingerprint,
        "task": payload.task,
        "version": payload.version,
        "payload_format_version": payload.format_version,
        "class_names_from": names_from,
    }
    metrics = {
        "student_acc": acc,
        "eval": eval_spec or None,
        "eval_predictions": predictions_url,
        "n_train": fit.n_seen[-1],
        "n_missing": drops.total,
        "drops": drops.as_dict(),
        "read_errors": drops.errors[:20],
        "payload_url": payload_url,
        "payload_bytes": len(data),
        **provenance,
        "n_classes": payload.n_classes,
        "num_workers": num_workers,
        "config": to_dict(cfg),
        "wall_s": round(time.perf_counter() - start, 3),
    }
    meta = checkpoint_meta(cfg.train.model, payload.n_classes, cfg.preprocess, class_names, test_acc=acc, **provenance)
    checkpoints.save_checkpoint(fit.model, meta, layout.student_checkpoint_url(out_url))
    if export is not None:
        metrics["export_url"] = _export(out_url, export)
    storage.write_json(metrics_url, metrics)
    logger().info("student %s on %d images%s", cfg.train.model, metrics["n_train"],
                  "" if acc is None else f": test accuracy {acc:.4f} on {eval_spec}")
    return metrics


def _export(out_url: str, fmt: str) -> str:
    """The checkpoint under ``out_url`` exported as ``fmt`` (once), and ``student.json`` listing every export."""
    checkpoint = layout.student_checkpoint_url(out_url)
    url = checkpoints.export_url(checkpoint, fmt)
    if not storage.exists(url):
        state, meta = checkpoints.load_checkpoint(checkpoint)
        model, preprocess = model_from_checkpoint(state, meta)
        storage.write_bytes(url, export_model(model, preprocess, fmt))
        files = {f: checkpoints.export_url(checkpoint, f).rsplit("/", 1)[-1] for f in EXPORT_FORMATS
                 if storage.exists(checkpoints.export_url(checkpoint, f))}  # fmt: skip
        storage.write_json(checkpoints.card_url(checkpoint), model_card(meta, files))
    return url


@task(cache_policy=NO_CACHE)
def payload_student_recipe(payload_url: str) -> dict | None:
    """The student the payload's publisher recommends (format 3's ``student_recipe``); None in older formats."""
    return read_header(storage.read_bytes(payload_url))["student_recipe"]


@task(cache_policy=NO_CACHE)
def resolve_release(release_url: str, reference_url: str, out: str) -> dict:
    """The current version of the task released at ``release_url`` (its folder or ``latest.json``): ``task``,
    ``version``, ``payload_url``, ``out`` (``<out>/<task>/<version>``), ``trained`` (its metrics.json exists
    there) and ``student_recipe`` (the publisher's recommended student, or None). An untrained version's payload
    must have been built for the local pool, checked here before training.
    """
    current = releases.current_release(release_url)
    target = releases.client_version_url(out, current["task"], current["version"])
    plan = {"task": current["task"], "version": current["version"], "payload_url": current["payload_url"],
            "latest_url": current["latest_url"], "out": target, "trained": storage.exists(layout.metrics_url(target)),
            "student_recipe": current["record"].get("student_recipe")}
    if plan["trained"]:
        return plan
    name = f"release {current['task']}/{current['version']}"
    if not storage.exists(current["payload_url"]):
        raise FileNotFoundError(f"{name} has no payload at {current['payload_url']}: copy the whole version folder "
                                f"{current['url']} next to its latest.json")
    published_for = read_header(storage.read_bytes(current["payload_url"]))["fingerprint"]
    local = pool.read_reference(reference_url)["fingerprint"]
    if published_for != local:
        raise PayloadError(f"{name} was published for the reference pool with fingerprint {published_for}, but the "
                           f"pool at {reference_url} has fingerprint {local}: point --reference-url at a copy of the "
                           "pool the task was published on (its reference.json names the fingerprint)")
    return plan
