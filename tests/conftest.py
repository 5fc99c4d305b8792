"""Shared fixtures: offline Prefect settings and tiny real-data npz files (sklearn digits)."""

from __future__ import annotations

import os

# Before anything imports prefect: no telemetry on offline machines, generous startup on slow CI.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PLADA_TORCH_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.round(d.images * (255 / 16)).astype(np.uint8), d.target.astype(np.int64)


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> dict[str, str]:
    """Target train/test and a 300-image pool (digits + inverted-noise distractors) as ``npz:`` specs."""
    root = tmp_path_factory.mktemp("npz")
    images, labels = _digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    train, test, pool_digits = order[:200], order[200:400], order[400:600]
    distractors = rng.integers(0, 256, size=(100, 8, 8), dtype=np.uint8)
    pool_images = np.concatenate([images[pool_digits], distractors])
    pool_labels = np.concatenate([labels[pool_digits], np.full(100, 10)])
    specs = {}
    for name, (x, y) in {
        "train": (images[train], labels[train]),
        "test": (images[test], labels[test]),
        "pool": (pool_images, pool_labels),
    }.items():
        path = root / f"{name}.npz"
        np.savez(path, images=x, labels=y)
        specs[name] = f"npz:{path}"
    return specs
