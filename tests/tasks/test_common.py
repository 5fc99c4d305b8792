"""Target splits are read one image at a time: preprocessed, fingerprinted and hashed without holding the split
at native size, with the same results as from the held arrays."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from plada_core.datasets import labelled_tensors
from plada_core.digest import array_fingerprint
from plada_core.images import PreprocessConfig
from plada_core.io import pool
from plada_core.io.sources import Source, open_source
from tasks.common import load_split
from tasks.inputs import fingerprint_inputs


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        path = tmp_path / "photos" / f"c{i % 2}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40 + i, 30, 3), dtype=np.uint8)).save(path)
    return f"imagefolder:{tmp_path / 'photos'}"


def test_splits_are_streamed_never_held_and_give_what_the_held_arrays_give(photos, tmp_path, monkeypatch):
    cfg = PreprocessConfig(image_size=8, channels=3)
    pool_url = str(tmp_path / "pool")
    pool.build_reference([open_source(photos.replace("imagefolder:", "images:"))], pool_url, progress=False)
    source = open_source(photos)
    images, labels = source.load_arrays()
    x_held, y_held = labelled_tensors(images, labels, cfg)
    digest_held = array_fingerprint(images, labels, source.class_names)

    def held(self):
        raise AssertionError("a target split was loaded whole")

    monkeypatch.setattr(Source, "load_arrays", held)
    x, y, names = load_split(photos, cfg)
    assert np.array_equal(x.numpy(), x_held.numpy()) and np.array_equal(y.numpy(), y_held.numpy())
    assert names == ["c0", "c1"]
    fingerprints = fingerprint_inputs.fn(photos, photos, pool_url)
    assert fingerprints["target_train"] == fingerprints["target_test"] == digest_held  # the digest did not change
