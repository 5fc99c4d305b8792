"""Select from all shard scores, then write the manifest and the payload (the bytes that travel).

The selection itself is ``plada_core.publishing.select_and_pack``; this task reads its inputs (scores, with the
drop check, pool reference, layout and index, teacher metadata) and writes its outputs."""

from __future__ import annotations

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from plada_core.io import checkpoints, pool, storage, tables
from plada_core.io.scores import read_scores
from plada_core.payload import PAPER_CODEC, uses_layout
from plada_core.proxy import without_pool_images
from plada_core.publishing import select_and_pack
from plada_core.selection import SelectionConfig
from tasks.common import logger


def _check_drop_rate(drops: dict, max_drop_rate: float) -> None:
    rate = drops["n_dropped"] / max(drops["expected"], 1)
    if rate > max_drop_rate:
        worst = sorted(drops["shards"], key=lambda s: -s["n_dropped"])[:3]
        raise RuntimeError(
            f"{drops['n_dropped']} of {drops['expected']} reference images ({rate:.2%}) could not be scored, above "
            f"max_drop_rate={max_drop_rate:.2%}. Worst shards: {[(s['shard'], s['n_dropped']) for s in worst]}. "
            "Repair or rebuild those shards (then delete their scores files), or raise max_drop_rate."
        )


@task(cache_policy=NO_CACHE)
def select_and_encode(
    score_urls: list[str],
    reference_url: str,
    teacher_url: str,
    out_url: str,
    cfg: SelectionConfig,
    max_drop_rate: float = 0.01,
    codec: str = PAPER_CODEC,
    max_payload_bytes: int | None = None,
    max_kept: int | None = None,
    task: str | None = None,
    version: str | None = None,
    exclude: list[int] | None = None,
    extra: dict | None = None,
    student_recipe: dict | None = None,
) -> dict:
    """Write ``manifest.parquet``, ``payload.plada`` and ``selection.json`` under ``out_url``; return their URLs.

    With ``max_payload_bytes``, ``cfg.keep`` is replaced by the largest count whose payload fits (budget mode), at
    most ``max_kept`` (the validated winner's count, so that the payload holds the selection that was measured);
    the summary's ``keep_reached`` says which fraction of the pool that is. ``codec="auto"`` encodes with every
    registered codec and keeps the smallest payload (the summary's ``codec`` names the one kept). The payload
    carries the teacher's class names, the ``task`` and release ``version`` when given (release names) and the
    ``student_recipe`` the publisher recommends (payload format 3) when given.
    Pool images in ``exclude`` (indices) are never selected, a fraction ``keep`` still meaning a share of every
    scored image (``plada_core.proxy.without_pool_images``); ``extra`` (the validation table, the leakage
    check) goes into ``selection.json`` and the manifest's metadata.
    """
    ref = pool.read_reference(reference_url)
    scores, drops = read_scores(score_urls)
    _check_drop_rate(drops, max_drop_rate)
    # pool images in ``exclude`` (duplicates of target test images) never take a place; the budget stays the same
    scores, cfg = without_pool_images(scores, np.asarray(exclude or [], np.int64), cfg)
    _, teacher = checkpoints.load_checkpoint(teacher_url)
    result = select_and_pack(
        scores,
        teacher["class_names"],
        cfg,
        codec,
        n_reference=ref["n"],
        fingerprint=ref["fingerprint"],
        index=lambda kept: pool.read_index(reference_url, kept, ["index", "key", "shard"]),
        layout=pool.read_layout(reference_url) if uses_layout(codec) else None,
        max_bytes=max_payload_bytes,
        max_kept=max_kept,
        meta={"teacher": {"url": teacher_url, "model": teacher["model"], "test_acc": teacher.get("test_acc"),
                          "classes_without_train_images": teacher.get("classes_without_train_images")},
              **(extra or {})},  # fmt: skip
        task=task,
        version=version,
        student_recipe=student_recipe,
    )
    urls = {"manifest": storage.join(out_url, "manifest.parquet"), "payload": storage.join(out_url, "payload.plada")}
    tables.write_table(result.manifest, urls["manifest"])
    storage.write_bytes(urls["payload"], result.payload)
    summary = {**result.summary, "drops": drops, **(extra or {}), **urls}
    storage.write_json(storage.join(out_url, "selection.json"), summary)
    logger().info("kept %d of %d images; payload %d bytes (%s)", summary["n_kept"], ref["n"], summary["payload_bytes"],
                  summary["codec"])  # fmt: skip
    return summary
