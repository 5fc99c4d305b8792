"""``npz:PATH:train`` / ``:test`` (and parquet, imagefolder): data that comes in one piece, split for the user."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from source_checks import keys_ok

from plada_core.images import encode_png
from plada_core.io.sources import USER_TEST_FRACTION, open_source
from plada_core.io.sources.base import stratified_split


def _npz(path, n=30, classes=3):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 6, 6), dtype=np.uint8)
    labels = np.arange(n) % classes
    with open(path, "wb") as f:  # a file object: savez adds no .npz to a name that does not end in it
        np.savez(f, images=images, labels=labels)
    return images, labels


@pytest.fixture
def one_piece(tmp_path):
    """The same 30 labelled images as an npz file, a parquet file and an image folder."""
    images, labels = _npz(tmp_path / "d.npz")
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(len(labels))],
                             "image": [encode_png(image) for image in images],
                             "label": labels}), tmp_path / "d.parquet")  # fmt: skip
    for i, (image, label) in enumerate(zip(images, labels)):
        (tmp_path / "folder" / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "folder" / f"c{label}" / f"{i:03d}.png")
    return tmp_path, images, labels


@pytest.mark.parametrize("kind", ["npz", "imagefolder"])
def test_train_and_test_partition_the_source_stratified_and_seeded(one_piece, kind):
    root, images, labels = one_piece
    spec = f"npz:{root}/d.npz" if kind == "npz" else f"imagefolder:{root}/folder"
    whole = open_source(spec)
    train, test = open_source(f"{spec}:train"), open_source(f"{spec}:test")
    assert (len(train), len(test)) == (24, 6) and train.class_names == test.class_names == whole.class_names
    all_keys = [s.key for s in whole.iter_encoded()]
    train_keys, test_keys = [s.key for s in keys_ok(train)], [s.key for s in keys_ok(test)]
    assert not set(train_keys) & set(test_keys) and sorted(train_keys + test_keys) == sorted(all_keys)
    expected_train, expected_test = stratified_split(whole.labels(), USER_TEST_FRACTION)
    assert train_keys == [all_keys[i] for i in expected_train] and test_keys == [all_keys[i] for i in expected_test]
    assert np.bincount(test.labels()).tolist() == [2, 2, 2] and np.array_equal(train.load_arrays()[1], train.labels())
    assert [s.key for s in open_source(f"{spec}:test").iter_encoded()] == test_keys  # same split every time


def test_parquet_splits_and_a_file_named_like_a_split_wins(one_piece):
    root, _, _ = one_piece
    train, test = open_source(f"parquet:{root}/d.parquet:train"), open_source(f"parquet:{root}/d.parquet:test")
    assert (len(train), len(test)) == (24, 6) and not {s.key for s in train.iter_encoded()} & {
        s.key for s in test.iter_encoded()}  # fmt: skip
    odd = root / "odd"
    odd.mkdir()
    _npz(odd / "x.npz:test", n=4, classes=2)  # a file whose name ends like a split suffix is read as named
    assert len(open_source(f"npz:{odd}/x.npz:test")) == 4
    with pytest.raises(FileNotFoundError, match="file not found"):
        open_source(f"npz:{root}/none.npz:train")
