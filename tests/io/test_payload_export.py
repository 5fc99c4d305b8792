"""export_payload: each format read back by its own library (pyarrow, webdataset, torchvision) and compared image for
image and label for label with the payload and the pool, on local disk and on moto's S3; hostile class names,
resuming and drop counts."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from digits_pool import DigitsSource, make_payload, make_pool
from torchvision.datasets import ImageFolder

from plada_core.images import decode_image
from plada_core.io import payload_export, pool, storage, tables
from plada_core.io.payload_export import class_folders, export_payload

HOSTILE = ["../../etc", "a/b\\c", "", ".hidden", "x" * 300, "same", "same", "ünï cödé", "CON", "nul\0end"]
SELECTED = [i for i in range(100) if i % 3 != 2 and not 40 <= i < 60]


def expected(url: str, source: DigitsSource) -> dict[int, tuple[bytes, int, str]]:
    """index → (pool bytes, payload label, class name), from the pool itself."""
    images, stats = pool.load_images(url, SELECTED, progress=False)
    assert not stats.errors
    return {i: (images[i], source.samples[i].label, HOSTILE[source.samples[i].label]) for i in SELECTED}


def read_parquet(out: str) -> dict:
    with storage.open_read(storage.join(out, "images.parquet")) as f:
        table, row_groups = pq.read_table(f), pq.ParquetFile(f).num_row_groups
    assert table.num_rows and row_groups > 1, "one row group per pool shard, written while streaming"
    rows = table.to_pylist()
    keys = {r["index"]: r["key"] for r in rows}
    assert all(keys[i] == f"d-{i:06d}" for i in keys)
    return {r["index"]: (r["image"], r["label"], r["class_name"]) for r in rows}


def read_webdataset(out: str) -> dict:
    summary = storage.read_json(storage.join(out, "export.json"))
    shards = sorted(storage.join(out, f"shard-{s:06d}.tar") for s in range(5) if s != 2)  # pool shards 0, 1, 3, 4
    assert summary["written"] == len(SELECTED)
    got = {}
    for sample in wds.WebDataset(shards, shardshuffle=False, empty_check=False).decode():
        meta = sample["json"]
        assert isinstance(sample["cls"], int) and sample["cls"] == meta["label"] and meta["key"] == sample["__key__"]
        got[meta["index"]] = (sample["png"], meta["label"], meta["class_name"])
    return got


def read_imagefolder(out: str, tmp_path) -> dict:
    fs, path = storage.get_fs(out)
    local = tmp_path / "downloaded"
    if out.startswith("s3://"):
        fs.get(path + "/", str(local), recursive=True)
    else:
        local = path
    folder = ImageFolder(str(local))
    assert folder.classes == sorted(class_folders(HOSTILE)[label] for label in set(folder.targets))
    got = {}
    for (file, target), (image, _) in zip(folder.samples, folder):
        index = int(file.rsplit("/", 1)[-1].removesuffix(".png"))
        data = open(file, "rb").read()
        assert np.array_equal(np.asarray(image.convert("L")), decode_image(data))
        got[index] = (data, target, HOSTILE[target])  # ImageFolder's class id is the payload label
    return got


@pytest.mark.parametrize("fmt", ["parquet", "webdataset", "imagefolder"])
def test_each_format_reads_back_as_the_payload(storage_root, fmt, tmp_path):
    url, source = make_pool(storage_root, n=100)
    payload = make_payload(url, source, SELECTED)
    out = storage.join(storage_root, f"export-{fmt}")
    summary = export_payload(payload, url, out, fmt, HOSTILE, progress=False)
    assert (summary["written"], summary["missing"], summary["unreadable"]) == (len(SELECTED), 0, 0)
    read = {"parquet": read_parquet, "webdataset": read_webdataset,
            "imagefolder": lambda o: read_imagefolder(o, tmp_path)}[fmt]  # fmt: skip
    assert read(out) == expected(url, source)
    assert export_payload(payload, url, out, fmt, HOSTILE, progress=False) == summary, "a finished export is kept"


def test_hostile_class_names_make_safe_unique_folders():
    folders = class_folders(HOSTILE)
    assert len(set(folders)) == len(folders) and folders == sorted(folders), "unique, in label order"
    for name in folders:
        assert "/" not in name and "\\" not in name and "\0" not in name and ".." not in name
        assert not name.startswith(".") and 0 < len(name) <= 70
    assert folders[0] == "0_etc" and folders[2] == "2" and folders[7] == "7_ünï_cödé"


def test_rerun_redoes_only_unfinished_files(tmp_path, monkeypatch):
    url, source = make_pool(tmp_path.as_uri(), n=100)
    payload = make_payload(url, source, SELECTED)
    out = (tmp_path / "wds").as_uri()
    first = export_payload(payload, url, out, "webdataset", HOSTILE, progress=False)
    (tmp_path / "wds" / "export.json").unlink()
    (tmp_path / "wds" / "shard-000003.tar").unlink()
    (tmp_path / "wds" / ".export-shard-000003.json").unlink()
    opened = []

    def spy(shard_url, stats):
        opened.append(shard_url.rsplit("/", 1)[-1])
        return pool.iter_shard(shard_url, stats)

    monkeypatch.setattr(payload_export, "iter_shard", spy)
    assert export_payload(payload, url, out, "webdataset", HOSTILE, progress=False) == first
    assert opened == ["shard-000003.tar"] and (tmp_path / "wds" / "shard-000003.tar").exists()
    assert not list((tmp_path / "wds").glob("*.tmp-*")), "no temporary files left"


def test_missing_and_unreadable_images_are_counted(tmp_path):
    url, source = make_pool(tmp_path.as_uri(), n=100, broken=(3,))
    index = pool.read_index(url)
    tables.write_frame(index[index["index"] != 6], storage.join(url, "index.parquet"))  # 6: not in the index
    shard = storage.join(url, "shard-000004.tar")
    storage.write_bytes(shard, storage.read_bytes(shard)[:2000])  # cut: most of shard 4 (80..99) is lost
    payload = make_payload(url, source, SELECTED)
    summary = export_payload(payload, url, (tmp_path / "pq").as_uri(), "parquet", HOSTILE, progress=False)
    rows = pq.read_table(tmp_path / "pq" / "images.parquet").column("index").to_pylist()
    assert summary["missing"] == 1 and 6 not in rows and 3 not in rows
    assert summary["unreadable"] >= 2 and summary["events"]["undecodable_image"] == 1
    assert summary["written"] == len(rows) and len(rows) + summary["missing"] + summary["unreadable"] == payload.k
    assert any("shard-000004" in e for e in summary["errors"])
    assert json.loads((tmp_path / "pq" / "export.json").read_text()) == summary


def test_unknown_format_and_wrong_class_names_are_refused(tmp_path):
    url, source = make_pool(tmp_path.as_uri(), n=40)
    payload = make_payload(url, source, range(10))
    with pytest.raises(ValueError, match="unknown export format"):
        export_payload(payload, url, str(tmp_path / "o"), "tfrecord", HOSTILE)
    with pytest.raises(ValueError, match="10 classes but 2 class names"):
        export_payload(payload, url, str(tmp_path / "o"), "parquet", ["a", "b"])
