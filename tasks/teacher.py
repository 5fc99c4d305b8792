"""Teacher: train on the target train split (or load a checkpoint), measure it on the target test split.

Beside ``teacher.pt`` go the files later steps read (paths in ``plada_core.io.layout``):

- ``validation.npz``: with an ``AutoConfig``, the stratified validation split of the target train split
  (``plada_core.holdout``), held out *before* anything trains: the teacher fits the rest, and so does the
  target bank, so the proxy students' validation accuracy is measured on images nothing upstream has seen.
- ``target_bank.npz``: the teacher's embeddings of the (remaining) target training images, which the scoring
  pass turns into per-image relevance columns (``plada_core.relevance``).
- ``target_hashes.npz``: exact and perceptual hashes of the target train and test images, for the leakage check
  (``plada_core.leakage``); the split is decoded here anyway.

A given checkpoint (``cfg.checkpoint``) may have been trained on the validation images: its bank still leaves them
out, and its metadata says ``teacher_saw_validation``. A target split too small to hold out from (a class with fewer
than ``2 * val_min_per_class`` images) stops a run that needs the split (``--selector auto``) with the holdout's
error; a fixed selector then trains on everything, and its metadata's ``holdout`` says why there is no split.
"""

from __future__ import annotations

import numpy as np
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from plada_core.classifier import checkpoint_meta, fit_classifier, model_from_checkpoint
from plada_core.config import TeacherConfig, to_dict
from plada_core.holdout import absent_classes, stratified_holdout
from plada_core.io import checkpoints, layout, storage
from plada_core.io.arrays import read_npz, write_npz
from plada_core.io.sources import open_source
from plada_core.leakage import hash_images
from plada_core.proxy import AutoConfig
from plada_core.relevance import build_bank
from plada_core.training import accuracy
from tasks.common import load_split, logger, one_writer, setup_torch


def write_bank(model, x, y, teacher_url: str) -> str:
    """Build and store the target bank of ``model`` on ``(x, y)``; returns its URL."""
    return storage.write_bytes(layout.bank_url(teacher_url), build_bank(model, x, y).to_bytes())


def _fit_positions(teacher_url: str, n: int) -> np.ndarray:
    """Positions of the target train split the teacher and its bank may use: all but the validation split."""
    url = layout.validation_url(teacher_url)
    return read_npz(url)["train_positions"] if storage.exists(url) else np.arange(n)


def ensure_bank(teacher_url: str, target_train: str | None = None) -> str:
    """Write the bank of an existing teacher checkpoint if it is missing (old runs, given checkpoints)."""
    url = layout.bank_url(teacher_url)
    if storage.exists(url):
        return url
    state, meta = checkpoints.load_checkpoint(teacher_url)
    model, preprocess = model_from_checkpoint(state, meta)
    spec = target_train or meta.get("target_train")
    if not spec:
        raise ValueError(f"{teacher_url} names no target_train split; pass one to build its target bank")
    x, y, _ = load_split(spec, preprocess)
    fit = torch.from_numpy(_fit_positions(teacher_url, len(y)))
    return write_bank(model, x[fit], y[fit], teacher_url)


def write_validation_split(
    teacher_url: str, labels: np.ndarray, n_classes: int, auto: AutoConfig, seed: int, required: bool = True
) -> dict:
    """Hold out the validation split of ``labels`` (the target train split) and store it; returns its record.
    A split that cannot be made raises, unless not ``required``: then the record says why, and nothing is stored."""
    try:
        train_positions, val_positions = stratified_holdout(
            np.asarray(labels), auto.val_fraction, auto.val_min_per_class, seed=seed, n_classes=n_classes
        )
    except ValueError as exc:
        if required:
            raise
        logger().warning("no validation split, so no predicted accuracy: %s", exc)
        return {"skipped": str(exc)}
    write_npz(layout.validation_url(teacher_url), train_positions=train_positions, val_positions=val_positions)
    return {"val_fraction": auto.val_fraction, "val_min_per_class": auto.val_min_per_class, "seed": seed,
            "n_fit": len(train_positions), "n_val": len(val_positions)}  # fmt: skip


def _check_classes(labels: np.ndarray, class_names: list[str], target_train: str) -> None:
    """A task needs images of two classes at least: with one, every pool image gets its label."""
    present = np.unique(labels)
    if len(present) < 2:
        names = [class_names[c] for c in present]
        raise ValueError(f"{target_train} has images of {len(present)} class ({names}); a classification task needs "
                         "at least 2: give the train split of every class")  # fmt: skip


def _absent_classes(y_fit: np.ndarray, y_test: np.ndarray, class_names: list[str], target_train: str) -> dict:
    """The task's classes without a training image, reported (``{}`` when every class has one): the teacher
    cannot learn them, no payload labels them, and their test images count as errors."""
    absent = absent_classes(y_fit, len(class_names))
    if not len(absent):
        return {}
    names = [class_names[c] for c in absent]
    n_test = int(np.isin(y_test, absent).sum())
    logger().warning(
        "%d of %d classes without a training image in %s (after the validation split): %s; the teacher cannot "
        "learn them and no payload labels them, so %d of %d test images are errors. Labels that start at 1 leave "
        "class 0 empty, which is harmless; otherwise add images of those classes or drop them from the task",
        len(absent), len(class_names), target_train, names[:20], n_test, len(y_test),
    )  # fmt: skip
    return {"classes": absent.tolist(), "names": names, "n_test_images": n_test, "n_test": len(y_test)}


def write_target_hashes(teacher_url: str, target_train: str, target_test: str) -> str:
    """Hash the decoded target train and test images (``plada_core.leakage``) and store them."""
    arrays = {}
    for name, spec in (("train", target_train), ("test", target_test)):
        source = open_source(spec)
        source.require_labels()
        found = hash_images(source.iter_images())  # one image at a time
        arrays[f"{name}_exact"], arrays[f"{name}_phash"] = found.exact, found.perceptual
    return write_npz(layout.target_hashes_url(teacher_url), **arrays)


def _given_teacher(cfg: TeacherConfig, target_train: str):
    """(model, preprocess, class names) from ``cfg.checkpoint``; a bare state dict is described by ``cfg``."""
    state, meta = checkpoints.load_checkpoint(cfg.checkpoint)
    if not meta:
        names = list(open_source(target_train).class_names)
        meta = checkpoint_meta(cfg.train.model, len(names), cfg.preprocess, names)
    model, preprocess = model_from_checkpoint(state, meta)
    return model, preprocess, meta.get("class_names") or list(open_source(target_train).class_names), meta["model"]


def _reuse(url: str, target_train: str, target_test: str, cfg: TeacherConfig, auto: AutoConfig | None,
           required: bool) -> str:  # fmt: skip
    """Complete the side files of an existing checkpoint (older runs wrote fewer of them)."""
    logger().info("teacher checkpoint %s exists; reusing it", url)
    setup_torch()
    _, meta = checkpoints.load_checkpoint(url)
    if auto is not None and "holdout" not in meta and not storage.exists(layout.validation_url(url)):
        source = open_source(target_train)
        source.require_labels()
        labels = source.labels()
        write_validation_split(url, labels, meta["num_classes"], auto, cfg.train.seed, required)
        logger().warning("%s was trained before a validation split was held out: validation accuracies of this "
                         "run are optimistic; delete the teacher folder to retrain it", url)  # fmt: skip
    if auto is not None and not storage.exists(layout.target_hashes_url(url)):
        write_target_hashes(url, target_train, target_test)
    ensure_bank(url, target_train)
    return url


@task(cache_policy=NO_CACHE)
def train_teacher(
    target_train: str,
    target_test: str,
    out_url: str,
    cfg: TeacherConfig,
    auto: AutoConfig | None = None,
    require_validation: bool = True,
) -> str:
    """Write ``teacher.pt`` (state dict + metadata, test accuracy included) and its ``target_bank.npz``; with
    ``auto``, first hold out ``validation.npz`` (the teacher and bank fit the rest; a split too small raises
    unless not ``require_validation``) and write ``target_hashes.npz``. Returns the checkpoint's URL. A complete
    teacher folder at ``out_url`` is reused (its missing side files written), not retrained."""
    url = layout.teacher_url(out_url)
    with one_writer(url):
        if storage.exists(url):
            return _reuse(url, target_train, target_test, cfg, auto, require_validation)
        return _train(url, target_train, target_test, cfg, auto, require_validation)


def _train(url: str, target_train: str, target_test: str, cfg: TeacherConfig, auto: AutoConfig | None,
           require_validation: bool) -> str:  # fmt: skip
    setup_torch()
    if cfg.checkpoint:
        model, preprocess, class_names, model_name = _given_teacher(cfg, target_train)
        x, y, _ = load_split(target_train, preprocess, class_names)
    else:
        preprocess, model_name = cfg.preprocess, cfg.train.model
        x, y, class_names = load_split(target_train, preprocess)
    x_test, y_test, _ = load_split(target_test, preprocess, class_names)  # a mismatched split stops us now
    _check_classes(y.numpy(), class_names, target_train)
    extra = {}
    fit = torch.arange(len(y))
    if auto is not None:
        extra["holdout"] = write_validation_split(
            url, y.numpy(), len(class_names), auto, cfg.train.seed, require_validation
        )
        extra["teacher_saw_validation"] = bool(cfg.checkpoint)  # a given teacher: unknown, assume the worst
        fit = torch.from_numpy(_fit_positions(url, len(y)))
        write_target_hashes(url, target_train, target_test)
    if not cfg.checkpoint:
        model = fit_classifier(x[fit], y[fit], len(class_names), cfg.train, desc="teacher")
    write_bank(model, x[fit], y[fit], url)  # before the checkpoint: a present teacher.pt implies complete side files
    acc = accuracy(model, x_test, y_test)
    logger().info("teacher %s: test accuracy %.4f on %s", model_name, acc, target_test)
    if absent := _absent_classes(y[fit].numpy(), y_test.numpy(), class_names, target_train):
        extra["classes_without_train_images"] = absent
    meta = checkpoint_meta(
        model_name,
        len(class_names),
        preprocess,
        class_names,
        test_acc=acc,
        target_train=target_train,
        target_test=target_test,
        config=to_dict(cfg),
        **extra,
    )
    return checkpoints.save_checkpoint(model, meta, url)
