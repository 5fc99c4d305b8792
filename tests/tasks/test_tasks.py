"""Task bodies called directly (``task.fn``): resume, bad data counted and reported, foreign payloads refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from plada_core.config import StudentConfig, TeacherConfig
from plada_core.images import PreprocessConfig
from plada_core.io import checkpoints, layout, pool, storage, tables
from plada_core.io.sources import open_source
from plada_core.payload import PayloadError, read_header
from plada_core.scoring import ScoringConfig
from plada_core.selection import SelectionConfig
from plada_core.training import TrainConfig
from tasks.reference import build_reference_pool
from tasks.score import fit_density_ratio, score_shard
from tasks.select import select_and_encode
from tasks.student import train_student
from tasks.teacher import train_teacher

PRE = PreprocessConfig(image_size=8, channels=1)


@pytest.fixture(scope="module")
def published(tiny_npz, tmp_path_factory):
    """A pool of 3 shards, a teacher and the scores of every shard."""
    root = tmp_path_factory.mktemp("pub")
    ref_url = build_reference_pool.fn([tiny_npz["pool"]], str(root / "pool"), shard_size=100)
    teacher = train_teacher.fn(
        tiny_npz["train"],
        tiny_npz["test"],
        str(root / "teacher"),
        TeacherConfig(train=TrainConfig(epochs=2), preprocess=PRE),
    )
    scores = [
        score_shard.fn(s["url"], s["n"], teacher, str(root), ScoringConfig()) for s in pool.list_shards(ref_url)
    ]
    return {"root": root, "ref": ref_url, "teacher": teacher, "scores": scores}


def test_scores_cover_the_pool_and_rerun_skips(published):
    frames = [tables.read_frame(u) for u in published["scores"]]
    assert sum(len(f) for f in frames) == 300
    first = storage.join(published["ref"], "shard-000000.tar")
    stamp = (published["root"] / "scores" / "shard-000000.parquet").stat().st_mtime_ns
    score_shard.fn(first, 100, published["teacher"], str(published["root"]), ScoringConfig())
    assert (published["root"] / "scores" / "shard-000000.parquet").stat().st_mtime_ns == stamp


def test_the_pruning_columns_are_fit_once_then_scored_per_shard(published, tmp_path):
    shards = pool.list_shards(published["ref"])
    urls = [s["url"] for s in shards]
    cfg = ScoringConfig(density_ratio=True, label_stability="shifts")
    with pytest.raises(FileNotFoundError, match="density_ratio.npz does not exist: run fit_density_ratio"):
        score_shard.fn(urls[0], 100, published["teacher"], str(tmp_path), cfg)
    ratio_url = fit_density_ratio.fn(urls, 300, published["teacher"], str(tmp_path), cfg)
    assert ratio_url == layout.density_ratio_url(str(tmp_path)) and storage.exists(ratio_url)
    stamp = (tmp_path / "density_ratio.npz").stat().st_mtime_ns
    fit_density_ratio.fn(urls, 300, published["teacher"], str(tmp_path), cfg)  # present: kept, not refit
    assert (tmp_path / "density_ratio.npz").stat().st_mtime_ns == stamp
    scored = [score_shard.fn(s["url"], s["n"], published["teacher"], str(tmp_path), cfg) for s in shards]
    frame = pd.concat([tables.read_frame(u) for u in scored])
    plain = pd.concat([tables.read_frame(u) for u in published["scores"]])
    assert {"density_ratio", "label_stable"} <= set(frame.columns) and len(frame) == 300
    assert frame["label_stable"].between(0, 1).all() and frame["density_ratio"].notna().all()
    assert np.allclose(frame["energy"], plain["energy"], atol=1e-5)  # the paper's columns do not move
    meta = tables.table_metadata(tables.read_table(scored[0]))
    assert (meta["density_ratio"], meta["label_stability"]) == (True, "shifts")


def test_corrupt_shard_is_counted_and_fails_the_run_above_the_drop_rate(published, tmp_path):
    broken = tmp_path / "shard-000000.tar"
    data = storage.read_bytes(storage.join(published["ref"], "shard-000000.tar"))
    broken.write_bytes(data[: len(data) // 3])
    url = score_shard.fn(str(broken), 100, published["teacher"], str(tmp_path), ScoringConfig())
    meta = tables.table_metadata(tables.read_table(url))
    assert meta["n_dropped"] > 0 and meta["read_errors"], "the truncation is recorded, not skipped silently"
    urls = [url] + published["scores"][1:]
    with pytest.raises(RuntimeError, match="could not be scored.*shard-000000"):
        select_and_encode.fn(
            urls, published["ref"], published["teacher"], str(tmp_path / "sel"), SelectionConfig("energy", keep=0.1)
        )
    summary = select_and_encode.fn(
        urls,
        published["ref"],
        published["teacher"],
        str(tmp_path / "sel"),
        SelectionConfig("energy", keep=0.1),
        max_drop_rate=0.5,
    )
    assert summary["drops"]["n_dropped"] == meta["n_dropped"]


def test_payload_for_another_pool_is_refused(published, tiny_npz, tmp_path):
    summary = select_and_encode.fn(
        published["scores"], published["ref"], published["teacher"], str(tmp_path / "sel"),
        SelectionConfig("energy", keep=0.1),
    )
    other = build_reference_pool.fn([tiny_npz["train"]], str(tmp_path / "other-pool"), shard_size=100)
    cfg = StudentConfig(train=TrainConfig(epochs=1), preprocess=PRE)
    with pytest.raises(PayloadError, match="different reference pool"):
        train_student.fn(summary["payload"], other, str(tmp_path / "stu"), cfg, eval_spec=tiny_npz["test"])
    assert not (tmp_path / "stu" / "metrics.json").exists()


def test_existing_pool_is_never_overwritten(published, tiny_npz):
    before = pool.read_reference(published["ref"])["fingerprint"]
    with pytest.raises(ValueError, match="already holds a reference pool"):
        build_reference_pool.fn([tiny_npz["train"]], published["ref"])
    with pytest.raises(FileExistsError, match="never overwrites"):
        pool.build_reference([open_source(tiny_npz["train"])], published["ref"])
    assert pool.read_reference(published["ref"])["fingerprint"] == before


def test_random_baseline_has_the_requested_size(published, tmp_path):
    cfg = dataclasses.replace(SelectionConfig("energy"), selector="random", keep=37, safety_net=False)
    summary = select_and_encode.fn(published["scores"], published["ref"], published["teacher"], str(tmp_path), cfg)
    assert summary["n_kept"] == 37


def test_the_payload_names_the_teachers_classes_and_the_release(published, tmp_path):
    """A client holds only the pool and the payload: the payload says what its labels mean, and which release
    it is; the random baseline's payload carries the same names."""
    common = (published["scores"], published["ref"], published["teacher"])
    names = checkpoints.load_checkpoint(published["teacher"])[1]["class_names"]
    recipe = {"model": "plada_cnn", "preprocess": {"channels": 1, "crop": "none", "image_size": 16}}
    summary = select_and_encode.fn(*common, str(tmp_path / "sel"), SelectionConfig("energy", keep=0.1), task="tiny",
                                   version="v3", student_recipe=recipe)
    decoded = pool.decode_for_pool(storage.read_bytes(summary["payload"]), published["ref"])
    assert (decoded.class_names, decoded.task, decoded.version) == (tuple(names), "tiny", "v3")
    assert (decoded.k, decoded.format_version, decoded.student_recipe) == (summary["n_kept"], 3, recipe)
    cfg = dataclasses.replace(SelectionConfig("energy"), selector="random", keep=summary["n_kept"], safety_net=False)
    baseline = select_and_encode.fn(*common, str(tmp_path / "random"), cfg)  # the flows' call: no task, version
    header = read_header(storage.read_bytes(baseline["payload"]))
    assert (header["class_names"], header["task"], header["version"]) == (tuple(names), None, None)


@pytest.mark.parametrize("codec", ["paper-zstd19", "context-rc", "context-rc2", "layout-rc", "auto"])
def test_budget_mode_keeps_the_largest_selection_that_fits(published, tmp_path, codec):
    common = (published["scores"], published["ref"], published["teacher"])
    energy = SelectionConfig("energy")
    small = select_and_encode.fn(*common, str(tmp_path / "s"), energy, codec=codec, max_payload_bytes=120)
    large = select_and_encode.fn(*common, str(tmp_path / "l"), energy, codec=codec, max_payload_bytes=160)
    assert small["payload_bytes"] <= 120 and large["payload_bytes"] <= 160
    assert 0 < small["n_kept"] < large["n_kept"] <= 300
    assert small["keep_reached"] == small["n_kept"] / 300
    one_more = select_and_encode.fn(*common, str(tmp_path / "m"),
                                    SelectionConfig("energy", keep=small["n_kept"] + 1), codec=codec)
    assert one_more["payload_bytes"] > 120 or one_more["n_kept"] == 300


def test_auto_codec_keeps_the_smallest_payload_and_the_client_decodes_it(published, tiny_npz, tmp_path):
    common = (published["scores"], published["ref"], published["teacher"])
    energy = SelectionConfig("energy", keep=0.2)
    sizes = {codec: select_and_encode.fn(*common, str(tmp_path / codec), energy, codec=codec)
             for codec in ("paper-zstd19", "context-rc", "context-rc2", "layout-rc")}
    auto = select_and_encode.fn(*common, str(tmp_path / "auto"), energy, codec="auto")
    best = min(sizes, key=lambda codec: sizes[codec]["payload_bytes"])
    assert (auto["codec"], auto["codec_requested"]) == (best, "auto")
    assert auto["payload_bytes"] == sizes[best]["payload_bytes"]
    cfg = StudentConfig(train=TrainConfig(epochs=1), preprocess=PRE)
    metrics = train_student.fn(sizes["layout-rc"]["payload"], published["ref"], str(tmp_path / "stu"), cfg,
                               eval_spec=tiny_npz["test"])  # the client reads its own pool's layout to decode
    assert metrics["n_train"] == sizes["layout-rc"]["n_kept"]


def test_unknown_codec_is_named(published, tmp_path):
    with pytest.raises(ValueError, match="unknown codec 'gzip'.*or 'auto'"):
        select_and_encode.fn(published["scores"], published["ref"], published["teacher"], str(tmp_path),
                             SelectionConfig("energy", keep=0.1), codec="gzip")
