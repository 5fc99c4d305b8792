"""Build the reference pool once; a complete pool with the same sources is reused."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from plada_core.io import pool
from plada_core.io.sources import open_source
from tasks.common import logger


@task(cache_policy=NO_CACHE)
def build_reference_pool(specs: list[str], out_url: str, shard_size: int = pool.DEFAULT_SHARD_SIZE) -> str:
    """Shards + index + reference.json under ``out_url``; returns ``out_url``."""
    if pool.reference_exists(out_url):
        ref = pool.read_reference(out_url)
        if [s["spec"] for s in ref["sources"]] == list(specs):
            logger().info("reference pool at %s is complete (%d images); reusing it", out_url, ref["n"])
            return out_url
        raise ValueError(
            f"{out_url} already holds a reference pool built from {[s['spec'] for s in ref['sources']]}, "
            f"not {list(specs)}: choose another --out or delete it"
        )
    sources = [open_source(spec) for spec in specs]
    ref = pool.build_reference(sources, out_url, shard_size=shard_size)
    logger().info(
        "built reference pool: %d images in %d shards, fingerprint %s",
        ref["n"],
        len(ref["shards"]),
        ref["fingerprint"][:12],
    )
    for record in ref["sources"]:
        if record["n_unreadable"]:
            logger().warning("%s: %d unreadable image file(s) or sample(s) passed over (listed by the source at open)",
                             record["spec"], record["n_unreadable"])  # fmt: skip
    return out_url
