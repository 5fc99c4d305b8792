"""Score one reference shard with the teacher: one task per shard, one Parquet file per shard."""

from __future__ import annotations

import functools
import time

from prefect import task
from prefect.cache_policies import NO_CACHE

from plada_core.io import checkpoints, pool, storage, tables
from plada_core.io.sources import decode_image
from plada_core.scoring import ScoringConfig, score_stream
from plada_core.teacher import model_from_checkpoint
from tasks.common import logger, setup_torch
from tasks.teacher import load_bank


@functools.lru_cache(maxsize=2)
def _teacher(teacher_url: str, device: str):
    # Threads of one worker share the model read-only (eval + no_grad), so load it (and move it to the
    # device) once per process, before any thread runs it.
    model, preprocess = model_from_checkpoint(*checkpoints.load_checkpoint(teacher_url))
    return model.to(device), preprocess, load_bank(teacher_url)


def scores_url(out_url: str, shard_url: str) -> str:
    """Deterministic output path: ``<out>/scores/<shard stem>.parquet``."""
    stem = shard_url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".tar")
    return storage.join(out_url, "scores", f"{stem}.parquet")


def _is_transient(task, task_run, state) -> bool:
    """Retry storage hiccups (connection drops, throttling, 5xx); bad data fails the same way twice."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - classify whatever the task raised
        return storage.is_transient(exc)
    return False


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_is_transient)
def score_shard(shard_url: str, expected_n: int, teacher_url: str, out_url: str, cfg: ScoringConfig) -> str:
    """Write the shard's scores (index, energy, pred, max_softmax, entropy, margin, and the relevance columns
    knn_sim, knn_agree, knn_nn, energy_cdf when the teacher has a target bank) and its drop counts."""
    url = scores_url(out_url, shard_url)
    if storage.exists(url):
        return url  # written atomically, so presence means complete
    setup_torch(parallel=True)
    start = time.perf_counter()
    model, preprocess, bank = _teacher(teacher_url, str(cfg.torch_device()))
    stats = pool.ReadStats()
    result = score_stream(model, pool.iter_shard(shard_url, stats), decode_image, preprocess, cfg, bank=bank)
    if stats.transient:
        # A flaky read is not a broken shard: keep no partial scores (resume would trust them); retry instead.
        raise storage.TransientStorageError(f"{shard_url}: storage failed mid-read ({stats.errors[-1]}); retrying")
    n_scored = len(result.frame)
    meta = {
        "shard": shard_url,
        "teacher": teacher_url,
        "expected": expected_n,
        "n_seen": result.n_seen,
        "n_scored": n_scored,
        "relevance": bank is not None,
        "n_dropped": expected_n - n_scored,
        "undecodable": result.dropped,
        "read_errors": stats.errors,
        "drop_events": dict(stats.counts),
        "wall_s": round(time.perf_counter() - start, 3),
    }
    if meta["n_dropped"]:
        logger().warning(
            "%s: %d of %d images could not be scored (%s)",
            shard_url,
            meta["n_dropped"],
            expected_n,
            (stats.errors + [d["reason"] for d in result.dropped])[:3],
        )
    return tables.write_frame(result.frame, url, metadata=meta)
