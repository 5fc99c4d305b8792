"""Parquet on any fsspec URL, written atomically, with schema metadata kept intact."""

from __future__ import annotations

import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from plada_core.io import storage

__all__ = ["read_frame", "read_table", "table_metadata", "write_frame", "write_table"]


def write_table(table: pa.Table, url: str) -> str:
    """Write ``table`` (zstd) to ``url``; the object appears only once complete."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return storage.write_bytes(url, buf.getvalue())


def write_frame(frame: pd.DataFrame, url: str, metadata: dict | None = None) -> str:
    """Write a DataFrame, with ``metadata`` stored as JSON under the ``plada`` schema key."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"plada": json.dumps(metadata)})
    return write_table(table, url)


def read_table(url: str) -> pa.Table:
    data = storage.read_bytes(url)
    try:
        return pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"{url} is not a readable Parquet file ({exc}); delete it and re-run the step") from exc


def read_frame(url: str) -> pd.DataFrame:
    return read_table(url).to_pandas()


def table_metadata(table: pa.Table) -> dict:
    """The JSON stored under the ``plada`` schema key ({} when absent)."""
    raw = (table.schema.metadata or {}).get(b"plada")
    return json.loads(raw) if raw else {}
