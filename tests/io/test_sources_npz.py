"""``npz:PATH`` sources: the happy path, and every bad archive named with its array and the fix."""

from __future__ import annotations

import re

import numpy as np
import pytest
from source_checks import keys_ok

from plada_core.images import decode_image
from plada_core.io.sources import open_source


def test_npz_happy_path(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
    path = tmp_path / "my set.npz"
    np.savez(path, images=rgb, labels=np.array([0, 2, 1, 2, 0]), class_names=np.array(["a", "b", "c"]))
    source = open_source(f"npz:{path}")
    assert len(source) == 5 and source.class_names == ["a", "b", "c"] and source.name == "my_set"
    samples = keys_ok(source)
    assert samples[1].label == 2 and np.array_equal(decode_image(samples[1].data), rgb[1])

def test_a_single_channel_axis_and_a_label_column_are_the_same_data(tmp_path):
    """Keras-style arrays: images (N,H,W,1) and labels (N,1) read as (N,H,W) and (N,)."""
    gray = np.random.default_rng(0).integers(0, 256, (3, 4, 5, 1), dtype=np.uint8)
    np.savez(tmp_path / "k.npz", images=gray, labels=np.array([[1], [0], [2]]))
    source = open_source(f"npz:{tmp_path / 'k.npz'}")
    images, labels = source.load_arrays()
    assert images.shape == (3, 4, 5) and np.array_equal(images, gray[..., 0]) and labels.tolist() == [1, 0, 2]


def test_npz_without_class_names_numbers_the_classes(tmp_path):
    np.savez(tmp_path / "p.npz", images=np.zeros((3, 2, 2), np.uint8), labels=np.array([0, 10, 4]))
    assert open_source(f"npz:{tmp_path / 'p.npz'}").class_names == [str(c) for c in range(11)]

@pytest.mark.parametrize(
    "arrays, match",
    [
        (dict(images=np.zeros((2, 4, 4)), labels=np.zeros(2, int)),
         r"array 'images' has dtype float64; expected uint8 \(N,H,W\) or \(N,H,W,3\)"),
        (dict(images=np.zeros((2, 16), np.uint8), labels=np.zeros(2, int)), r"array 'images' has shape \(2, 16\)"),
        (dict(images=np.zeros((2, 4, 4, 4), np.uint8), labels=np.zeros(2, int)), r"drop the alpha channel"),
        (dict(images=np.zeros((2, 4, 4), np.float32), labels=np.zeros(2, int)), r"\(images \* 255\)\.round\(\)"),
        (dict(images=np.zeros((2, 4, 4), np.uint8), labels=np.zeros(3, int)), "2 images but 3 labels"),
        (dict(images=np.zeros((2, 4, 4), np.uint8), labels=np.zeros(2)), r"array 'labels' has dtype float64"),
        (dict(images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, -1])), "class ids must be >= 0"),
        (dict(labels=np.zeros(2, int)), r"no array 'images' \(it has \['labels'\]\)"),
        (dict(images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, 3]), class_names=np.array(["a"])),
         "one name per class id"),
    ],
)
def test_npz_bad_arrays_name_file_array_and_fix(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match) as info:
        open_source(f"npz:{path}")
    assert str(path) in str(info.value)

def test_npz_missing_file_and_not_an_npz(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"npz:{tmp_path}/none.npz: file not found")):
        open_source(f"npz:{tmp_path}/none.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match=r"text\.npz: not a readable \.npz archive"):
        open_source(f"npz:{tmp_path}/text.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single .npy array, not an .npz"):
        open_source(f"npz:{tmp_path}/single.npy")
