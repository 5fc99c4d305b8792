"""The client's commands end to end: ``train-student`` from a payload (or a release) and a pool alone, ``predict``,
``payload export`` and ``payload inspect``; bad input is one clear error or a counted drop."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image
from torchvision.datasets import ImageFolder

from flows.cli import main, parse
from flows.params import StudentRequest
from plada_core.images import PreprocessConfig
from plada_core.io import checkpoints, pool, releases, storage
from plada_core.io.sources import open_source
from plada_core.payload import decode_payload, encode_payload

NAMES = [f"digit-{i}" for i in range(10)]
FAST = ["--student-epochs", "2", "--image-size", "8", "--student-batch-size", "32"]


def _last_json(text: str) -> dict:
    lines = text.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


def _payload(ref_url: str, tiny_npz, n: int = 200, version: str | None = "v1") -> bytes:
    ref = pool.read_reference(ref_url)
    labels = np.load(tiny_npz["pool"].removeprefix("npz:"))["labels"][:n]
    return encode_payload(np.arange(n), labels, n_reference=ref["n"], n_classes=10, fingerprint=ref["fingerprint"],
                          class_names=NAMES, task="digits", version=version)


@pytest.fixture(scope="module")
def client(tiny_npz, tmp_path_factory):
    """A folder holding only a pool, a payload for it (format 2) and, apart, test images the client never saw."""
    root = tmp_path_factory.mktemp("client")
    ref_url = str(root / "pool")
    pool.build_reference([open_source(tiny_npz["pool"])], ref_url, shard_size=100, progress=False)
    (root / "payload.plada").write_bytes(_payload(ref_url, tiny_npz))
    test = np.load(tiny_npz["test"].removeprefix("npz:"))
    (root / "unseen").mkdir()
    for i in range(6):
        Image.fromarray(test["images"][i]).save(root / "unseen" / f"img{i}.png")
    (root / "unseen" / "notes.txt").write_text("not an image: skipped by suffix")
    return {"root": root, "pool": ref_url, "payload": str(root / "payload.plada"), "unseen": str(root / "unseen")}


def test_train_student_from_payload_alone_then_predict_names_classes(client, prefect_server, tmp_path, capsys):
    out = tmp_path / "stu"
    args = ["train-student", "--payload", client["payload"], "--reference-url", client["pool"], "--out", str(out)]
    assert main([*args, *FAST, "--export", "torchscript"]) == 0
    metrics = _last_json(capsys.readouterr().out)
    assert metrics["student_acc"] is None and metrics["n_train"] == 200 and metrics["class_names_from"] == "payload"
    assert (out / "student.torchscript.pt").exists() and (out / "student.json").exists()
    assert main(["predict", "--model", str(out / "student.pt"), client["unseen"], "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 and all(line.count("digit-") == 2 for line in lines), lines
    assert main(["predict", "--model", str(out / "student.pt"), client["unseen"] + "/img0.png", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    (only,) = result["predictions"]
    assert only["image"].endswith("img0.png") and len(only["top"]) == 3 and only["top"][0]["class"] in NAMES


def test_predict_names_a_missing_file(client, capsys):
    assert main(["predict", "--model", "/nope/student.pt", client["unseen"]]) == 2
    assert "student.pt" in capsys.readouterr().err


def test_target_test_is_a_deprecated_alias_and_payload_or_release_is_required(capsys):
    common = ["train-student", "--reference-url", "r", "--out", "o"]
    assert parse([*common, "--payload", "p", "--target-test", "t"])[1].eval == "t"
    assert parse([*common, "--payload", "p", "--eval", "t", "--num-workers", "2"])[1].num_workers == 2
    for wrong in ([], ["--payload", "p", "--release", "r"]):
        with pytest.raises(SystemExit) as exc:
            parse([*common, *wrong])
        assert exc.value.code == 2 and "exactly one of --payload URL and --release URL" in capsys.readouterr().err


def test_payload_export_in_three_formats_reads_back_with_each_library(client, tmp_path, capsys):
    payload = decode_payload((client["root"] / "payload.plada").read_bytes())
    label_of = dict(zip(payload.indices.tolist(), payload.labels.tolist()))
    for fmt in ("parquet", "webdataset", "imagefolder"):
        out = tmp_path / fmt
        args = ["payload", "export", client["payload"], "--reference-url", client["pool"], "--out", str(out)]
        assert main([*args, "--format", fmt]) == 0
        summary = _last_json(capsys.readouterr().out)
        assert (summary["written"], summary["missing"], summary["unreadable"]) == (200, 0, 0)
    rows = pq.read_table(tmp_path / "parquet" / "images.parquet").to_pylist()
    assert {r["index"]: (r["label"], r["class_name"]) for r in rows} == {
        i: (y, NAMES[y]) for i, y in label_of.items()}
    samples = list(wds.WebDataset(sorted(str(p) for p in (tmp_path / "webdataset").glob("*.tar")), shardshuffle=False))
    assert sorted(int(s["cls"]) for s in samples) == sorted(label_of.values())
    assert all(NAMES[int(s["cls"])] == json.loads(s["json"])["class_name"] for s in samples)
    folder = ImageFolder(str(tmp_path / "imagefolder"))
    assert len(folder) == 200 and sorted(folder.targets) == sorted(label_of.values())
    assert [c.split("_", 1)[1] for c in folder.classes] == NAMES


def test_payload_inspect_shows_class_names_task_and_version(client, capsys):
    assert main(["payload", "inspect", client["payload"]]) == 0
    header = json.loads(capsys.readouterr().out)
    assert (header["class_names"], header["task"], header["version"]) == (NAMES, "digits", "v1")


def _release(root: str, version: str, data: bytes, **record) -> None:
    storage.write_bytes(storage.join(releases.version_url(root, "digits", version), "payload.plada"), data)
    releases.write_release(root, "digits", version, {"payload_url": "elsewhere", **record})
    releases.promote(root, "digits", version)


def test_release_trains_once_per_version(storage_root, tiny_npz, prefect_server, capsys):
    ref_url = storage.join(storage_root, "pool")
    pool.build_reference([open_source(tiny_npz["pool"])], ref_url, shard_size=100, progress=False)
    root, out = storage.join(storage_root, "releases"), storage.join(storage_root, "client")
    _release(root, "v1", _payload(ref_url, tiny_npz, 150, "v1"))
    folder = storage.join(root, "tasks", "digits")
    args = ["train-student", "--release", folder, "--reference-url", ref_url, "--out", out, *FAST]
    assert main(args) == 0
    first = capsys.readouterr()
    trained = _last_json(first.out)
    assert (trained["status"], trained["version"], trained["metrics"]["n_train"]) == ("trained", "v1", 150)
    assert "release digits/v1 trained into" in first.err
    assert storage.exists(storage.join(out, "digits", "v1", "student.pt"))
    assert main(args) == 0
    again = capsys.readouterr()
    assert _last_json(again.out)["status"] == "skipped" and "nothing to do" in again.err
    assert trained["student_recipe_from"] == "request"  # v1's record recommends no student
    recipe = {"model": "plada_cnn", "preprocess": {"image_size": 8, "channels": 1, "crop": "content"}}
    _release(root, "v2", _payload(ref_url, tiny_npz, 120, "v2"), student_recipe=recipe)
    own_input = args.index("--image-size")
    args = args[:own_input] + args[own_input + 2 :]  # no model and no input of its own: the release's recipe
    assert main([*args[:2], storage.join(folder, "latest.json"), *args[3:]]) == 0
    newer = _last_json(capsys.readouterr().out)
    assert (newer["status"], newer["version"], newer["metrics"]["n_train"]) == ("trained", "v2", 120)
    assert newer["student_recipe_from"] == "release"
    _, meta = checkpoints.load_checkpoint(storage.join(out, "digits", "v2", "student.pt"))
    assert (meta["model"], meta["preprocess"]) == ("plada_cnn", recipe["preprocess"])


def test_a_bare_payload_brings_its_publishers_student(client, tiny_npz, prefect_server, tmp_path, capsys, caplog):
    """Format 3: a client with only the pool and a payload trains the student the publisher measured: its model,
    input and training settings; a flag the client set itself wins, and a setting it does not know is reported."""
    train = {"epochs": 2, "batch_size": 32, "lr": 0.004, "weight_decay": 0.0, "shift": 0.0, "finetune": 0}
    predicted = {"acc": 0.61, "se": 0.02, "ci_low": 0.57, "ci_high": 0.65, "n_val": 500, "epochs": 2}
    recipe = {"model": "plada_cnn", "preprocess": {"channels": 1, "crop": "content", "image_size": 8},
              "train": {**train, "warmup": 3}, "predicted": predicted}  # fmt: skip
    ref = pool.read_reference(client["pool"])
    labels = np.load(tiny_npz["pool"].removeprefix("npz:"))["labels"][:100]
    data = encode_payload(np.arange(100), labels, n_reference=ref["n"], n_classes=10, fingerprint=ref["fingerprint"],
                          class_names=NAMES, task="digits", version="v3", student_recipe=recipe)  # fmt: skip
    (tmp_path / "p.plada").write_bytes(data)
    assert main(["payload", "inspect", str(tmp_path / "p.plada")]) == 0
    assert json.loads(capsys.readouterr().out)["student_recipe"] == recipe
    out = tmp_path / "stu"
    own = ["--student-epochs", "1"]  # no model and no input of its own; its own epochs
    assert main(["train-student", "--payload", str(tmp_path / "p.plada"), "--reference-url", client["pool"],
                 "--out", str(out), *own]) == 0  # fmt: skip
    metrics = _last_json(capsys.readouterr().out)
    assert metrics["student_recipe_from"] == "payload" and metrics["n_train"] == 100
    assert metrics["config"]["train"] == {**metrics["config"]["train"], **train, "epochs": 1}
    assert metrics["recipe_ignored"] == ["warmup"] and "sets warmup, which this PLADA version" in caplog.text
    assert metrics["differs_from_recipe"] == ["epochs"] and "epochs set here, not as the payload's" in caplog.text
    assert metrics["publisher_prediction"] == predicted  # what the publisher expects of the recipe's student
    assert "predicts 0.6100 (95 % CI 0.5700-0.6500) for the recipe's student; this one differs in epochs" in caplog.text
    _, meta = checkpoints.load_checkpoint(str(out / "student.pt"))
    assert (meta["model"], meta["preprocess"]) == (recipe["model"], recipe["preprocess"])
    assert main(["train-student", "--payload", str(tmp_path / "p.plada"), "--reference-url", client["pool"],
                 "--out", str(tmp_path / "own"), *FAST]) == 0  # fmt: skip
    mine = _last_json(capsys.readouterr().out)
    assert (mine["student_recipe_from"], mine["recipe_ignored"]) == ("request", [])
    assert mine["differs_from_recipe"] == ["preprocess", "lr", "weight_decay", "shift"]  # its own student, said so
    assert (mine["config"]["train"]["lr"], mine["config"]["train"]["shift"]) == (0.003, 0.125)  # nothing of the recipe


def test_a_release_recipe_applies_only_to_a_request_that_chose_no_student():
    recipe = {"model": "plada_effnet_lite0_ml", "preprocess": {"image_size": 64, "channels": 3, "crop": "none"}}
    base = {"release": "r", "reference_url": "p", "out": "o"}
    followed, source = StudentRequest(**base).following(recipe)
    assert source == "release" and followed.student_model == recipe["model"]
    assert followed.preprocess == PreprocessConfig(**recipe["preprocess"])
    for own in ({"student_model": "plada_cnn"}, {"preprocess": {"image_size": 8}}):
        request = StudentRequest(**base, **own)
        assert request.following(recipe) == (request, "request")
    assert StudentRequest(**base).following(None)[1] == "request"
    with pytest.raises(ValueError, match="pass --student-model"):
        StudentRequest(**base).following({"model": "plada_cnn", "preprocess": {"image_size": 0}})
    with pytest.raises(ValueError, match="pass --student-model"):  # a training setting out of bounds
        StudentRequest(**base).following({**recipe, "train": {"epochs": 0}})


def test_a_recipe_without_training_settings_keeps_the_requests_own():
    """Payloads published before the recipe carried its training settings name model and input only."""
    base = {"release": "r", "reference_url": "p", "out": "o", "student_epochs": 3}
    recipe = {"model": "plada_cnn", "preprocess": {"image_size": 8, "channels": 1, "crop": "none"}}
    followed, source = StudentRequest(**base).following(recipe)
    assert source == "release" and (followed.student_epochs, followed.student_lr) == (3, StudentRequest(
        **base).student_lr)  # fmt: skip
    followed, _ = StudentRequest(**base).following({**recipe, "train": {"lr": 0.01, "epochs": 9}})
    assert (followed.student_epochs, followed.student_lr) == (3, 0.01)  # the request's own epochs win


def test_bad_client_input_is_one_clear_error_or_a_counted_drop(client, tiny_npz, prefect_server, tmp_path, capsys):
    other = str(tmp_path / "other-pool")
    other_fp = pool.build_reference([open_source(tiny_npz["train"])], other, shard_size=100,
                                    progress=False)["fingerprint"]
    base = ["train-student", "--reference-url", other, "--out", str(tmp_path / "o"), *FAST]
    assert main([*base, "--payload", client["payload"]]) == 2
    assert "different reference pool" in capsys.readouterr().err
    cut = tmp_path / "cut.plada"
    cut.write_bytes((client["root"] / "payload.plada").read_bytes()[:-5])
    assert main([*base, "--payload", str(cut)]) == 2
    assert "truncated" in capsys.readouterr().err
    assert main([*base, "--release", str(tmp_path / "tasks" / "none")]) == 2
    err = capsys.readouterr().err
    assert "no release at" in err and "latest.json does not exist" in err
    _release(str(tmp_path / "rel"), "v1", (client["root"] / "payload.plada").read_bytes())
    assert main([*base, "--release", str(tmp_path / "rel" / "tasks" / "digits")]) == 2
    err = capsys.readouterr().err
    mine = pool.read_reference(client["pool"])["fingerprint"]
    assert mine in err and other_fp in err and "--reference-url" in err
    assert not (tmp_path / "o").exists(), "nothing is written before the checks pass"
    partial = tmp_path / "partial-pool"
    fs, src = storage.get_fs(client["pool"])
    fs.copy(src, str(partial), recursive=True)
    (partial / "shard-000000.tar").unlink()
    assert main(["train-student", "--payload", client["payload"], "--reference-url", str(partial),
                 "--out", str(tmp_path / "p"), *FAST]) == 0
    metrics = _last_json(capsys.readouterr().out)
    assert (metrics["n_train"], metrics["n_missing"], metrics["drops"]["unreadable"]) == (100, 100, 100)
