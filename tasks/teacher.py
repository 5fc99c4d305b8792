"""Teacher: train on the target train split (or load a checkpoint), measure it on the target test split."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from plada_core.config import TeacherConfig, to_dict
from plada_core.io import checkpoints, storage
from plada_core.io.sources import open_source
from plada_core.teacher import checkpoint_meta, evaluate, fit_classifier, model_from_checkpoint
from tasks.common import load_split, logger, setup_torch


def _given_teacher(cfg: TeacherConfig, target_train: str):
    """(model, preprocess, class names) from ``cfg.checkpoint``; a bare state dict is described by ``cfg``."""
    state, meta = checkpoints.load_checkpoint(cfg.checkpoint)
    if not meta:
        names = list(open_source(target_train).class_names)
        meta = checkpoint_meta(cfg.train.model, len(names), cfg.preprocess, names)
    model, preprocess = model_from_checkpoint(state, meta)
    return model, preprocess, meta.get("class_names") or list(open_source(target_train).class_names), meta["model"]


@task(cache_policy=NO_CACHE)
def train_teacher(target_train: str, target_test: str, out_url: str, cfg: TeacherConfig) -> str:
    """Write ``teacher.pt`` (state dict + metadata, test accuracy included) and return its URL."""
    url = storage.join(out_url, "teacher.pt")
    if storage.exists(url):
        logger().info("teacher checkpoint %s exists; reusing it", url)
        return url
    setup_torch()
    if cfg.checkpoint:
        model, preprocess, class_names, model_name = _given_teacher(cfg, target_train)
    else:
        preprocess, model_name = cfg.preprocess, cfg.train.model
        x, y, class_names = load_split(target_train, preprocess)
        model = fit_classifier(x, y, len(class_names), cfg.train, desc="teacher")
    x_test, y_test, _ = load_split(target_test, preprocess)
    acc = evaluate(model, x_test, y_test)
    logger().info("teacher %s: test accuracy %.4f on %s", model_name, acc, target_test)
    meta = checkpoint_meta(
        model_name,
        len(class_names),
        preprocess,
        class_names,
        test_acc=acc,
        target_train=target_train,
        target_test=target_test,
        config=to_dict(cfg),
    )
    return checkpoints.save_checkpoint(model, meta, url)
