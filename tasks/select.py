"""Select from all shard scores, then write the manifest and the payload (the bytes that travel)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from plada_core.config import to_dict
from plada_core.io import checkpoints, pool, storage, tables
from plada_core.manifest import build_manifest
from plada_core.budget import largest_k_within
from plada_core.payload import encode_payload, read_header, uses_layout
from plada_core.selection import SelectionConfig, select
from tasks.common import logger


def _read_scores(score_urls: list[str]) -> tuple[pd.DataFrame, dict]:
    """All shard scores (a few bytes per image) and the summed drop counts with per-shard detail."""
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


def _check_drop_rate(drops: dict, max_drop_rate: float) -> None:
    rate = drops["n_dropped"] / max(drops["expected"], 1)
    if rate > max_drop_rate:
        worst = sorted(drops["shards"], key=lambda s: -s["n_dropped"])[:3]
        raise RuntimeError(
            f"{drops['n_dropped']} of {drops['expected']} reference images ({rate:.2%}) could not be scored, above "
            f"max_drop_rate={max_drop_rate:.2%}. Worst shards: {[(s['shard'], s['n_dropped']) for s in worst]}. "
            "Repair or rebuild those shards (then delete their scores files), or raise max_drop_rate."
        )


def _select_to_budget(scores: pd.DataFrame, n_classes: int, cfg: SelectionConfig, encode, max_bytes: int):
    """The largest selection (same selector and Safety-Net, k varied) whose payload fits ``max_bytes``."""
    columns = {c: scores[c].to_numpy() for c in scores.columns}

    def encode_at_k(k: int) -> bytes:
        return encode(scores.iloc[select(columns, n_classes, dataclasses.replace(cfg, keep=k))])

    k, _ = largest_k_within(max_bytes, len(scores), encode_at_k)
    return dataclasses.replace(cfg, keep=k)


@task(cache_policy=NO_CACHE)
def select_and_encode(
    score_urls: list[str],
    reference_url: str,
    teacher_url: str,
    out_url: str,
    cfg: SelectionConfig,
    max_drop_rate: float = 0.01,
    codec: str = "paper-zstd19",
    max_payload_bytes: int | None = None,
) -> dict:
    """Write ``manifest.parquet``, ``payload.plada`` and ``selection.json`` under ``out_url``; return their URLs.

    With ``max_payload_bytes``, ``cfg.keep`` is replaced by the largest count whose payload fits (budget mode);
    the summary's ``keep_reached`` says which fraction of the pool that is. ``codec="auto"`` encodes with every
    registered codec and keeps the smallest payload (the summary's ``codec`` names the one kept).
    """
    ref = pool.read_reference(reference_url)
    scores, drops = _read_scores(score_urls)
    _check_drop_rate(drops, max_drop_rate)
    _, teacher = checkpoints.load_checkpoint(teacher_url)
    class_names = teacher["class_names"]

    layout = pool.read_layout(reference_url) if uses_layout(codec) else None

    def encode(kept: pd.DataFrame) -> bytes:
        return encode_payload(kept["index"].to_numpy(), kept["pred"].to_numpy(), n_reference=ref["n"],
                              n_classes=len(class_names), fingerprint=ref["fingerprint"], codec=codec, layout=layout)

    if max_payload_bytes is not None:
        cfg = _select_to_budget(scores, len(class_names), cfg, encode, max_payload_bytes)
    kept = scores.iloc[select({c: scores[c].to_numpy() for c in scores.columns}, len(class_names), cfg)]
    meta = {
        "reference_fingerprint": ref["fingerprint"],
        "teacher": {"url": teacher_url, "model": teacher["model"], "test_acc": teacher.get("test_acc")},
        "selector": cfg.selector,
        "config": to_dict(cfg),
        "class_names": class_names,
    }
    manifest = build_manifest(kept, pool.read_index(reference_url, kept["index"], ["index", "key", "shard"]), meta)
    payload = encode(kept)
    urls = {"manifest": storage.join(out_url, "manifest.parquet"), "payload": storage.join(out_url, "payload.plada")}
    tables.write_table(manifest, urls["manifest"])
    storage.write_bytes(urls["payload"], payload)
    summary = {
        "n_reference": ref["n"],
        "n_scored": len(scores),
        "n_kept": len(kept),
        "keep_reached": len(kept) / ref["n"],
        "payload_bytes": len(payload),
        "max_payload_bytes": max_payload_bytes,
        "class_histogram": np.bincount(kept["pred"], minlength=len(class_names)).tolist(),
        "drops": drops,
        **urls,
        "selection": to_dict(cfg),
        "codec": read_header(payload)["codec"],
        "codec_requested": codec,
    }
    storage.write_json(storage.join(out_url, "selection.json"), summary)
    logger().info("kept %d of %d images; payload %d bytes (%s)", len(kept), ref["n"], len(payload), summary["codec"])
    return summary
