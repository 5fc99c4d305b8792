"""After scoring, before the payload: the leakage check, and the selection measured on the validation split.

``check_leakage`` finds pool images that duplicate target test and train images (hash columns of the scores
against ``target_hashes.npz``) and writes ``leakage.json``. ``auto_select`` packs every candidate of
``plada_core.auto_selection.candidate_grid`` at the requested budget (a fixed selector: that one candidate, so
its release still predicts its accuracy), trains a proxy student on each and writes ``auto_selection.json``;
the composition is ``plada_core.proxy.evaluate_candidates``, this module only reads and writes.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from plada_core.auto_selection import Candidate, candidate_grid, unusable_selectors
from plada_core.datasets import selected_tensors
from plada_core.devices import resolve_device
from plada_core.images import PreprocessConfig, decode_image
from plada_core.io import checkpoints, layout, pool, storage
from plada_core.io.arrays import read_npz
from plada_core.io.scores import read_scores
from plada_core.leakage import ImageHashes, check_pool
from plada_core.models import create_model
from plada_core.payload import PAPER_CODEC, uses_layout
from plada_core.proxy import AutoConfig, evaluate_candidates, without_pool_images
from plada_core.publishing import select_and_pack
from plada_core.selection import AUTO_SELECTOR, SelectionConfig
from plada_core.training import TrainConfig, features
from tasks.common import load_split, logger, setup_torch

__all__ = ["auto_select", "check_leakage", "fixed_candidate", "is_frozen_backbone", "winner_config", "winner_kept"]


@task(cache_policy=NO_CACHE)
def check_leakage(score_urls: list[str], teacher_url: str, out_url: str, max_hamming: int) -> dict:
    """Write and return ``leakage.json``: per target split (test, train) the duplicate counts and a few examples
    as [pool index, target position, Hamming distance], and ``test_duplicates``, the pool indices that
    duplicate a target test image. ``checked`` is false, with the reason, when hashes are missing."""
    scores, _ = read_scores(score_urls)
    hashes_url = layout.target_hashes_url(teacher_url)
    if not {"exact_hash", "phash"} <= set(scores.columns) or not storage.exists(hashes_url):
        found = {"checked": False, "reason": "scores or teacher lack image hashes (made before the leakage "
                 "check): delete the scores and teacher folders to recompute them", "test_duplicates": []}  # fmt: skip
    else:
        target = read_npz(hashes_url)
        targets = {name: ImageHashes(target[f"{name}_exact"], target[f"{name}_phash"]) for name in ("test", "train")}
        pool_hashes = ImageHashes(np.array(scores["exact_hash"].tolist(), dtype="S16").reshape(-1),
                                  scores["phash"].to_numpy(np.uint64))  # fmt: skip
        summary, matched = check_pool(scores["index"].to_numpy(), pool_hashes, targets, max_hamming)
        found = {"checked": True, **summary, "test_duplicates": matched["test"].tolist()}
        logger().info("leakage: %d pool images duplicate target test images, %d duplicate train images",
                      summary["test"]["pool_images_matched"], summary["train"]["pool_images_matched"])  # fmt: skip
    storage.write_json(layout.leakage_url(out_url), found)
    return found


def fixed_candidate(cfg: SelectionConfig) -> Candidate:
    """The one candidate of a fixed selector, named as ``candidate_grid`` would name it."""
    name = f"{cfg.selector}+sn({cfg.alpha:g})" if cfg.safety_net else cfg.selector
    return Candidate(name, cfg, 0 if cfg.selector == "random" else 1 + cfg.safety_net)


def is_frozen_backbone(model_name: str) -> bool:
    """Whether ``model_name`` trains only a head on fixed features (``FrozenEffNetLite0``)."""
    return bool(getattr(create_model(model_name, 2, in_chans=3), "frozen_backbone", False))


def _cached_features(out_url: str, reference_url: str, union: np.ndarray) -> tuple[np.ndarray, torch.Tensor] | None:
    """The pooled features the scoring pass stored for ``union``, or None when a shard's file is missing."""
    parts = []
    for shard in pool.shard_urls(reference_url):
        url = layout.pool_features_url(out_url, shard)
        if not storage.exists(url):
            return None
        npz = read_npz(url)
        keep = np.isin(npz["indices"], union)
        parts.append((npz["indices"][keep], npz["features"][keep]))
    indices = np.concatenate([p[0] for p in parts])
    order = np.argsort(indices, kind="stable")
    feats = np.concatenate([p[1] for p in parts])[order].astype(np.float32)
    return indices[order], torch.from_numpy(feats)


def _loader(reference_url: str, out_url: str, preprocess: PreprocessConfig, backbone):
    """Union of pool indices → (present indices, proxy inputs): images, or a frozen backbone's features
    (cached by the scoring pass when it stored them, else computed once here)."""

    def load(union: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        if backbone is not None and (cached := _cached_features(out_url, reference_url, union)) is not None:
            return cached
        encoded, _ = pool.load_images(reference_url, union, progress=False)
        x, _, missing = selected_tensors(encoded, union, np.zeros(len(union), np.int64), decode_image, preprocess)
        present = union[~np.isin(union, missing)]
        return present, x if backbone is None else features(backbone, x)

    return load


@task(cache_policy=NO_CACHE)
def auto_select(
    score_urls: list[str],
    reference_url: str,
    teacher_url: str,
    target_train: str,
    out_url: str,
    cfg: SelectionConfig,
    auto: AutoConfig,
    proxy: TrainConfig,
    preprocess: PreprocessConfig,
    codec: str = PAPER_CODEC,
    max_payload_bytes: int | None = None,
    exclude: list[int] | None = None,
    header: dict | None = None,
) -> dict:
    """Measure the candidates (``cfg.selector == "auto"``: the whole grid; else ``cfg`` alone) with proxy students
    of ``proxy`` for ``auto.proxy_epochs`` epochs (more for a small selection: ``auto.proxy_min_steps``) on the
    validation split; write ``auto_selection.json`` and a Prefect table artifact. Returns the choice's summary,
    whose ``config`` is the winning ``SelectionConfig``.

    Pool images in ``exclude`` (indices) are never selected, as in ``select_and_encode``. ``header`` holds the
    payload's other contents (``task``, ``version``, ``student_recipe``, as ``select_and_encode`` will write
    them): each candidate's bytes, and under ``max_payload_bytes`` its size, count them. A fixed selector whose
    teacher has no validation split (the target split was too small) is returned unmeasured, saying so."""
    start = time.perf_counter()
    setup_torch()
    if not storage.exists(layout.validation_url(teacher_url)):
        if cfg.selector == AUTO_SELECTOR:
            raise ValueError(f"{teacher_url} has no validation split to measure candidates on: delete its folder "
                             "to retrain it with one, or pick a fixed selector")  # fmt: skip
        summary = {"winner": fixed_candidate(cfg).name, "config": dataclasses.asdict(cfg), "candidates": [],
                   "predicted_accuracy": None, "requested": cfg.selector,
                   "skipped": "no validation split: the target train split is too small (see the teacher's "
                   "metadata, holdout)"}  # fmt: skip
        storage.write_json(layout.auto_selection_url(out_url), summary)
        return summary
    scores, _ = read_scores(score_urls)
    _, teacher = checkpoints.load_checkpoint(teacher_url)
    class_names = teacher["class_names"]
    ref = pool.read_reference(reference_url)
    index = pool.read_index(reference_url, None, ["index", "key", "shard"])
    pool_layout = pool.read_layout(reference_url) if uses_layout(codec) else None
    drop = np.asarray(exclude or [], np.int64)

    def pack(config: SelectionConfig) -> tuple[np.ndarray, int]:
        remaining, config = without_pool_images(scores, drop, config)
        result = select_and_pack(remaining, class_names, config, codec, n_reference=ref["n"],
                                 fingerprint=ref["fingerprint"], index=index, layout=pool_layout,
                                 max_bytes=max_payload_bytes, meta={"teacher": teacher_url},
                                 **(header or {}))  # fmt: skip
        return result.kept["index"].to_numpy(np.int64), len(result.payload)

    x, y, _ = load_split(target_train, preprocess)
    val = torch.from_numpy(read_npz(layout.validation_url(teacher_url))["val_positions"])
    x_val, y_val = x[val], y[val]
    backbone = create_model(proxy.model, len(class_names), in_chans=x_val.shape[1])
    if getattr(backbone, "frozen_backbone", False):  # head-only proxies: features in, computed once per image
        x_val = features(backbone.to(resolve_device(proxy.device)), x_val)
    else:
        backbone = None
    candidates = candidate_grid(scores.columns, cfg) if cfg.selector == AUTO_SELECTOR else [fixed_candidate(cfg)]
    # the scoring pass stored its features beside its scores (publish-task: a content-addressed folder)
    features_from = layout.score_run_url(score_urls[0]) if score_urls else out_url
    choice = evaluate_candidates(
        candidates, scores, pack, _loader(reference_url, features_from, preprocess, backbone), x_val, y_val, proxy,
        auto.proxy_epochs, len(class_names), in_chans=x.shape[1], progress=logger().info, tie_se=auto.tie_se,
        min_steps=auto.proxy_min_steps, predict_at_recipe=auto.predict_at_recipe,
    )  # fmt: skip
    summary = {
        **choice.summary(),
        "requested": cfg.selector,
        "selectors_left_out": unusable_selectors(scores.columns) if cfg.selector == AUTO_SELECTOR else {},
        "proxy": {"model": proxy.model, "epochs": auto.proxy_epochs, "min_steps": auto.proxy_min_steps,
                  "max_epochs": proxy.epochs, "head_only": backbone is not None,
                  "predict_at_recipe": auto.predict_at_recipe},
        "wall_s": round(time.perf_counter() - start, 2),
    }
    storage.write_json(layout.auto_selection_url(out_url), summary)
    create_table_artifact(
        key="plada-auto-selection",
        table=[{k: str(v) for k, v in row.items()} for row in choice.table],
        description=f"Validation accuracy of each candidate selection; chosen: {choice.winner.name}",
    )
    logger().info("selection %s: validation accuracy %.4f ± %.4f (%d of %d candidates trained)", choice.winner.name,
                  choice.predicted.value, choice.predicted.se, len(choice.table), len(candidates))  # fmt: skip
    return summary


def winner_config(summary: dict) -> SelectionConfig:
    """The ``SelectionConfig`` an ``auto_select`` summary chose."""
    return SelectionConfig(**summary["config"])


def winner_kept(summary: dict) -> int | None:
    """How many images the chosen candidate kept when it was measured (None when nothing was measured)."""
    return next((row["n_kept"] for row in summary.get("candidates") or [] if row.get("chosen")), None)

