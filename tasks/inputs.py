"""What a release is made from: content fingerprints of its target splits, its pool and a given teacher checkpoint.

``publish-task`` digests them with the request (``plada_core.digest.input_digest``) before any work, so a night
whose inputs equal the latest release's trains and scores nothing.
"""

from __future__ import annotations

import hashlib
from importlib.metadata import PackageNotFoundError, version

from prefect import task
from prefect.cache_policies import NO_CACHE

from plada_core.digest import array_fingerprint
from plada_core.io import pool, storage
from plada_core.io.sources import open_source

__all__ = ["fingerprint_inputs", "package_version"]


def package_version() -> str:
    """The installed ``plada`` version (a new one may train and score differently, so it is an input)."""
    try:
        return version("plada")
    except PackageNotFoundError:  # a source tree on sys.path without an install: say so in the digest
        return "unknown"


@task(cache_policy=NO_CACHE)
def fingerprint_inputs(target_train: str, target_test: str, reference_url: str,
                       teacher_checkpoint: str | None = None) -> dict:  # fmt: skip
    """``{"target_train", "target_test"}``: ``array_fingerprint`` of each split's decoded images, labels and
    class names; ``"pool"``: the pool's own fingerprint (``reference.json``); ``"teacher_checkpoint"``: SHA-256 of
    a given checkpoint's bytes (None without one). A split or pool that cannot be read fails here, before any
    work, with the reader's error."""
    out: dict[str, str | None] = {}
    for name, spec in (("target_train", target_train), ("target_test", target_test)):
        source = open_source(spec)
        source.require_labels()
        out[name] = array_fingerprint(source.iter_images(), source.labels(), source.class_names)  # one image at a time
    out["pool"] = pool.read_reference(reference_url)["fingerprint"]
    out["teacher_checkpoint"] = (
        hashlib.sha256(storage.read_bytes(teacher_checkpoint)).hexdigest() if teacher_checkpoint else None
    )
    return out
