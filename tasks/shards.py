"""Plan the fan-out: which shards a scoring run maps over."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from plada_core.io import pool


@task(cache_policy=NO_CACHE)
def plan_shards(reference_url: str) -> list[dict]:
    """``[{"url", "n"}]`` for every shard of the pool, in canonical order."""
    return pool.list_shards(reference_url)
