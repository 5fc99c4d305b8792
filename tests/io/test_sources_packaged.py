"""Data sets inside installed packages: ``sklearn-digits``, ``mnist5k``, ``animal-mnist``."""

from __future__ import annotations

import numpy as np
from source_checks import keys_ok

from plada_core.images import decode_image
from plada_core.io.sources import open_source


def test_digits_loads_scaled_and_splits_50_50():
    images, labels = open_source("sklearn-digits").load_arrays()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8 and images.max() == 255
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(10))
    train, test = open_source("sklearn-digits:train"), open_source("sklearn-digits:test")
    assert (len(train), len(test)) == (898, 899)
    assert train.name == "sklearn-digits-train" and train.class_names == [str(d) for d in range(10)]

def test_mnist5k_and_animal_mnist_shapes_and_splits():
    for spec, n, names in [("mnist5k", 5000, [str(d) for d in range(10)]),
                           ("animal-mnist", 10000, ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe",
                                                    "horse", "sheep", "zebra"])]:
        images, labels = open_source(spec).load_arrays()
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.min() == 0 and labels.max() == 9 and open_source(spec).class_names == names
        assert (len(open_source(f"{spec}:train")), len(open_source(f"{spec}:test"))) == (n * 4 // 5, n // 5)

def test_builtin_keys_valid_unique_and_png_lossless():
    source = open_source("mnist5k:test")
    samples = keys_ok(source)
    images, labels = source.load_arrays()
    assert samples[0].key == "mnist5k-test-00000000" and samples[0].ext == "png"
    for i in (0, 500, 999):
        assert np.array_equal(decode_image(samples[i].data), images[i]) and samples[i].label == labels[i]
