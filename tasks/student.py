"""Client side: payload + local reference pool + target test split → a trained, evaluated student."""

from __future__ import annotations

import time

from prefect import task
from prefect.cache_policies import NO_CACHE

from plada_core.config import StudentConfig, to_dict
from plada_core.datasets import selected_tensors
from plada_core.io import checkpoints, pool, storage
from plada_core.io.sources import decode_image
from plada_core.teacher import checkpoint_meta, fit_classifier
from plada_core.training import accuracy
from tasks.common import load_split, logger, setup_torch


@task(cache_policy=NO_CACHE)
def train_student(payload_url: str, reference_url: str, target_test: str, out_url: str, cfg: StudentConfig) -> dict:
    """Write ``student.pt`` and ``metrics.json`` under ``out_url``; return the metrics.

    Only the payload and the local pool are used for training: the payload's fingerprint must match the
    local pool's, and indices the pool cannot provide are counted in ``n_missing``.
    """
    metrics_url = storage.join(out_url, "metrics.json")
    if storage.exists(metrics_url):
        return storage.read_json(metrics_url)
    setup_torch()
    start = time.perf_counter()
    data = storage.read_bytes(payload_url)
    payload = pool.decode_for_pool(data, reference_url)
    encoded, stats = pool.load_images(reference_url, payload.indices)
    x, y, missing = selected_tensors(encoded, payload.indices, payload.labels, decode_image, cfg.preprocess)
    if missing:
        logger().warning(
            "%d of %d payload images are missing or unreadable in the local pool", len(missing), len(payload.indices)
        )
    if len(x) == 0:
        raise RuntimeError(f"none of the {len(payload.indices)} payload images could be read from {reference_url}")
    model = fit_classifier(x, y, payload.n_classes, cfg.train, desc="student")
    x_test, y_test, class_names = load_split(target_test, cfg.preprocess)
    metrics = {
        "student_acc": accuracy(model, x_test, y_test),
        "n_train": len(x),
        "n_missing": len(missing),
        "read_errors": stats.errors[:20],
        "payload_url": payload_url,
        "payload_bytes": len(data),
        "target_test": target_test,
        "config": to_dict(cfg),
        "wall_s": round(time.perf_counter() - start, 3),
    }
    meta = checkpoint_meta(
        cfg.train.model, payload.n_classes, cfg.preprocess, class_names, test_acc=metrics["student_acc"]
    )
    checkpoints.save_checkpoint(model, meta, storage.join(out_url, "student.pt"))
    storage.write_json(metrics_url, metrics)
    logger().info("student %s on %d images: test accuracy %.4f", cfg.train.model, len(x), metrics["student_acc"])
    return metrics
