"""Checks shared by the source tests: valid, unique sample keys, and JPEG bytes for test files."""

import io
import re

import numpy as np
from PIL import Image

KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def keys_ok(source, limit: int | None = None) -> list:
    """The first ``limit`` (default: all) samples of ``source``, after checking that their keys are webdataset-safe
    and unique."""
    samples = [s for _, s in zip(range(limit or len(source)), source.iter_encoded())]
    keys = [s.key for s in samples]
    assert all(KEY.match(k) for k in keys), [k for k in keys if not KEY.match(k)][:3]
    assert len(set(keys)) == len(keys)
    return samples

def jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()
