"""Content digests: what a release was made from, and the keys under which reusable work is kept.

Pure functions of values (no storage access): the io side reads the data and hands fingerprints in.

- ``array_fingerprint``: a target split's content (decoded pixels, labels, class names), so a release notices new
  or relabelled target data even when its source spec is the same string.
- ``input_digest``: everything a release depends on: the request with every default resolved (less the fields
  that name the output or override the check, ``NOT_INPUTS``), the fingerprints of the target splits, the pool
  and a given teacher checkpoint, and the package version. Equal digests mean a new release would repeat the
  latest one.
- ``teacher_key`` and ``scores_key``: the part of those inputs a teacher, and a pool's shard scores, depend on.
  Changing the keep, the selector or the codec leaves both unchanged, so a new release re-selects from the scores
  it already has (``plada_core.io.layout.teacher_cache_url`` / ``scores_cache_url`` turn keys into paths).

Every digest is a SHA-256 over canonical JSON (sorted keys, no whitespace) tagged with ``DIGEST_FORMAT``: a change
of what goes in bumps the format, so old digests never match by accident.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DIGEST_FORMAT",
    "NOT_INPUTS",
    "array_fingerprint",
    "digest_of",
    "input_digest",
    "scores_key",
    "teacher_key",
]

DIGEST_FORMAT = 1
# Request fields that are not inputs: ``version`` names the output, ``force`` overrides the check itself.
NOT_INPUTS = ("version", "force")
# Scoring settings that do not change a single score: when to fail on unreadable images, how batches are fed.
_NOT_SCORE_INPUTS = ("max_drop_rate", "prefetch")


def digest_of(value: Any) -> str:
    """SHA-256 (hex) of ``value`` as canonical JSON; tuples and lists hash alike, dict order does not matter."""
    text = json.dumps({"format": DIGEST_FORMAT, "value": value}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def array_fingerprint(images: np.ndarray | Sequence[np.ndarray], labels: np.ndarray,
                      class_names: Iterable[str]) -> str:  # fmt: skip
    """SHA-256 of a labelled image set in order: each image's shape, dtype and pixels, the labels, the names.

    Decoded pixels, not file bytes: re-encoding a PNG or moving the files leaves it alone; one changed pixel,
    label, class name or a reordering changes it. ``images`` is one (N, H, W[, C]) array or a list of arrays."""
    h = hashlib.sha256(f"plada-arrays-{DIGEST_FORMAT}".encode())
    for image in images:  # one stacked array or a list of images of any shapes: the same digest
        image = np.ascontiguousarray(image)
        h.update(f"{image.dtype.str}{image.shape}".encode())
        h.update(image.tobytes())
    labels = np.ascontiguousarray(np.asarray(labels, dtype=np.int64))
    h.update(f"labels{labels.shape}".encode() + labels.tobytes())
    h.update(json.dumps(list(class_names)).encode())
    return h.hexdigest()


def input_digest(request: Mapping[str, Any], fingerprints: Mapping[str, str | None], package_version: str) -> str:
    """The digest of a release's inputs: ``request`` (a ``model_dump(mode="json")``, all defaults resolved; the
    ``NOT_INPUTS`` fields are dropped here), the data ``fingerprints`` and the ``package_version``."""
    inputs = {k: v for k, v in request.items() if k not in NOT_INPUTS}
    return digest_of({"request": inputs, "fingerprints": dict(fingerprints), "package": package_version})


def teacher_key(teacher: Mapping[str, Any], holdout: Mapping[str, Any], fingerprints: Mapping[str, str | None],
                package_version: str) -> str:  # fmt: skip
    """Key of a teacher folder: its ``TeacherConfig`` (as a dict: model, training, preprocessing, checkpoint), the
    validation ``holdout`` settings (the teacher fits what they leave), the target train and test fingerprints
    (its test accuracy and leakage hashes come from the test split), a given checkpoint's fingerprint, and the
    package version."""
    data = {k: fingerprints.get(k) for k in ("target_train", "target_test", "teacher_checkpoint")}
    return digest_of({"teacher": dict(teacher), "holdout": dict(holdout), "data": data, "package": package_version})


def scores_key(teacher: str, scoring: Mapping[str, Any], hashes: bool, features: bool) -> str:
    """Key of a pool's shard scores under one teacher (``teacher_key``): the scoring settings that change a score,
    and whether the pass also stored image hashes and pooled features (a pass without them cannot stand in for
    one with them). The pool's fingerprint is a path segment of its own (``scores_cache_url``)."""
    settings = {k: v for k, v in scoring.items() if k not in _NOT_SCORE_INPUTS}
    return digest_of({"teacher": teacher, "scoring": settings, "hashes": hashes, "features": features})
