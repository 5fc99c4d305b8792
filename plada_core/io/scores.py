"""Reading a publish run's per-shard score tables back (written by the scoring task, one Parquet file per shard)."""

from __future__ import annotations

import pandas as pd

from plada_core.io import tables

__all__ = ["read_scores"]


def read_scores(score_urls: list[str]) -> tuple[pd.DataFrame, dict]:
    """All shard scores (a few bytes per image) sorted by pool index, and the summed drop counts with per-shard
    detail (``expected``, ``n_dropped``, ``shards``: the shards that dropped images)."""
    frames, drops = [], {"expected": 0, "n_dropped": 0, "shards": []}
    for url in score_urls:
        table = tables.read_table(url)
        meta = tables.table_metadata(table)
        frames.append(table.to_pandas())
        drops["expected"] += meta.get("expected", table.num_rows)
        drops["n_dropped"] += meta.get("n_dropped", 0)
        if meta.get("n_dropped"):
            drops["shards"].append({k: meta.get(k) for k in ("shard", "n_dropped", "read_errors", "undecodable")})
    return pd.concat(frames, ignore_index=True).sort_values("index", ignore_index=True), drops
