"""Publishing, pure: scores in memory → the kept images, their manifest and the payload that travels.

The four stages of a publish after scoring, in order: the budget search (only with ``max_bytes``: the largest
``keep`` whose payload fits), the selection, the manifest (the server's full record) and the encoding. Reading
scores and writing the results is the caller's business (``tasks.select`` for a run, the selection benchmark
in memory), so both publish with exactly the same code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from plada_core.budget import largest_k_within
from plada_core.config import to_dict
from plada_core.manifest import build_manifest
from plada_core.payload import encode_payload, read_header
from plada_core.selection import SelectionConfig, select

__all__ = ["PackResult", "select_and_pack"]

IndexLookup = Callable[[np.ndarray], pd.DataFrame]


@dataclass(frozen=True)
class PackResult:
    """What a publish produces: ``kept`` (the selected score rows, in index order), ``manifest`` (a table that
    ``plada_core.manifest.validate_manifest`` accepts), ``payload`` (the bytes that travel) and ``summary``
    (counts, sizes, the selection config actually used and the codec that won; JSON-ready)."""

    kept: pd.DataFrame
    manifest: pa.Table
    payload: bytes
    summary: dict


def select_and_pack(
    scores: pd.DataFrame,
    class_names: list[str],
    cfg: SelectionConfig,
    codec: str,
    *,
    n_reference: int,
    fingerprint: str,
    index: pd.DataFrame | IndexLookup,
    layout: np.ndarray | None = None,
    max_bytes: int | None = None,
    max_kept: int | None = None,
    meta: dict | None = None,
    task: str | None = None,
    version: str | None = None,
    student_recipe: dict | None = None,
) -> PackResult:
    """Select from ``scores`` (one row per scored pool image, sorted by ``index``, with ``pred`` and the score
    columns), then build the manifest and encode the payload for the pool ``(n_reference, fingerprint)``.

    ``codec`` is a registered codec name or ``"auto"`` (every codec that can run, smallest payload kept);
    ``layout`` is the pool's block layout, needed by layout codecs only. With ``max_bytes``, ``cfg.keep`` is
    replaced by the largest count whose payload fits (budget mode, ``plada_core.budget``), at most ``max_kept``
    (the count a validated candidate kept under the same budget: the published selection is then that one).
    ``index`` gives the pool index rows (``index``, ``key``, ``shard``) of the kept images: the whole index as a
    frame, or a callable from kept indices to their rows (so a huge index need not be read whole). ``meta`` holds
    the run's other manifest metadata (the teacher, say); the fingerprint, selector, config and class names are
    added here.

    The payload names the classes (format version 2, ``plada_core.payload``), and the ``task``, release
    ``version`` and ``student_recipe`` (format 3) when given, so a client needs nothing but the pool and the
    payload; the budget counts those bytes.
    """
    n_classes = len(class_names)
    columns = {c: scores[c].to_numpy() for c in scores.columns}

    def kept_at(config: SelectionConfig) -> pd.DataFrame:
        return scores.iloc[select(columns, n_classes, config)]

    def encode(kept: pd.DataFrame) -> bytes:
        return encode_payload(kept["index"].to_numpy(), kept["pred"].to_numpy(), n_reference=n_reference,
                              n_classes=n_classes, fingerprint=fingerprint, codec=codec, layout=layout,
                              class_names=class_names, task=task, version=version,
                              student_recipe=student_recipe)  # fmt: skip

    payload = None
    if max_bytes is not None:
        # the search encodes each k it tries; the payload of the k it returns is reused, not encoded again
        n = len(scores) if max_kept is None else min(max_kept, len(scores))
        k, payload = largest_k_within(max_bytes, n, lambda k: encode(kept_at(dataclasses.replace(cfg, keep=k))))
        cfg = dataclasses.replace(cfg, keep=k)
    kept = kept_at(cfg)
    manifest_meta = {
        "reference_fingerprint": fingerprint,
        **(meta or {}),
        "selector": cfg.selector,
        "config": to_dict(cfg),
        "class_names": class_names,
    }
    rows = index(kept["index"]) if callable(index) else index
    manifest = build_manifest(kept, rows, manifest_meta)
    if payload is None:
        payload = encode(kept)
    summary = {
        "n_reference": n_reference,
        "n_scored": len(scores),
        "n_kept": len(kept),
        "keep_reached": len(kept) / n_reference,
        "payload_bytes": len(payload),
        "max_payload_bytes": max_bytes,
        "class_histogram": np.bincount(kept["pred"], minlength=n_classes).tolist(),
        "selection": to_dict(cfg),
        "codec": read_header(payload)["codec"],
        "codec_requested": codec,
    }
    return PackResult(kept, manifest, payload, summary)
