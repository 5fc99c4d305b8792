"""Unlabelled sources (a client's pool is just images): ``images:PATH``, npz without ``labels``, Parquet without
``label``. They build pools; as targets, evaluation splits or ``:train``/``:test`` parts they are refused."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from source_checks import jpeg, keys_ok

from plada_core.images import decode_image
from plada_core.io import pool
from plada_core.io.sources import UNLABELLED, first_images, labelled_only, open_source

REFUSED = "holds unlabelled images: it can go into a reference pool"


def _photos(root, rels, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        arrays[rel] = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
        Image.fromarray(arrays[rel]).save(root / rel)
    return arrays


def test_images_folder_reads_every_image_file_in_path_order_without_labels(tmp_path):
    arrays = _photos(tmp_path, ["b.png", "a/2.png", "a/1.png", ".hidden/x.png", ".y.png"])
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "z.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image file"):
        source = open_source(f"images:{tmp_path}")
    assert not source.labelled and source.class_names == [] and len(source) == 3
    assert [p.name for p, _ in source.unreadable] == ["z.jpg"]
    samples = keys_ok(source)
    assert [s.label for s in samples] == [UNLABELLED] * 3
    assert [decode_image(s.data).tolist() for s in samples] == [arrays[r].tolist() for r in ("a/1.png", "a/2.png", "b.png")]
    assert source.labels().tolist() == [UNLABELLED] * 3
    with pytest.warns(UserWarning):  # opened again, announced again
        assert len(list(first_images(f"images:{tmp_path}", 2))) == 2


def test_an_unlabelled_source_is_refused_as_a_split_naming_the_fix(tmp_path):
    _photos(tmp_path, ["a.png", "b.png"])
    source = open_source(f"images:{tmp_path}")
    with pytest.raises(ValueError, match=REFUSED + ".*imagefolder:PATH"):
        source.load_arrays()
    with pytest.raises(ValueError, match=r"a :train part \(split by class\) needs a label per image"):
        open_source(f"images:{tmp_path}:train")
    with pytest.raises(ValueError, match="unlabelled images: .* --target-train needs a label"):
        labelled_only(f"images:{tmp_path}", "--target-train")
    assert labelled_only(f"imagefolder:{tmp_path}", "--target-train") == f"imagefolder:{tmp_path}"


def test_images_folder_without_images_and_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable image files under .* \\(none\\)"):
        open_source(f"images:{tmp_path / 'empty'}")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"no png")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"only 1 unreadable one"):
        open_source(f"images:{tmp_path / 'bad'}")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        open_source(f"images:{tmp_path / 'nothing'}")
    with pytest.raises(ValueError, match="has no class sub-folders.*images:"):
        open_source(f"imagefolder:{tmp_path / 'empty'}")


def test_npz_without_labels_is_unlabelled(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (4, 3, 3), dtype=np.uint8)
    np.savez(tmp_path / "pool.npz", images=images)
    source = open_source(f"npz:{tmp_path / 'pool.npz'}")
    assert not source.labelled and len(source) == 4 and source.class_names == []
    assert [s.label for s in keys_ok(source)] == [UNLABELLED] * 4
    with pytest.raises(ValueError, match=REFUSED):
        source.load_arrays()
    with pytest.raises(ValueError, match="needs a label per image"):
        open_source(f"npz:{tmp_path / 'pool.npz'}:test")


def test_parquet_without_label_is_unlabelled_and_files_must_agree(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    pq.write_table(pa.table({"jpg": [jpeg(x) for x in images]}), tmp_path / "a.parquet")
    source = open_source(f"parquet:{tmp_path / 'a.parquet'}")
    assert not source.labelled and len(source) == 3
    samples = keys_ok(source)
    assert [s.label for s in samples] == [UNLABELLED] * 3 and samples[2].data == jpeg(images[2])
    with pytest.raises(ValueError, match=REFUSED):
        source.load_arrays()
    pq.write_table(pa.table({"jpg": [jpeg(images[0])], "label": [1]}), tmp_path / "b.parquet")
    with pytest.raises(ValueError, match=r"some files have a 'label' column \(b.parquet\) and some do not \(a.parquet\)"):
        open_source(f"parquet:{tmp_path}")


def test_a_pool_of_unlabelled_and_labelled_sources(tmp_path):
    """The pool stores UNLABELLED as the source label; the fingerprint depends on keys and bytes only, so the same
    files give the same pool."""
    root = tmp_path / "photos"
    _photos(root, ["x.png", "y/z.png"])
    np.savez(tmp_path / "more.npz", images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, 1]))
    specs = [f"images:{root}", f"npz:{tmp_path / 'more.npz'}"]
    ref = pool.build_reference([open_source(s) for s in specs], str(tmp_path / "pool"), progress=False)
    index = pool.read_index(str(tmp_path / "pool"))
    assert index["source_label"].tolist() == [UNLABELLED, UNLABELLED, 0, 1] and ref["n"] == 4
    assert [(s["class_names"], s["labelled"], s["n_unreadable"]) for s in ref["sources"]] == [
        ([], False, 0), (["0", "1"], True, 0)]  # fmt: skip
    again = pool.build_reference([open_source(s) for s in specs], str(tmp_path / "pool2"), progress=False)
    assert again["fingerprint"] == ref["fingerprint"]
    meta = [json.loads(m) for m in _shard_json(tmp_path / "pool" / "shard-000000.tar")]
    assert [m["label"] for m in meta] == [UNLABELLED, UNLABELLED, 0, 1]


def _shard_json(path):
    import tarfile

    with tarfile.open(path) as tar:
        return [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".json")]


def test_a_built_in_split_of_unlabelled_files_is_refused(tmp_path):
    folder = tmp_path / "tiny-imagenet-32"
    folder.mkdir()
    pq.write_table(pa.table({"jpg": [jpeg(np.zeros((4, 4, 3), np.uint8))] * 3}), folder / "pool-000000.parquet")
    assert not open_source("tiny-imagenet", data_dir=tmp_path).labelled
    with pytest.raises(ValueError, match=r"tiny-imagenet:train holds unlabelled images: .* a :train part"):
        open_source("tiny-imagenet:train", data_dir=tmp_path)


def test_image_keys_come_from_paths_under_the_folder_not_its_name(tmp_path):
    """Two labs holding the same files under differently named folders build the same pool."""
    import shutil

    _photos(tmp_path / "lab_a" / "photos", ["2020/a.jpg", "b.png"])
    shutil.copytree(tmp_path / "lab_a" / "photos", tmp_path / "lab_b" / "pool_v1")
    a = open_source(f"images:{tmp_path / 'lab_a' / 'photos'}")
    assert [s.key for s in a.iter_encoded()] == ["2020_a", "b"]
    refs = [pool.build_reference([open_source(f"images:{tmp_path / lab / folder}")], str(tmp_path / f"pool-{lab}"),
                                 progress=False) for lab, folder in (("lab_a", "photos"), ("lab_b", "pool_v1"))]  # fmt: skip
    assert refs[0]["fingerprint"] == refs[1]["fingerprint"]
    _photos(tmp_path / "clash", ["x.png", "x.jpg"])  # one key after the suffix is dropped: positional instead
    assert [s.key for s in open_source(f"images:{tmp_path / 'clash'}").iter_encoded()] == [
        "clash-00000000", "clash-00000001"]  # fmt: skip
    with pytest.raises(ValueError, match="duplicate key '2020_a' .*give their common parent folder as one source"):
        pool.build_reference([open_source(f"images:{tmp_path / 'lab_a' / 'photos'}"),
                              open_source(f"images:{tmp_path / 'lab_b' / 'pool_v1'}")], str(tmp_path / "both"),
                             progress=False)  # fmt: skip
