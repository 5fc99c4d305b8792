"""The source registry and what every source shares: spec parsing, the seeded stratified split, PNG encoding.

Each kind of source has its own test file (tests/io/test_sources_<kind>.py), as each has its own module.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from plada_core.images import decode_image, encode_png
from plada_core.io.sources import SOURCES, open_source, stratified_split


def test_bad_split_and_unknown_prefix():
    with pytest.raises(ValueError, match="unknown split 'val'"):
        open_source("mnist5k:val")
    with pytest.raises(ValueError, match=r"prefix 'mnist' is not one of .*'mnist5k'"):
        open_source("mnist:train")
    assert {"sklearn-digits", "mnist5k", "animal-mnist", "fashion-mnist", "cifar10", "tiny-imagenet", "npz",
            "parquet", "imagefolder"} <= set(SOURCES)

def test_split_is_deterministic_stratified_and_disjoint():
    labels = open_source("sklearn-digits").load_arrays()[1]
    train, test = stratified_split(labels, 0.5)
    again = stratified_split(labels, 0.5)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert np.intersect1d(train, test).size == 0 and len(train) + len(test) == len(labels)
    per_class = np.bincount(labels[test], minlength=10) / np.bincount(labels, minlength=10)
    assert np.all(np.abs(per_class - 0.5) < 0.01)
    # The source's split is this split: train images are the arrays at the train positions.
    images = open_source("sklearn-digits").load_arrays()[0]
    assert np.array_equal(open_source("sklearn-digits:train").load_arrays()[0], images[train])

def test_split_sizes_add_up_for_awkward_fractions():
    labels = np.repeat(np.arange(3), [7, 5, 1])
    train, test = stratified_split(labels, 0.2)
    assert len(test) == 3 and len(train) == 10  # ceil(13 * 0.2)
    assert len(stratified_split(np.zeros(111100, int), 0.1)[1]) == 11110  # no float-rounding off-by-one

# --- encoding -------------------------------------------------------------------------------------------------------

def test_png_round_trip_is_lossless_for_gray_and_rgb():
    rng = np.random.default_rng(3)
    for shape in [(7, 9), (7, 9, 3)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        data = encode_png(image)
        assert Image.open(io.BytesIO(data)).mode == ("L" if len(shape) == 2 else "RGB")
        assert np.array_equal(decode_image(data), image)

def test_decode_image_normalises_modes_and_rejects_garbage():
    buf = io.BytesIO()
    Image.new("RGBA", (3, 2), (10, 20, 30, 40)).save(buf, format="PNG")
    assert decode_image(buf.getvalue()).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="undecodable image"):
        decode_image(b"definitely not an image")
    with pytest.raises(ValueError, match="undecodable image"):
        decode_image(encode_png(np.zeros((20, 20), np.uint8))[:40])  # truncated
