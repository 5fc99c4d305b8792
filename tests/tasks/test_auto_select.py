"""The publisher's held-out validation split, the leakage check and the measured selection, task bodies called
directly on a pool that contains every target test image (200 exact duplicates)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plada_core.images import PreprocessConfig
from plada_core.io import checkpoints, layout, pool, storage, tables
from plada_core.io.arrays import read_npz
from plada_core.config import TeacherConfig
from plada_core.proxy import AutoConfig
from plada_core.relevance import TargetBank
from plada_core.scoring import ScoringConfig
from plada_core.selection import SelectionConfig
from plada_core.training import TrainConfig
from tasks import auto_select as auto_task
from tasks.auto_select import auto_select, check_leakage, winner_config, winner_kept
from tasks.reference import build_reference_pool
from tasks.score import score_shard
from tasks.teacher import train_teacher

PRE = PreprocessConfig(image_size=8, channels=1)
AUTO = AutoConfig(proxy_epochs=1)
PROXY = TrainConfig(epochs=1, device="cpu")


@pytest.fixture(scope="module")
def leaky(tiny_npz, tmp_path_factory):
    """Pool = the 300 tiny pool images, then the 200 target test images (indices 300..499)."""
    root = tmp_path_factory.mktemp("leaky")
    ref = build_reference_pool.fn([tiny_npz["pool"], tiny_npz["test"]], str(root / "pool"), shard_size=128)
    teacher = train_teacher.fn(tiny_npz["train"], tiny_npz["test"], str(root / "teacher"),
                               TeacherConfig(train=TrainConfig(epochs=2), preprocess=PRE), AUTO)  # fmt: skip
    scores = [score_shard.fn(s["url"], s["n"], teacher, str(root), ScoringConfig(), hashes=True)
              for s in pool.list_shards(ref)]  # fmt: skip
    return {"root": root, "ref": ref, "teacher": teacher, "scores": scores, "train": tiny_npz["train"]}


def test_teacher_holds_out_a_stratified_split_that_neither_it_nor_the_bank_sees(leaky):
    split = read_npz(layout.validation_url(leaky["teacher"]))
    fit, val = split["train_positions"], split["val_positions"]
    assert len(fit) + len(val) == 200 and not set(fit) & set(val) and len(val) >= 10 * 5
    _, meta = checkpoints.load_checkpoint(leaky["teacher"])
    assert meta["holdout"]["n_val"] == len(val) and meta["teacher_saw_validation"] is False
    bank = TargetBank.from_bytes(storage.read_bytes(layout.bank_url(leaky["teacher"])))
    assert len(bank.labels) == len(fit)
    hashes = read_npz(layout.target_hashes_url(leaky["teacher"]))
    assert len(hashes["test_phash"]) == len(hashes["test_exact"]) == 200 and len(hashes["train_phash"]) == 200


def test_scores_carry_image_hashes(leaky):
    frame = tables.read_frame(leaky["scores"][0])
    assert {"exact_hash", "phash"} <= set(frame.columns) and frame["phash"].dtype == np.uint64


def test_leakage_finds_every_copied_test_image(leaky, tmp_path):
    found = check_leakage.fn(leaky["scores"], leaky["teacher"], str(tmp_path), 6)
    assert found["checked"] and set(range(300, 500)) <= set(found["test_duplicates"])
    assert found["test"]["exact_pairs"] >= 200 and found["test"]["examples"][0][0] >= 300
    assert storage.read_json(layout.leakage_url(str(tmp_path)))["test"] == found["test"]


def test_auto_select_measures_the_grid_and_never_keeps_an_excluded_image(leaky, tmp_path, monkeypatch):
    artifacts = []
    monkeypatch.setattr(auto_task, "create_table_artifact", lambda **kw: artifacts.append(kw))
    excluded = list(range(300, 500))
    cfg = SelectionConfig(selector="auto", keep=0.1)
    summary = auto_select.fn(leaky["scores"], leaky["ref"], leaky["teacher"], leaky["train"], str(tmp_path), cfg,
                             AUTO, PROXY, PRE, exclude=excluded)  # fmt: skip
    table = summary["candidates"]
    assert len(table) > 8 and sum(r["chosen"] for r in table) == 1
    assert {r["n_kept"] for r in table} == {50}  # 0.1 of the 500 scored images, the excluded 200 not counted out
    assert summary["predicted_accuracy"]["n_val"] == table[0]["n_val"] > 0
    assert winner_config(summary).selector == summary["config"]["selector"] != "auto"
    assert storage.read_json(layout.auto_selection_url(str(tmp_path)))["winner"] == summary["winner"]
    assert artifacts and len(artifacts[0]["table"]) == len(table)


def test_a_fixed_selector_is_measured_alone(leaky, tmp_path, monkeypatch):
    monkeypatch.setattr(auto_task, "create_table_artifact", lambda **kw: None)
    cfg = SelectionConfig(selector="energy", keep=20, safety_net=False)
    summary = auto_select.fn(leaky["scores"], leaky["ref"], leaky["teacher"], leaky["train"], str(tmp_path), cfg,
                             AUTO, PROXY, PRE)  # fmt: skip
    assert [r["candidate"] for r in summary["candidates"]] == ["energy"] and winner_config(summary) == cfg


def test_a_target_split_too_small_to_hold_out_names_the_class(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (30, 8, 8), dtype=np.uint8)
    labels = np.array([0] * 24 + [1] * 6)
    np.savez(tmp_path / "small.npz", images=images, labels=labels)
    spec = f"npz:{tmp_path / 'small.npz'}"
    with pytest.raises(ValueError, match="class 1 has 6 images.*val_min_per_class"):
        train_teacher.fn(spec, spec, str(tmp_path / "t"), TeacherConfig(preprocess=PRE), AUTO)
    teacher = train_teacher.fn(spec, spec, str(tmp_path / "t"), TeacherConfig(train=TrainConfig(epochs=1),
                               preprocess=PRE), AUTO, require_validation=False)  # fmt: skip
    _, meta = checkpoints.load_checkpoint(teacher)
    assert "class 1 has 6 images" in meta["holdout"]["skipped"]  # a fixed selector publishes, unmeasured
    assert not storage.exists(layout.validation_url(teacher))
    fixed = SelectionConfig(selector="energy", keep=5)
    summary = auto_select.fn([], "unused", teacher, spec, str(tmp_path), fixed, AUTO, PROXY, PRE)
    assert summary["predicted_accuracy"] is None and winner_config(summary) == fixed and summary["skipped"]
    with pytest.raises(ValueError, match="no validation split"):
        auto_select.fn([], "unused", teacher, spec, str(tmp_path), SelectionConfig(selector="auto"), AUTO, PROXY,
                       PRE)  # fmt: skip


def test_winner_kept_is_the_chosen_rows_count():
    rows = [{"n_kept": 10, "chosen": False}, {"n_kept": 7, "chosen": True}]
    assert winner_kept({"candidates": rows}) == 7
    assert winner_kept({"candidates": [], "skipped": "no validation split"}) is None and winner_kept({}) is None


def test_labels_that_skip_a_class_are_reported_not_refused(tmp_path):
    """Labels 1..2 (class 0 empty) and a test image of a class the train split lacks: the teacher trains, holds
    out its validation split from the classes it has, and records the empty classes with their test images."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "train.npz", images=images, labels=np.array([1] * 20 + [2] * 20))
    np.savez(tmp_path / "test.npz", images=images[:6], labels=np.array([1, 2, 1, 2, 3, 3]))
    train, test = f"npz:{tmp_path / 'train.npz'}", f"npz:{tmp_path / 'test.npz'}"
    outside = r"test.npz: 2 of 6 labels lie outside the task's 3 classes \(0..2\), e\.g\. \[3\]"
    with pytest.raises(ValueError, match=outside):
        train_teacher.fn(train, test, str(tmp_path / "t"), TeacherConfig(train=TrainConfig(epochs=1),
                         preprocess=PRE), AUTO)  # fmt: skip
    np.savez(tmp_path / "test.npz", images=images[:6], labels=np.array([1, 2, 1, 2, 0, 0]))
    teacher = train_teacher.fn(train, test, str(tmp_path / "t2"), TeacherConfig(train=TrainConfig(epochs=1),
                               preprocess=PRE), AUTO)  # fmt: skip
    _, meta = checkpoints.load_checkpoint(teacher)
    assert meta["classes_without_train_images"] == {"classes": [0], "names": ["0"], "n_test_images": 2, "n_test": 6}
    assert meta["holdout"]["n_val"] == 10 and meta["num_classes"] == 3
    np.savez(tmp_path / "one.npz", images=images, labels=np.full(40, 1))
    one = f"npz:{tmp_path / 'one.npz'}"
    with pytest.raises(ValueError, match=r"one.npz has images of 1 class \(\['1'\]\); a classification task needs"):
        train_teacher.fn(one, one, str(tmp_path / "t3"), TeacherConfig(preprocess=PRE), AUTO)
    assert not (tmp_path / "t3").exists() or not any((tmp_path / "t3").rglob("*.pt"))


def test_cached_pool_features_are_read_for_the_union(leaky, tmp_path):
    from plada_core.io.arrays import write_npz

    shards = pool.shard_urls(leaky["ref"])
    for s in pool.read_reference(leaky["ref"])["shards"]:
        idx = np.arange(s["first_index"], s["first_index"] + s["n"])
        write_npz(layout.pool_features_url(str(tmp_path), s["name"]), indices=idx,
                  features=np.repeat(idx[:, None], 3, axis=1).astype(np.float16))  # fmt: skip
    present, feats = auto_task._cached_features(str(tmp_path), leaky["ref"], np.array([3, 130, 499]))
    assert present.tolist() == [3, 130, 499] and feats[:, 0].tolist() == [3.0, 130.0, 499.0]
    assert feats.dtype == torch.float32 and len(shards) == 4
    storage.remove(layout.pool_features_url(str(tmp_path), shards[0]))
    assert auto_task._cached_features(str(tmp_path), leaky["ref"], np.array([3])) is None  # then: computed


def test_with_a_byte_budget_every_candidate_gets_its_own_search(leaky, tmp_path, monkeypatch):
    monkeypatch.setattr(auto_task, "create_table_artifact", lambda **kw: None)
    grid = auto_select.fn(leaky["scores"], leaky["ref"], leaky["teacher"], leaky["train"], str(tmp_path),
                          SelectionConfig(selector="auto"), AUTO, PROXY, PRE, max_payload_bytes=150)  # fmt: skip
    rows = grid["candidates"]
    assert all(r["payload_bytes"] <= 150 for r in rows) and len({r["n_kept"] for r in rows}) > 1


def test_a_frozen_backbone_proxy_trains_its_head_on_features_computed_once(leaky, tmp_path, monkeypatch):
    monkeypatch.setattr(auto_task, "create_table_artifact", lambda **kw: None)
    calls = []
    real = auto_task.features
    monkeypatch.setattr(auto_task, "features", lambda model, x: calls.append(len(x)) or real(model, x))
    proxy = TrainConfig(model="plada_effnet_lite0", epochs=1, device="cpu")
    cfg = SelectionConfig(selector="energy", keep=20)
    summary = auto_select.fn(leaky["scores"], leaky["ref"], leaky["teacher"], leaky["train"], str(tmp_path), cfg,
                             AUTO, proxy, PreprocessConfig(image_size=32, channels=1))  # fmt: skip
    assert summary["proxy"]["head_only"] and 0 <= summary["predicted_accuracy"]["value"] <= 1
    assert sorted(calls) == sorted([summary["predicted_accuracy"]["n_val"], 20])  # validation, then the pool once


def test_select_and_encode_skips_excluded_images_and_records_the_extra(leaky, tmp_path):
    from tasks.select import select_and_encode

    cfg = SelectionConfig(selector="energy", keep=0.1)
    out = select_and_encode.fn(leaky["scores"], leaky["ref"], leaky["teacher"], str(tmp_path), cfg,
                               exclude=list(range(300, 500)), extra={"leakage": {"n_excluded": 200}})  # fmt: skip
    kept = tables.read_frame(out["manifest"])["index"]
    assert len(kept) == out["n_kept"] == 50 and kept.max() < 300
    assert storage.read_json(out["manifest"].rsplit("/", 1)[0] + "/selection.json")["leakage"] == {"n_excluded": 200}
    assert tables.table_metadata(tables.read_table(out["manifest"]))["leakage"] == {"n_excluded": 200}
