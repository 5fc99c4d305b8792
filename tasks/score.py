"""Score one reference shard with the teacher: one task per shard, one Parquet file per shard.

The same pass can hash every decoded image (columns ``exact_hash``/``phash``, for the leakage check) and store the
teacher's pooled features (``features/<shard>.npz``, float16; for a frozen-backbone teacher these are the proxy
students' inputs). With ``ScoringConfig.density_ratio`` on, ``fit_density_ratio`` runs once before the shards
(``density_ratio.npz`` beside the scores)."""

from __future__ import annotations

import functools
import time

from prefect import task
from prefect.cache_policies import NO_CACHE

from plada_core.classifier import model_from_checkpoint
from plada_core.images import decode_image
from plada_core.io import checkpoints, layout, storage, tables, tar_stream
from plada_core.io.arrays import write_npz
from plada_core.pruning import DensityRatio
from plada_core.scoring import ScoringConfig, fit_pool_density_ratio, score_stream
from tasks.common import load_bank, logger, one_writer, setup_torch


@functools.lru_cache(maxsize=2)
def _teacher(teacher_url: str, device: str):
    # Threads of one worker share the model read-only (eval + no_grad), so load it (and move it to the
    # device) once per process, before any thread runs it.
    model, preprocess = model_from_checkpoint(*checkpoints.load_checkpoint(teacher_url))
    return model.to(device), preprocess, load_bank(teacher_url)


def _is_transient(task, task_run, state) -> bool:
    """Retry storage hiccups (connection drops, throttling, 5xx); bad data fails the same way twice."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - classify whatever the task raised
        return storage.is_transient(exc)
    return False


# pool images the density ratio is fit on: fit_density_ratio's cap on either side
DENSITY_SAMPLE = 20_000


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_is_transient)
def fit_density_ratio(shard_urls: list[str], n_reference: int, teacher_url: str, out_url: str,
                      cfg: ScoringConfig) -> str:  # fmt: skip
    """Fit the ``density_ratio`` column's classifier on every m-th pool image (about ``DENSITY_SAMPLE`` of them,
    from every shard) against the teacher's target bank; write it to ``layout.density_ratio_url(out_url)``."""
    url = layout.density_ratio_url(out_url)
    with one_writer(url):
        if storage.exists(url):
            return url
        setup_torch()
        start = time.perf_counter()
        model, preprocess, bank = _teacher(teacher_url, str(cfg.torch_device()))
        stride = max(1, -(-n_reference // DENSITY_SAMPLE))
        stats = tar_stream.ReadStats()
        samples = ((i, data) for shard in shard_urls for i, data in tar_stream.iter_shard(shard, stats)
                   if i % stride == 0)  # fmt: skip
        ratio, fitted = fit_pool_density_ratio(model, samples, decode_image, preprocess, cfg, bank)
        if stats.transient:
            raise storage.TransientStorageError(f"storage failed while sampling the pool ({stats.errors[-1]}); retrying")
        storage.write_bytes(url, ratio.to_bytes())
        logger().info("density ratio fit on %d target and %d pool images (every %d-th; %d dropped) in %.1f s",
                      fitted["n_target"], fitted["n_pool"], stride, fitted["n_dropped"] + len(stats.errors),
                      time.perf_counter() - start)  # fmt: skip
        return url


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_is_transient)
def score_shard(
    shard_url: str,
    expected_n: int,
    teacher_url: str,
    out_url: str,
    cfg: ScoringConfig,
    hashes: bool = False,
    features: bool = False,
) -> str:
    """Write the shard's scores (index, energy, pred, max_softmax, entropy, margin, the relevance columns
    knn_sim, knn_agree, knn_nn, energy_cdf when the teacher has a target bank, and with ``hashes`` exact_hash and
    phash) and its drop counts; with ``features``, first the pooled features of the scored images."""
    url = layout.scores_url(out_url, shard_url)
    with one_writer(url):  # publish runs side by side may share a content-addressed scoring folder
        if storage.exists(url):
            return url  # written atomically, so presence means complete
        return _score(url, shard_url, expected_n, teacher_url, out_url, cfg, hashes, features)


def _score(url: str, shard_url: str, expected_n: int, teacher_url: str, out_url: str, cfg: ScoringConfig,
           hashes: bool, features: bool) -> str:  # fmt: skip
    setup_torch(parallel=True)
    start = time.perf_counter()
    model, preprocess, bank = _teacher(teacher_url, str(cfg.torch_device()))
    stats = tar_stream.ReadStats()
    result = score_stream(model, tar_stream.iter_shard(shard_url, stats), decode_image, preprocess, cfg, bank=bank,
                          hashes=hashes, features=features, ratio=_density_ratio(out_url, cfg))  # fmt: skip
    if stats.transient:
        # A flaky read is not a broken shard: keep no partial scores (resume would trust them); retry instead.
        raise storage.TransientStorageError(f"{shard_url}: storage failed mid-read ({stats.errors[-1]}); retrying")
    n_scored = len(result.frame)
    if features:  # before the scores: present scores imply present features
        write_npz(layout.pool_features_url(out_url, shard_url), indices=result.frame["index"].to_numpy(),
                  features=result.features)  # fmt: skip
    meta = {
        "shard": shard_url,
        "teacher": teacher_url,
        "expected": expected_n,
        "n_seen": result.n_seen,
        "n_scored": n_scored,
        "relevance": bank is not None,
        "hashes": hashes,
        "features": features,
        "density_ratio": cfg.density_ratio,
        "label_stability": cfg.label_stability,
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


def _density_ratio(out_url: str, cfg: ScoringConfig) -> DensityRatio | None:
    if not cfg.density_ratio:
        return None
    url = layout.density_ratio_url(out_url)
    if not storage.exists(url):
        raise FileNotFoundError(f"density_ratio is on but {url} does not exist: run fit_density_ratio (the publish "
                                "flow does) before scoring the shards")  # fmt: skip
    return DensityRatio.from_bytes(storage.read_bytes(url))
