"""The label manifest: the server-side, full-detail record of a selection (the payload is its summary).

One row per kept image, sorted by global index, with an explicit schema so every consumer (pandas,
pyarrow, duckdb) reads the same types, and run metadata (reference fingerprint, teacher, selector,
config, class names) under the ``plada`` schema metadata key.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = ["MANIFEST_SCHEMA", "MANIFEST_VERSION", "build_manifest", "validate_manifest"]

MANIFEST_VERSION = 1
MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("index", pa.int64(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("energy", pa.float32()),
        pa.field("max_softmax", pa.float32()),
        pa.field("entropy", pa.float32()),
    ]
)
_REQUIRED_META = ("reference_fingerprint", "teacher", "selector", "config", "class_names")


def build_manifest(kept: pd.DataFrame, index: pd.DataFrame, metadata: dict) -> pa.Table:
    """Join kept scores (``index``, ``pred`` and score columns) with the pool index (``key``, ``shard``).

    ``metadata`` must hold at least reference_fingerprint, teacher, selector, config and class_names.
    """
    missing = [k for k in _REQUIRED_META if k not in metadata]
    if missing:
        raise ValueError(f"manifest metadata is missing {missing}")
    rows = kept.sort_values("index").merge(index[["index", "key", "shard"]], on="index", how="left", validate="1:1")
    if rows["key"].isna().any():
        bad = rows.loc[rows["key"].isna(), "index"].head(5).tolist()
        raise ValueError(f"kept indices {bad} are not in the reference index: scores and pool do not match")
    frame = pd.DataFrame(
        {
            "index": rows["index"].astype(np.int64),
            "label": rows["pred"].astype(np.int32),
            "key": rows["key"].astype(str),
            "shard": rows["shard"].astype(str),
            "energy": rows["energy"].astype(np.float32),
            "max_softmax": rows["max_softmax"].astype(np.float32),
            "entropy": rows["entropy"].astype(np.float32),
        }
    )
    meta = {b"plada": json.dumps({"manifest_version": MANIFEST_VERSION, **metadata}, default=str).encode()}
    table = pa.Table.from_pandas(frame, schema=MANIFEST_SCHEMA, preserve_index=False)
    return table.replace_schema_metadata(meta)


def validate_manifest(table: pa.Table) -> dict:
    """Check schema, sortedness and uniqueness; return the metadata dict."""
    if not table.schema.remove_metadata().equals(MANIFEST_SCHEMA):
        raise ValueError(f"manifest schema differs from MANIFEST_SCHEMA: got {table.schema.remove_metadata()}")
    meta = json.loads((table.schema.metadata or {}).get(b"plada", b"{}"))
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"manifest metadata is missing {missing}")
    idx = table.column("index").to_numpy()
    if len(idx) > 1 and not (np.diff(idx) > 0).all():
        raise ValueError("manifest indices must be unique and sorted ascending")
    labels = table.column("label").to_numpy()
    if len(labels) and (labels.min() < 0 or labels.max() >= len(meta["class_names"])):
        raise ValueError(f"manifest labels must be in [0, {len(meta['class_names'])})")
    return meta
