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


@functools.lru_cache(maxsize=2)
def _teacher(teacher_url: str):
    # Threads of one worker share the model read-only (eval + no_grad), so load it once per process.
    return model_from_checkpoint(*checkpoints.load_checkpoint(teacher_url))


def scores_url(out_url: str, shard_url: str) -> str:
    """Deterministic output path: ``<out>/scores/<shard stem>.parquet``."""
    stem = shard_url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".tar")
    return storage.join(out_url, "scores", f"{stem}.parquet")


def _is_transient(task, task_run, state) -> bool:
    """Retry storage hiccups (OSError: connection resets, throttling); bad data fails the same way twice."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:  # noqa: BLE001
        return False
    return False


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_is_transient)
def score_shard(shard_url: str, expected_n: int, teacher_url: str, out_url: str, cfg: ScoringConfig) -> str:
    """Write the shard's scores (index, energy, pred, max_softmax, entropy, margin) and its drop counts."""
    url = scores_url(out_url, shard_url)
    if storage.exists(url):
        return url  # written atomically, so presence means complete
    setup_torch(parallel=True)
    start = time.perf_counter()
    model, preprocess = _teacher(teacher_url)
    stats = pool.ReadStats()
    result = score_stream(model, pool.iter_shard(shard_url, stats), decode_image, preprocess, cfg)
    n_scored = len(result.frame)
    meta = {
        "shard": shard_url,
        "teacher": teacher_url,
        "expected": expected_n,
        "n_seen": result.n_seen,
        "n_scored": n_scored,
        "n_dropped": expected_n - n_scored,
        "undecodable": result.dropped,
        "read_errors": stats.errors,
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
