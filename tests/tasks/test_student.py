"""The client's student task (``task.fn``): trained from a payload and the local pool alone, streaming; evaluation
optional; class names, preprocessing and provenance in the checkpoint; drops counted; exports that predict alike."""

from __future__ import annotations

import hashlib
import io
import os

import numpy as np
import pytest
import torch

from plada_core.classifier import model_from_checkpoint
from plada_core.config import StudentConfig
from plada_core.images import PreprocessConfig
from plada_core.io import checkpoints, pool, storage
from plada_core.io.arrays import read_npz
from plada_core.io.sources import open_source
from plada_core.payload import encode_payload
from plada_core.training import TrainConfig
from tasks.student import train_student

PRE = PreprocessConfig(image_size=8, channels=1)
CFG = StudentConfig(train=TrainConfig(epochs=2, batch_size=32), preprocess=PRE)
NAMES = [f"digit-{i}" for i in range(10)]


@pytest.fixture(scope="module")
def client(tiny_npz, tmp_path_factory):
    """A folder holding only a pool (3 shards of 100) and payloads for it: the 200 pool digits, truly labelled,
    with class names (format 2) and without (format 1)."""
    root = tmp_path_factory.mktemp("client")
    ref = pool.build_reference([open_source(tiny_npz["pool"])], str(root / "pool"), shard_size=100, progress=False)
    labels = np.load(tiny_npz["pool"].removeprefix("npz:"))["labels"][:200]
    common = dict(n_reference=ref["n"], n_classes=10, fingerprint=ref["fingerprint"])
    named = encode_payload(np.arange(200), labels, **common, class_names=NAMES, task="digits", version="v1")
    (root / "named.plada").write_bytes(named)
    (root / "bare.plada").write_bytes(encode_payload(np.arange(200), labels, **common))
    return {"root": root, "pool": str(root / "pool"), "named": str(root / "named.plada"),
            "bare": str(root / "bare.plada"), "sha256": hashlib.sha256(named).hexdigest()}


def test_trains_from_the_payload_alone_and_the_checkpoint_describes_itself(client, tmp_path):
    out = str(tmp_path / "stu")
    metrics = train_student.fn(client["named"], client["pool"], out, CFG)
    assert metrics["student_acc"] is None and metrics["eval"] is None, "no test split: no accuracy"
    assert metrics["eval_predictions"] is None
    assert (metrics["n_train"], metrics["n_missing"], metrics["drops"]["unreadable"]) == (200, 0, 0)
    assert (metrics["task"], metrics["version"], metrics["class_names_from"]) == ("digits", "v1", "payload")
    state, meta = checkpoints.load_checkpoint(storage.join(out, "student.pt"))
    assert meta["class_names"] == NAMES and meta["preprocess"] == {"image_size": 8, "channels": 1, "crop": "none"}
    assert meta["payload_sha256"] == client["sha256"]
    assert meta["reference_fingerprint"] == pool.read_reference(client["pool"])["fingerprint"]
    assert (meta["task"], meta["version"], meta["test_acc"]) == ("digits", "v1", None)
    model, preprocess = model_from_checkpoint(state, meta)
    assert preprocess == PRE and sum(p.numel() for p in model.parameters()) > 0
    stamp = os.stat(tmp_path / "stu" / "student.pt").st_mtime_ns
    assert train_student.fn(client["named"], client["pool"], out, CFG) == metrics, "a re-run finds the work done"
    assert os.stat(tmp_path / "stu" / "student.pt").st_mtime_ns == stamp


def test_eval_is_optional_and_names_the_classes_of_an_old_payload(client, tiny_npz, tmp_path):
    longer = StudentConfig(train=TrainConfig(epochs=15, batch_size=32), preprocess=PRE)
    metrics = train_student.fn(client["bare"], client["pool"], str(tmp_path / "e"), longer, eval_spec=tiny_npz["test"])
    assert 0.5 < metrics["student_acc"] <= 1.0 and metrics["eval"] == tiny_npz["test"]
    assert metrics["class_names_from"] == "eval" and metrics["task"] is None
    kept = read_npz(metrics["eval_predictions"])  # per image, what pairs two students on the same test split
    assert len(kept["pred"]) == len(kept["label"])
    assert (kept["pred"] == kept["label"]).mean() == pytest.approx(metrics["student_acc"])
    bare = train_student.fn(client["bare"], client["pool"], str(tmp_path / "b"), CFG)
    _, meta = checkpoints.load_checkpoint(str(tmp_path / "b" / "student.pt"))
    assert bare["class_names_from"] == "generated" and meta["class_names"] == [f"class_{i}" for i in range(10)]


def test_an_evaluation_split_of_another_task_stops_before_training(client, tiny_npz, tmp_path, monkeypatch):
    """Labels beyond the payload's classes (the pool's class 10 here) would only be scored as errors: refused,
    naming the split, before any training, and nothing is written."""
    import tasks.student as student_task

    monkeypatch.setattr(student_task, "fit_classifier_streaming", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match=r"pool.npz: 100 of 300 labels lie outside the task's 10 classes \(0..9\)"):
        train_student.fn(client["named"], client["pool"], str(tmp_path / "x"), CFG, eval_spec=tiny_npz["pool"])
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_a_missing_shard_is_a_counted_drop(client, tmp_path):
    copy = tmp_path / "pool"
    fs, src = storage.get_fs(client["pool"])
    fs.copy(src, str(copy), recursive=True)
    (copy / "shard-000001.tar").unlink()
    metrics = train_student.fn(client["named"], str(copy), str(tmp_path / "stu"), CFG, num_workers=1)
    assert (metrics["n_train"], metrics["n_missing"], metrics["drops"]["unreadable"]) == (100, 100, 100)
    assert metrics["num_workers"] == 1


def test_torchscript_export_predicts_as_the_checkpoint(client, tmp_path):
    out = tmp_path / "stu"
    metrics = train_student.fn(client["named"], client["pool"], str(out), CFG, export="torchscript")
    assert metrics["export_url"].endswith("student.torchscript.pt")
    card = storage.read_json(str(out / "student.json"))
    assert card["files"] == {"torchscript": "student.torchscript.pt"} and card["class_names"] == NAMES
    assert card["input"]["shape"] == ["N", 1, 8, 8] and card["preprocess"]["image_size"] == 8
    state, meta = checkpoints.load_checkpoint(str(out / "student.pt"))
    model, _ = model_from_checkpoint(state, meta)
    exported = torch.jit.load(io.BytesIO((out / "student.torchscript.pt").read_bytes()))
    x = torch.rand(13, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(exported(x).argmax(1), model(x).argmax(1))
        assert torch.allclose(exported(x), model(x), atol=1e-5)


def test_onnx_export_runs_in_onnxruntime_like_the_checkpoint_or_fails_before_training(client, tmp_path):
    try:
        import onnx  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install onnx"):
            train_student.fn(client["named"], client["pool"], str(tmp_path / "stu"), CFG, export="onnx")
        assert not (tmp_path / "stu").exists(), "refused before any work"
        return
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "stu"
    train_student.fn(client["named"], client["pool"], str(out), CFG, export="onnx")
    state, meta = checkpoints.load_checkpoint(str(out / "student.pt"))
    model, _ = model_from_checkpoint(state, meta)
    x = torch.rand(5, 1, 8, 8)
    session = ort.InferenceSession(str(out / "student.onnx"))
    logits = session.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert logits.shape == expected.shape == (5, len(meta["class_names"]))
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    assert np.array_equal(logits.argmax(1), expected.argmax(1))
