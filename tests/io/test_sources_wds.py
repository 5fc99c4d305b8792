"""``wds:PATH`` sources: webdataset shards as img2dataset writes them (image + txt + json), labelled by ``cls``
where every sample has one; unreadable samples counted, unreadable shards refused."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import webdataset as wds
from PIL import Image
from source_checks import jpeg, keys_ok

from plada_core.images import decode_image, encode_png
from plada_core.io.sources import UNLABELLED, open_source


def _shard(path, samples):
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as writer:
        for sample in samples:
            writer.write(sample)


def _photo(seed, shape=(6, 5, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_web_shards_without_labels_are_an_unlabelled_pool(tmp_path):
    _shard(tmp_path / "shards" / "00000.tar", [
        {"__key__": "000000000", "jpg": jpeg(_photo(0)), "txt": b"a caption", "json": b"{}"},
        {"__key__": "000000001", "txt": b"no image here"},
        {"__key__": "000000002", "png": encode_png(_photo(2, (4, 4))), "txt": b"grey"},
    ])  # fmt: skip
    _shard(tmp_path / "shards" / "00001.tar", [
        {"__key__": "000000003", "jpg": b"\xff\xd8\xff not a jpeg"},
        {"__key__": "000000004", "webp": _webp(_photo(4)), "json": b"{}"},
    ])  # fmt: skip
    with pytest.warns(UserWarning, match=r"skipped 2 sample\(s\) without a readable image"):
        source = open_source(f"wds:{tmp_path / 'shards'}")
    assert not source.labelled and len(source) == 3 and source.class_names == []
    assert [(key, reason[:20]) for _, key, reason in source.unreadable] == [
        ("000000001", "no image member (has"), ("000000003", "undecodable image (1")]  # fmt: skip
    samples = keys_ok(source)
    assert [s.label for s in samples] == [UNLABELLED] * 3 and [s.ext for s in samples] == ["jpg", "png", "png"]
    assert np.array_equal(decode_image(samples[1].data), _photo(2, (4, 4)))  # webp re-encoded as PNG, lossless
    with pytest.raises(ValueError, match="holds unlabelled images"):
        source.load_arrays()


def _webp(image):
    import io

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="WEBP", lossless=True)
    return buf.getvalue()


def test_web_shards_with_cls_are_labelled_and_split(tmp_path):
    samples = [{"__key__": f"{i:04d}", "jpg": jpeg(_photo(i)), "cls": str(i % 2).encode()} for i in range(10)]
    _shard(tmp_path / "train.tar", samples)
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    source = open_source(f"wds:{tmp_path / 'train.tar'}")
    assert source.labelled and source.class_names == ["cat", "dog"] and source.labels().tolist() == [0, 1] * 5
    images, labels = source.load_arrays()
    assert len(images) == 10 and labels.tolist() == [0, 1] * 5
    test = open_source(f"wds:{tmp_path / 'train.tar'}:test")
    assert len(test) == 2 and sorted(test.labels().tolist()) == [0, 1]


def test_one_sample_without_cls_makes_the_source_unlabelled(tmp_path):
    _shard(tmp_path / "a.tar", [{"__key__": "x", "jpg": jpeg(_photo(0)), "cls": b"1"},
                                {"__key__": "y", "jpg": jpeg(_photo(1))}])  # fmt: skip
    assert not open_source(f"wds:{tmp_path / 'a.tar'}").labelled


def test_truncated_compressed_and_missing_shards_are_refused_by_name(tmp_path):
    _shard(tmp_path / "ok.tar", [{"__key__": f"{i}", "jpg": jpeg(_photo(i, (32, 32, 3)))} for i in range(4)])
    data = (tmp_path / "ok.tar").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "cut.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut.tar cannot be read whole .*plain, complete .tar files"):
        open_source(f"wds:{tmp_path / 'cut'}")
    (tmp_path / "gz.tar").write_bytes(gzip.compress(data))
    with pytest.raises(ValueError, match=r"gz.tar cannot be read whole .*decompress a .tar.gz first"):
        open_source(f"wds:{tmp_path / 'gz.tar'}")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        open_source(f"wds:{tmp_path / 'nothing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no .tar files under"):
        open_source(f"wds:{tmp_path / 'empty'}")


def test_sample_keys_are_the_shards_own_under_their_shard_path(tmp_path):
    for root in ("a", "b"):
        _shard(tmp_path / root / "part" / "00000.tar", [{"__key__": "k1", "jpg": jpeg(_photo(1))}])
        _shard(tmp_path / root / "00001.tar", [{"__key__": "k1", "jpg": jpeg(_photo(2))}])
    keys = [[s.key for s in open_source(f"wds:{tmp_path / root}").iter_encoded()] for root in ("a", "b")]
    assert keys[0] == keys[1] == ["00001_k1", "part_00000_k1"]  # sorted shard paths; the folder's name plays no part
    assert [s.key for s in open_source(f"wds:{tmp_path / 'a' / '00001.tar'}").iter_encoded()] == ["k1"]
