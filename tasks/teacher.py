"""Teacher: train on the target train split (or load a checkpoint), measure it on the target test split.

Next to ``teacher.pt`` goes ``target_bank.npz``: the teacher's embeddings of the target training images, which the
scoring pass turns into per-image relevance columns (``plada_core.relevance``)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from plada_core.config import TeacherConfig, to_dict
from plada_core.io import checkpoints, storage
from plada_core.io.sources import open_source
from plada_core.relevance import TargetBank, build_bank
from plada_core.teacher import checkpoint_meta, fit_classifier, model_from_checkpoint
from plada_core.training import accuracy
from tasks.common import load_split, logger, setup_torch

BANK_NAME = "target_bank.npz"


def bank_url(teacher_url: str) -> str:
    """Deterministic path of a teacher's target bank: ``target_bank.npz`` beside ``teacher.pt``."""
    return teacher_url.rstrip("/").rsplit("/", 1)[0] + "/" + BANK_NAME


def load_bank(teacher_url: str) -> TargetBank | None:
    """The teacher's target bank, or None for a teacher published before banks existed."""
    url = bank_url(teacher_url)
    return TargetBank.from_bytes(storage.read_bytes(url)) if storage.exists(url) else None


def write_bank(model, x, y, teacher_url: str) -> str:
    """Build and store the target bank of ``model`` on ``(x, y)``; returns its URL."""
    return storage.write_bytes(bank_url(teacher_url), build_bank(model, x, y).to_bytes())


def ensure_bank(teacher_url: str, target_train: str | None = None) -> str:
    """Write the bank of an existing teacher checkpoint if it is missing (old runs, given checkpoints)."""
    url = bank_url(teacher_url)
    if storage.exists(url):
        return url
    state, meta = checkpoints.load_checkpoint(teacher_url)
    model, preprocess = model_from_checkpoint(state, meta)
    spec = target_train or meta.get("target_train")
    if not spec:
        raise ValueError(f"{teacher_url} names no target_train split; pass one to build its target bank")
    x, y, _ = load_split(spec, preprocess)
    return write_bank(model, x, y, teacher_url)


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
    """Write ``teacher.pt`` (state dict + metadata, test accuracy included) and its ``target_bank.npz``;
    return the checkpoint's URL."""
    url = storage.join(out_url, "teacher.pt")
    if storage.exists(url):
        logger().info("teacher checkpoint %s exists; reusing it", url)
        setup_torch()
        ensure_bank(url, target_train)
        return url
    setup_torch()
    if cfg.checkpoint:
        model, preprocess, class_names, model_name = _given_teacher(cfg, target_train)
        x, y, _ = load_split(target_train, preprocess)
    else:
        preprocess, model_name = cfg.preprocess, cfg.train.model
        x, y, class_names = load_split(target_train, preprocess)
        model = fit_classifier(x, y, len(class_names), cfg.train, desc="teacher")
    write_bank(model, x, y, url)  # before the checkpoint: a present teacher.pt implies a complete bank
    x_test, y_test, _ = load_split(target_test, preprocess)
    acc = accuracy(model, x_test, y_test)
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
