"""Named numpy arrays as one ``.npz`` file on any URL (the validation split, target hashes, pooled features)."""

from __future__ import annotations

import io

import numpy as np

from plada_core.io import storage

__all__ = ["read_npz", "write_npz"]


def write_npz(url: str, **arrays: np.ndarray) -> str:
    """Store ``arrays`` under their names (uncompressed; written atomically like every storage write)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return storage.write_bytes(url, buf.getvalue())


def read_npz(url: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file at ``url``; object arrays are refused (``allow_pickle=False``)."""
    with np.load(io.BytesIO(storage.read_bytes(url)), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}
