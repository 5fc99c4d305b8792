"""Image sources: built-in data, npz validation, parquet and image folders on tiny files, keys and encoding."""

from __future__ import annotations

import io
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from plada_core.io import sources
from plada_core.io.sources import SOURCES, decode_image, encode_png, open_source, stratified_split

KEY = re.compile(r"^[A-Za-z0-9_-]+$")
DATA_DIR = sources.resolve_data_dir()
HAS_FASHION = (sources.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file()
HAS_CIFAR = (DATA_DIR / "cifar10" / "test.parquet").is_file()
HAS_TINY = any((DATA_DIR / "tiny-imagenet-32").glob("pool-*.parquet"))


def _keys_ok(source, limit: int | None = None) -> list[sources.EncodedSample]:
    samples = [s for _, s in zip(range(limit or len(source)), source.iter_encoded())]
    keys = [s.key for s in samples]
    assert all(KEY.match(k) for k in keys), [k for k in keys if not KEY.match(k)][:3]
    assert len(set(keys)) == len(keys)
    return samples


def _jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


# --- built-in data -----------------------------------------------------------------------------------------------


def test_digits_loads_scaled_and_splits_50_50():
    images, labels = open_source("sklearn-digits").load_arrays()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8 and images.max() == 255
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(10))
    train, test = open_source("sklearn-digits:train"), open_source("sklearn-digits:test")
    assert (len(train), len(test)) == (898, 899)
    assert train.name == "sklearn-digits-train" and train.class_names == [str(d) for d in range(10)]


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
    samples = _keys_ok(source)
    images, labels = source.load_arrays()
    assert samples[0].key == "mnist5k-test-00000000" and samples[0].ext == "png"
    for i in (0, 500, 999):
        assert np.array_equal(decode_image(samples[i].data), images[i]) and samples[i].label == labels[i]


def test_bad_split_and_unknown_prefix():
    with pytest.raises(ValueError, match="unknown split 'val'"):
        open_source("mnist5k:val")
    with pytest.raises(ValueError, match=r"prefix 'mnist' is not one of .*'mnist5k'"):
        open_source("mnist:train")
    assert {"sklearn-digits", "mnist5k", "animal-mnist", "fashion-mnist", "cifar10", "tiny-imagenet", "npz",
            "parquet", "imagefolder"} <= set(SOURCES)


@pytest.mark.skipif(not HAS_FASHION, reason="Fashion-MNIST absent: apt-get install -y dataset-fashion-mnist")
def test_fashion_mnist_official_split():
    test = open_source("fashion-mnist:test")
    images, labels = test.load_arrays()
    assert images.shape == (10000, 28, 28) and np.bincount(labels).tolist() == [1000] * 10
    assert test.class_names[0] == "T-shirt/top" and len(open_source("fashion-mnist:train")) == 60000


def test_fashion_mnist_absent_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "FASHION_MNIST_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        open_source("fashion-mnist:train")


# --- natural images from the data folder -------------------------------------------------------------------------


@pytest.mark.natural
@pytest.mark.skipif(not HAS_CIFAR, reason=f"CIFAR-10 parquet absent under {DATA_DIR}; set PLADA_DATA_DIR")
def test_cifar10_test_split():
    source = open_source("cifar10:test")
    assert len(source) == 10000 and source.class_names[0] == "airplane" and source.class_names[-1] == "truck"
    first = _keys_ok(source, limit=50)[0]
    assert first.ext == "jpg" and first.key == "cifar10-test-airplane_0000"
    assert decode_image(first.data).shape == (32, 32, 3)


@pytest.mark.natural
@pytest.mark.skipif(not HAS_TINY, reason=f"Tiny-ImageNet parquet absent under {DATA_DIR}; set PLADA_DATA_DIR")
def test_tiny_imagenet_pool_and_split():
    pool = open_source("tiny-imagenet")
    assert len(pool) == 111100 and len(pool.class_names) == 202 and pool.class_names[0].startswith("goldfish")
    train, test = open_source("tiny-imagenet:train"), open_source("tiny-imagenet:test")
    assert (len(train), len(test)) == (99990, 11110)
    assert not {s.key.split("-", 3)[-1] for s in _keys_ok(test, 300)} & {s.key.split("-", 3)[-1]
                                                                         for s in _keys_ok(train, 300)}


def test_missing_data_dir_names_the_variable(tmp_path):
    with pytest.raises(FileNotFoundError, match="PLADA_DATA_DIR"):
        open_source("cifar10:train", data_dir=tmp_path / "nowhere")


# --- npz -----------------------------------------------------------------------------------------------------------


def test_npz_happy_path(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
    path = tmp_path / "my set.npz"
    np.savez(path, images=rgb, labels=np.array([0, 2, 1, 2, 0]), class_names=np.array(["a", "b", "c"]))
    source = open_source(f"npz:{path}")
    assert len(source) == 5 and source.class_names == ["a", "b", "c"] and source.name == "my_set"
    samples = _keys_ok(source)
    assert samples[1].label == 2 and np.array_equal(decode_image(samples[1].data), rgb[1])


def test_npz_without_class_names_numbers_the_classes(tmp_path):
    np.savez(tmp_path / "p.npz", images=np.zeros((3, 2, 2), np.uint8), labels=np.array([0, 10, 4]))
    assert open_source(f"npz:{tmp_path / 'p.npz'}").class_names == [str(c) for c in range(11)]


@pytest.mark.parametrize(
    "arrays, match",
    [
        (dict(images=np.zeros((2, 4, 4)), labels=np.zeros(2, int)),
         r"array 'images' has dtype float64; expected uint8 \(N,H,W\) or \(N,H,W,3\)"),
        (dict(images=np.zeros((2, 16), np.uint8), labels=np.zeros(2, int)), r"array 'images' has shape \(2, 16\)"),
        (dict(images=np.zeros((2, 4, 4, 1), np.uint8), labels=np.zeros(2, int)), "squeeze a single channel axis"),
        (dict(images=np.zeros((2, 4, 4), np.uint8), labels=np.zeros(3, int)), "2 images but 3 labels"),
        (dict(images=np.zeros((2, 4, 4), np.uint8), labels=np.zeros(2)), r"array 'labels' has dtype float64"),
        (dict(images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, -1])), "class ids must be >= 0"),
        (dict(images=np.zeros((2, 4, 4), np.uint8)), r"no array 'labels' \(it has \['images'\]\)"),
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


def test_npz_split_suffix_is_refused_with_the_fix(tmp_path):
    np.savez(tmp_path / "t.npz", images=np.zeros((2, 2, 2), np.uint8), labels=np.zeros(2, int))
    with pytest.raises(ValueError, match="splits are not supported for npz; save each split as its own file"):
        open_source(f"npz:{tmp_path}/t.npz:train")


# --- parquet and image folders ---------------------------------------------------------------------------------------


def _write_parquet(path, keys, images, labels):
    table = pa.table({"key": keys, "jpg": [_jpeg(x) for x in images], "label": pa.array(labels, pa.int16())})
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
    samples = _keys_ok(folder)
    assert [s.label for s in samples] == [0, 1, 1, 2, 0] and all(s.ext == "jpg" for s in samples)
    assert samples[3].data == _jpeg(images[3])  # passed through byte for byte
    x, y = folder.load_arrays()
    assert x.shape == (5, 8, 8, 3) and y.tolist() == [0, 1, 1, 2, 0]


def test_parquet_colliding_keys_fall_back_to_positions(tmp_path):
    _write_parquet(tmp_path / "c.parquet", ["a.b", "a_b"], np.zeros((2, 4, 4), np.uint8), [0, 0])
    source = open_source(f"parquet:{tmp_path}/c.parquet")
    assert source.positional_keys and [s.key for s in source.iter_encoded()] == ["c-00000000", "c-00000001"]


def test_parquet_missing_column_and_path(tmp_path):
    pq.write_table(pa.table({"key": ["k"], "label": [0]}), tmp_path / "nojpg.parquet")
    with pytest.raises(ValueError, match=r"nojpg.parquet has columns \{'key': 'string', 'label': 'int64'\}; expected"):
        open_source(f"parquet:{tmp_path}/nojpg.parquet")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        open_source(f"parquet:{tmp_path}/nothing")


def test_imagefolder_counts_unreadable_files(tmp_path):
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    (tmp_path / "zebra").mkdir()
    (tmp_path / "ant").mkdir()
    Image.fromarray(gray).save(tmp_path / "ant" / "b.png")
    Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(tmp_path / "ant" / "a.bmp")
    (tmp_path / "zebra" / "z.jpg").write_bytes(_jpeg(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)))
    (tmp_path / "zebra" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (tmp_path / "zebra" / "notes.txt").write_text("not an image, ignored")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image file"):
        source = open_source(f"imagefolder:{tmp_path}")
    assert source.class_names == ["ant", "zebra"] and len(source) == 3
    assert [p.name for p, _ in source.unreadable] == ["broken.jpg"]
    samples = _keys_ok(source)
    assert [(s.ext, s.label) for s in samples] == [("png", 0), ("png", 0), ("jpg", 1)]  # a.bmp re-encoded as PNG
    assert np.array_equal(decode_image(samples[1].data), gray)
    images, labels = source.load_arrays()
    assert isinstance(images, list) and images[2].shape == (4, 4, 3) and labels.tolist() == [0, 0, 1]


def test_imagefolder_without_class_folders(tmp_path):
    with pytest.raises(ValueError, match="has no class sub-folders"):
        open_source(f"imagefolder:{tmp_path}")


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
