"""Parquet sources: ``parquet:PATH`` on tiny files, and ``cifar10`` / ``tiny-imagenet`` from the data folder."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from source_checks import jpeg, keys_ok

from plada_core.images import decode_image
from plada_core.io import sources
from plada_core.io.sources import open_source

DATA_DIR = sources.resolve_data_dir()
HAS_CIFAR = (DATA_DIR / "cifar10" / "test.parquet").is_file()
HAS_TINY = any((DATA_DIR / "tiny-imagenet-32").glob("pool-*.parquet"))


@pytest.mark.natural
@pytest.mark.skipif(not HAS_CIFAR, reason=f"CIFAR-10 parquet absent under {DATA_DIR}; set PLADA_DATA_DIR")
def test_cifar10_test_split():
    source = open_source("cifar10:test")
    assert len(source) == 10000 and source.class_names[0] == "airplane" and source.class_names[-1] == "truck"
    first = keys_ok(source, limit=50)[0]
    assert first.ext == "jpg" and first.key == "cifar10-test-airplane_0000"
    assert decode_image(first.data).shape == (32, 32, 3)

@pytest.mark.natural
@pytest.mark.skipif(not HAS_TINY, reason=f"Tiny-ImageNet parquet absent under {DATA_DIR}; set PLADA_DATA_DIR")
def test_tiny_imagenet_pool_and_split():
    pool = open_source("tiny-imagenet")
    assert len(pool) == 111100 and len(pool.class_names) == 202 and pool.class_names[0].startswith("goldfish")
    train, test = open_source("tiny-imagenet:train"), open_source("tiny-imagenet:test")
    assert (len(train), len(test)) == (99990, 11110)
    assert not {s.key.split("-", 3)[-1] for s in keys_ok(test, 300)} & {s.key.split("-", 3)[-1]
                                                                         for s in keys_ok(train, 300)}

def test_missing_data_dir_names_the_variable(tmp_path):
    with pytest.raises(FileNotFoundError, match="PLADA_DATA_DIR"):
        open_source("cifar10:train", data_dir=tmp_path / "nowhere")

def _write_parquet(path, keys, images, labels):
    table = pa.table({"key": keys, "jpg": [jpeg(x) for x in images], "label": pa.array(labels, pa.int16())})
    pq.write_table(table, path, row_group_size=2)

def test_parquet_file_and_folder_stream_original_bytes(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    _write_parquet(tmp_path / "a.parquet", ["x/0", "x/1", "x.2"], images[:3], [0, 1, 1])
    _write_parquet(tmp_path / "b.parquet", ["y 0", "y 1"], images[3:], [2, 0])
    (tmp_path / "classes.txt").write_text("cat\ndog\nfox\n")
    one = open_source(f"parquet:{tmp_path}/a.parquet")
    assert len(one) == 3 and one.class_names == ["cat", "dog", "fox"]
    assert [s.key for s in one.iter_encoded()] == ["a-x_0", "a-x_1", "a-x_2"]
    folder = open_source(f"parquet:{tmp_path}")
    samples = keys_ok(folder)
    assert [s.label for s in samples] == [0, 1, 1, 2, 0] and all(s.ext == "jpg" for s in samples)
    assert samples[3].data == jpeg(images[3])  # passed through byte for byte
    x, y = folder.load_arrays()
    assert x.shape == (5, 8, 8, 3) and y.tolist() == [0, 1, 1, 2, 0]

def test_parquet_colliding_keys_fall_back_to_positions(tmp_path):
    _write_parquet(tmp_path / "c.parquet", ["a.b", "a_b"], np.zeros((2, 4, 4), np.uint8), [0, 0])
    source = open_source(f"parquet:{tmp_path}/c.parquet")
    assert source.positional_keys and [s.key for s in source.iter_encoded()] == ["c-00000000", "c-00000001"]

def test_parquet_exports_with_an_image_struct_and_no_key(tmp_path):
    """The Hugging Face layout: image = struct<bytes, path>, label, no key; rows keyed by file and position."""
    images = np.random.default_rng(2).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    image = pa.array([{"bytes": jpeg(x), "path": f"{i}.jpg"} for i, x in enumerate(images)])
    pq.write_table(pa.table({"image": image, "label": pa.array([2, 0, 1])}), tmp_path / "train-00000.parquet",
                   row_group_size=2)  # fmt: skip
    pq.write_table(pa.table({"png": [jpeg(images[0])], "label": [1]}), tmp_path / "more.parquet")
    pq.write_table(pa.table({"key": [7], "jpg": [jpeg(images[1])], "label": [0]}), tmp_path / "z.parquet")  # int key
    source = open_source(f"parquet:{tmp_path}")
    samples = keys_ok(source)
    name = tmp_path.name
    assert [s.key for s in samples] == [f"{name}-more-00000000", *(f"{name}-train-00000-{i:08d}" for i in range(3)),
                                        f"{name}-7"]  # fmt: skip
    assert [s.label for s in samples] == [1, 2, 0, 1, 0] and samples[1].data == jpeg(images[0])
    assert source.class_names == ["0", "1", "2"] and source.load_arrays()[0].shape == (5, 8, 8, 3)


def test_parquet_missing_column_and_path(tmp_path):
    pq.write_table(pa.table({"key": ["k"], "label": [0]}), tmp_path / "nojpg.parquet")
    with pytest.raises(ValueError, match=r"nojpg.parquet has columns \{'key': 'string', 'label': 'int64'\}; expected "
                       r"the encoded image bytes .* 'jpg', 'png', 'image', 'img', an int column 'label'"):
        open_source(f"parquet:{tmp_path}/nojpg.parquet")
    pq.write_table(pa.table({"jpg": [b"x"], "label": ["cat"]}), tmp_path / "strlabel.parquet")
    with pytest.raises(ValueError, match=r"strlabel.parquet has columns .*an int column 'label'"):
        open_source(f"parquet:{tmp_path}/strlabel.parquet")
    pq.write_table(pa.table({"image": ["not bytes"], "label": [0]}), tmp_path / "str.parquet")
    with pytest.raises(ValueError, match=r"str.parquet has columns"):
        open_source(f"parquet:{tmp_path}/str.parquet")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        open_source(f"parquet:{tmp_path}/nothing")
