"""Plan the fan-out: which shards a scoring run maps over."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from plada_core.io import pool, storage


@task(cache_policy=NO_CACHE)
def plan_shards(reference_url: str) -> list[dict]:
    """``[{"url", "n"}]`` for every shard of the pool, in canonical order."""
    ref = pool.read_reference(reference_url)
    return [{"url": storage.join(reference_url, s["name"]), "n": s["n"]} for s in ref["shards"]]
