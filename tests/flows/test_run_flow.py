"""End to end on tiny real data: npz sources → pool → teacher → scores → selection → payload → students."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from flows.params import RunRequest
from flows.run import plada_run
from plada_core.images import PreprocessConfig
from plada_core.io import pool, storage
from plada_core.io.arrays import read_npz
from plada_core.payload import decode_payload, read_header


def _run(tiny_npz, out, **extra):
    return plada_run(
        RunRequest(
            references=[tiny_npz["pool"]],
            target_train=tiny_npz["train"],
            target_test=tiny_npz["test"],
            out=str(out),
            teacher_epochs=8,
            student_epochs=4,
            keep=0.2,
            preprocess=PreprocessConfig(image_size=8, channels=1),
            shard_size=128,
            **extra,
        )
    )


def test_plada_run_end_to_end(prefect_server, tiny_npz, tmp_path):
    report = _run(tiny_npz, tmp_path / "run")

    ref = pool.read_reference(str(tmp_path / "run" / "reference"))
    assert ref["n"] == 300 and len(ref["shards"]) == 3
    assert report["n_reference"] == 300 and report["n_kept"] == 60
    assert report["teacher_acc"] > 0.5  # 8 epochs on 200 digits: far above chance (0.1)
    for key in ("student_acc", "random_acc"):
        assert 0.0 <= report[key] <= 1.0
    assert report["payload_bytes"] < 1_000_000
    payload = decode_payload(
        storage.read_bytes(str(tmp_path / "run" / "publish" / "payload.plada")), expected_fingerprint=ref["fingerprint"]
    )
    assert len(payload.indices) == 60
    on_disk = json.loads((tmp_path / "run" / "report.json").read_text())
    assert on_disk["student_acc"] == report["student_acc"]
    assert "| student_acc |" in (tmp_path / "run" / "report.md").read_text()
    # student vs random, paired on the same test images: consistent with the two accuracies and in the markdown
    paired = report["student_vs_random"]
    assert paired["diff"] == pytest.approx(report["student_acc"] - report["random_acc"], abs=1e-6)
    assert paired["n"] == len(read_npz(str(tmp_path / "run" / "student" / "eval-predictions.npz"))["label"])
    assert "Student − random, paired on the same" in (tmp_path / "run" / "report.md").read_text()


def test_auto_is_the_default_and_its_validation_table_is_recorded_everywhere(prefect_server, tiny_npz, tmp_path):
    from plada_core.io import tables

    report = _run(tiny_npz, tmp_path / "run")
    auto = report["auto_selection"]
    assert auto["requested"] == "auto" and len(auto["candidates"]) > 8
    assert report["selector"] == auto["config"]["selector"] != "auto"
    assert report["predicted_acc"] == auto["predicted_accuracy"]["value"] and report["predicted_acc_se"] > 0
    selection = json.loads((tmp_path / "run" / "publish" / "selection.json").read_text())
    assert selection["auto_selection"]["candidates"] == auto["candidates"]
    assert {"candidate", "val_acc", "n_kept", "payload_bytes"} <= set(auto["candidates"][0])
    # the data-pruning selectors whose columns the default scoring pass leaves out are named, not dropped silently
    assert auto["selectors_left_out"] == {"density_ratio": ["density_ratio"], "reliable": ["label_stable"]}
    manifest = tables.table_metadata(tables.read_table(str(tmp_path / "run" / "publish" / "manifest.parquet")))
    assert manifest["auto_selection"]["winner"] == auto["winner"]
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "held-out validation split" in markdown and f"| {auto['winner']} |" in markdown
    # the tiny pool shares no image with the target test split; the leakage check ran and says so
    leakage = report["leakage"]
    assert leakage["checked"] and leakage["test"]["exact_pairs"] == 0 and "## Leakage" in markdown
    assert leakage["n_excluded"] == leakage["test"]["pool_images_matched"]
    assert {"teacher", "scoring", "auto_selection", "selection"} <= {k.split(".")[-1] for k in report["wall_s"]}
    # the payload's recipe is the student this run trained, and its prediction is the report's
    recipe = read_header((tmp_path / "run" / "publish" / "payload.plada").read_bytes())["student_recipe"]
    trained = json.loads((tmp_path / "run" / "student" / "metrics.json").read_text())["config"]
    assert recipe["model"] == trained["train"]["model"] and recipe["preprocess"] == trained["preprocess"]
    assert recipe["train"] == {name: trained["train"][name] for name in recipe["train"]}
    assert recipe["predicted"]["acc"] == round(report["predicted_acc"], 4)


def test_the_pruning_columns_put_their_selectors_into_auto(prefect_server, tiny_npz, tmp_path):
    report = _run(tiny_npz, tmp_path / "run", density_ratio=True, label_stability="shifts")
    auto = report["auto_selection"]
    measured = {row["candidate"].split(" ")[0].split("+")[0] for row in auto["candidates"]}
    assert {"density_ratio", "reliable"} <= measured and auto["selectors_left_out"] == {}
    assert (tmp_path / "run" / "publish" / "density_ratio.npz").exists()


def test_a_selector_without_its_optional_column_is_refused_before_any_work(tmp_path):
    base = dict(references=["npz:x"], target_train="npz:t", target_test="npz:t", out=str(tmp_path), teacher_model="plada_cnn")
    with pytest.raises(ValidationError, match="--selector density_ratio reads the density_ratio column: add"):
        RunRequest(**base, selector="density_ratio")
    with pytest.raises(ValidationError, match="add --label-stability shifts"):
        RunRequest(**base, selector="reliable")
    assert RunRequest(**base, selector="reliable", label_stability="shifts").scoring_config().label_stability == "shifts"


def test_rerun_resumes_and_reproduces(prefect_server, tiny_npz, tmp_path):
    first = _run(tiny_npz, tmp_path / "a")
    scores = sorted((tmp_path / "a" / "publish" / "scores").iterdir())
    stamps = {p.name: p.stat().st_mtime_ns for p in scores}
    again = _run(tiny_npz, tmp_path / "a")  # same out: every stage finds its output and skips
    assert {p.name: p.stat().st_mtime_ns for p in scores} == stamps
    fresh = _run(tiny_npz, tmp_path / "b")  # same seed, new directory: same numbers
    for key in ("teacher_acc", "student_acc", "random_acc", "payload_bytes", "reference_fingerprint"):
        assert first[key] == again[key] == fresh[key], key


def test_plada_run_with_every_output_on_s3(prefect_server, tiny_npz, s3_root):
    """Pool, teacher, scores, manifest, payload, students and report all on moto's S3 server."""
    report = _run(tiny_npz, s3_root)
    assert report["n_kept"] == 60 and report["payload_bytes"] < 1_000_000
    on_s3 = storage.read_json(storage.join(s3_root, "report.json"))
    assert on_s3["student_acc"] == report["student_acc"]
    for part in ("publish/payload.plada", "publish/manifest.parquet", "publish/teacher/teacher.pt",
                 "student/student.pt", "reference/index.parquet"):
        assert storage.exists(storage.join(s3_root, part)), part
    assert "AWS" not in json.dumps(on_s3) and "127.0.0.1" not in json.dumps(on_s3)


def test_an_unlabelled_folder_pool_selects_what_the_labelled_pool_does(prefect_server, tiny_npz, tmp_path):
    """A client's pool is a folder of images without labels (``images:``): the same images in the same order
    give the same selection, payload labels and students as the labelled source; the pool stores no label."""
    import numpy as np
    from PIL import Image

    images = read_npz(tiny_npz["pool"].removeprefix("npz:"))["images"]
    folder = tmp_path / "photos"
    for i, image in enumerate(images):
        (folder / f"part{i // 100}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"part{i // 100}" / f"{i:04d}.png")
    runs = {}
    for name, spec in (("labelled", tiny_npz["pool"]), ("unlabelled", f"images:{folder}")):
        report = _run({**tiny_npz, "pool": spec}, tmp_path / name, selector="energy")
        ref = str(tmp_path / name / "reference")
        payload = decode_payload(storage.read_bytes(str(tmp_path / name / "publish" / "payload.plada")))
        runs[name] = (report, payload, pool.read_index(ref)["source_label"].to_numpy())
    (labelled, lab_payload, lab_index), (unlabelled, unl_payload, unl_index) = runs["labelled"], runs["unlabelled"]
    assert np.array_equal(lab_payload.indices, unl_payload.indices) and np.array_equal(lab_payload.labels, unl_payload.labels)
    for key in ("teacher_acc", "student_acc", "random_acc", "n_kept"):
        assert unlabelled[key] == labelled[key], key
    assert (unl_index == -1).all() and (lab_index >= 0).all()
    assert unlabelled["reference_fingerprint"] != labelled["reference_fingerprint"]  # the keys differ


def test_an_unlabelled_target_is_refused_before_any_work(tiny_npz, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    with pytest.raises(ValidationError, match="unlabelled images: .* --target-train needs a label per image"):
        RunRequest(references=[tiny_npz["pool"]], target_train=f"images:{folder}", target_test=tiny_npz["test"],
                   out=str(tmp_path / "o"))  # fmt: skip
    assert not (tmp_path / "o").exists()
