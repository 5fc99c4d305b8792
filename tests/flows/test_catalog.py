"""Task catalogs and change detection: catalog errors name the task, the field and the fix; a release whose inputs
are unchanged trains nothing; ``force`` republishes; a new keep re-selects from the cached teacher and scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import tasks.score
import tasks.teacher
from flows.catalog import CatalogError, CatalogRequest, load_catalog, read_catalog, run_catalog
from flows.cli import main
from flows.params import ReleaseRequest
from flows.release import publish_task, work_urls
from plada_core.digest import array_fingerprint, input_digest
from plada_core.io import pool, releases
from plada_core.io.sources import open_source

TINY = {"teacher_epochs": 2, "keep": 0.2, "selector": "energy", "proxy_epochs": 1,
        "preprocess": {"image_size": 8}}  # fmt: skip


def _write(path: Path, doc: dict) -> str:
    path.write_text(yaml.safe_dump(doc))
    return str(path)


# --- catalog files ---------------------------------------------------------------------------------------------


def test_catalog_errors_name_the_task_the_field_and_the_fix(tmp_path):
    url = _write(tmp_path / "c.yaml", {
        "defaults": {"root_url": "r", "reference_url": "p", "target_test": "sklearn-digits:test"},
        "tasks": [
            {"task": "ok", "target_train": "sklearn-digits:train"},
            {"task": "big-keep", "target_train": "a", "keep": 2.5},
            {"task": "typo", "target_train": "a", "kep": 0.1, "preprocess": {"imagesize": 8}},
            {"task": "no-train"},
            {"task": "cron", "target_train": "a", "schedule": "every monday", "student": {"student_epoch": 2}},
            {"task": "ok", "target_train": "b"},
        ],
    })  # fmt: skip
    entries, problems = read_catalog(url)
    assert [e.task for e in entries] == ["ok"]
    text = "\n".join(p for _, p in problems)
    assert "task 'big-keep' (tasks[1]): field 'keep': keep as a fraction must be in (0, 1], got 2.5" in text
    assert "It takes: Fraction of the pool" in text  # the field's own help says what to write instead
    assert "field 'kep' is not a field of a catalog task: remove or rename it (did you mean 'keep'?)" in text
    assert "field 'preprocess.imagesize' is not a field of 'preprocess'" in text and "'image_size'?" in text
    assert "task 'no-train' (tasks[3]): field 'target_train' is required: set it on the task or under defaults" in text
    assert "field 'schedule': 'every monday' is not a cron expression" in text
    assert "field 'student.student_epoch' is not a field of 'student'" in text and "'student_epochs'?" in text
    assert "task 'ok' (tasks[5]) is listed twice" in text
    with pytest.raises(CatalogError, match="7 problem"):
        load_catalog(url)


def test_defaults_merge_key_by_key_and_the_student_inherits_the_input(tmp_path):
    url = _write(tmp_path / "c.yaml", {
        "defaults": {"root_url": "r", "reference_url": "p", "target_train": "sklearn-digits:train", "target_test": "b",
                     "preprocess": {"image_size": 8, "channels": 1}},
        "tasks": [{"task": "t", "preprocess": {"image_size": 16}, "seed": 3, "student": {"student_epochs": 2}}],
    })  # fmt: skip
    (entry,) = load_catalog(url)
    assert (entry.preprocess.image_size, entry.preprocess.channels) == (16, 1)
    assert entry.student.preprocess == entry.preprocess and entry.student.seed == 3
    request = entry.release_request(force=True)
    assert type(request) is ReleaseRequest and request.force and request.keep == ReleaseRequest.model_fields[
        "keep"].default  # fmt: skip


def test_not_a_catalog_is_one_clear_error(tmp_path):
    with pytest.raises(CatalogError, match="no catalog at"):
        load_catalog(str(tmp_path / "missing.yaml"))
    (tmp_path / "bad.yaml").write_text("tasks: [\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(str(tmp_path / "bad.yaml"))
    with pytest.raises(CatalogError, match="a 'tasks' list"):
        load_catalog(_write(tmp_path / "list.yaml", {"task": "x"}))


def test_cli_validate_exit_status_and_message(tmp_path, capsys):
    good = _write(tmp_path / "good.yaml", {"tasks": [{"task": "t", "root_url": "r", "reference_url": "p",
                                                      "target_train": "sklearn-digits:train", "target_test": "b"}]})  # fmt: skip
    assert main(["catalog", "validate", good]) == 0
    assert "note: --teacher-model auto: plada_cnn, because 0 of the first" in capsys.readouterr().err
    bad = _write(tmp_path / "bad.yaml", {"tasks": [{"task": "t", "root_url": "r", "reference_url": "p"}]})
    assert main(["catalog", "validate", bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("plada catalog validate: error:") and "task 't' (tasks[0]): field 'target_train'" in err


def test_the_example_catalog_is_valid():
    example = Path(__file__).resolve().parents[2] / "deployments" / "catalog.example.yaml"
    assert [e.task for e in load_catalog(str(example))] == ["digits", "digits-small", "fashion"]


def test_schedule_override_is_due_only_on_its_nights():
    from datetime import UTC, datetime

    (entry,) = [e for e in load_catalog(str(Path(__file__).resolve().parents[2] / "deployments" /
                                            "catalog.example.yaml")) if e.schedule]  # fmt: skip
    monday, tuesday = datetime(2026, 3, 2, 2, 0, tzinfo=UTC), datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
    assert entry.is_due(monday) and not entry.is_due(tuesday)


# --- digests -----------------------------------------------------------------------------------------------------


def test_fingerprint_sees_one_pixel_one_label_and_one_name():
    images, labels = np.zeros((4, 8, 8), np.uint8), np.arange(4)
    base = array_fingerprint(images, labels, ["a", "b", "c", "d"])
    moved = images.copy()
    moved[2, 3, 3] = 1
    assert array_fingerprint(list(images), labels, list("abcd")) == base  # a list of images: same content
    assert len({base, array_fingerprint(moved, labels, list("abcd")),
                array_fingerprint(images, labels[::-1], list("abcd")),
                array_fingerprint(images, labels, list("abce"))}) == 4  # fmt: skip


def test_input_digest_ignores_the_version_and_force_only():
    fps = {"target_train": "1", "target_test": "2", "pool": "3", "teacher_checkpoint": None}
    dump = ReleaseRequest(task="t", root_url="r", reference_url="p", target_train="sklearn-digits:train", target_test="b").model_dump(
        mode="json")  # fmt: skip
    same = input_digest({**dump, "version": "v9", "force": True}, fps, "0.1.0")
    assert input_digest(dump, fps, "0.1.0") == same
    assert input_digest({**dump, "keep": 0.3}, fps, "0.1.0") != same
    assert input_digest(dump, {**fps, "pool": "4"}, "0.1.0") != same
    assert input_digest(dump, fps, "0.2.0") != same


def test_only_teacher_inputs_move_the_teacher_and_scores_folders():
    fps = {"target_train": "a" * 64, "target_test": "b" * 64, "pool": "c" * 64, "teacher_checkpoint": None}
    base = dict(task="t", root_url="/r", reference_url="p", target_train="sklearn-digits:train", target_test="b")  # noqa: C408

    def work(**kw):
        request = ReleaseRequest(**base, **kw)
        return work_urls(request, request.publish_request("/r/out", "v"), fps, "0.1.0")

    first = work()
    assert work(keep=0.3, selector="knn_sample", codec="layout-rc", alpha=1.0) == first
    assert work(teacher_epochs=3)["teacher_out"] != first["teacher_out"]
    changed = work(temperature=2.0)
    assert changed["teacher_out"] == first["teacher_out"] and changed["scores_out"] != first["scores_out"]
    assert first["scores_out"].startswith("file:///r/cache/scores/") and "/cache/teachers/" in first["teacher_out"]


# --- change detection in publish-task (tiny real runs) -----------------------------------------------------------


@pytest.fixture
def counted(monkeypatch):
    """How often a teacher is trained and a shard is scored in this process (tasks run in its threads)."""
    calls = {"teacher": 0, "shard": 0}

    def count(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(tasks.teacher, "fit_classifier", count("teacher", tasks.teacher.fit_classifier))
    monkeypatch.setattr(tasks.score, "score_stream", count("shard", tasks.score.score_stream))
    return calls


@pytest.fixture(scope="module")
def release(tiny_npz, tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog")
    pool.build_reference([open_source(tiny_npz["pool"])], str(root / "pool"), shard_size=128, progress=False)

    def make(**overrides) -> ReleaseRequest:
        fields = dict(task="tiny", root_url=str(root / "store"), reference_url=str(root / "pool"),
                      target_train=tiny_npz["train"], target_test=tiny_npz["test"], **TINY)  # fmt: skip
        return ReleaseRequest(**{**fields, **overrides})

    return make


def _mtimes(folder: str) -> dict[str, int]:
    path = Path(folder.removeprefix("file://"))
    return {str(p): p.stat().st_mtime_ns for p in sorted(path.rglob("*")) if p.is_file()}


def test_unchanged_inputs_publish_nothing_force_republishes_and_keep_reselects(prefect_server, release, counted):
    first = publish_task(release())
    assert first["status"] == "published" and counted == {"teacher": 1, "shard": 3}
    assert first["input_digest"] and first["inputs"]["pool"] and first["inputs"]["package"]
    cached = {**_mtimes(first["teacher_url"].rsplit("/", 1)[0]), **_mtimes(first["scores_url"])}
    assert any(p.endswith(".parquet") for p in cached) and any(p.endswith("teacher.pt") for p in cached)

    again = publish_task(release())
    assert again["status"] == "unchanged" and "inputs unchanged since version" in again["reason"]
    assert again["version"] == first["version"] and again["payload_url"] == first["payload_url"]
    assert counted == {"teacher": 1, "shard": 3}  # nothing trained, nothing scored

    forced = publish_task(release(force=True))
    assert forced["status"] == "published" and forced["version"] == f"{first['version']}.2"
    assert releases.read_latest(release().root_url, "tiny")["version"] == forced["version"]

    reselected = publish_task(release(keep=0.4))
    assert reselected["status"] == "published" and reselected["version"] == f"{first['version']}.3"
    assert reselected["report"]["n_kept"] == 120 != first["report"]["n_kept"]
    assert reselected["teacher_url"] == first["teacher_url"] and reselected["scores_url"] == first["scores_url"]
    assert counted == {"teacher": 1, "shard": 3}  # the teacher and the 3 shards of the first run served all
    assert {**_mtimes(first["teacher_url"].rsplit("/", 1)[0]), **_mtimes(first["scores_url"])} == cached

    changed = publish_task(release(teacher_epochs=3))
    assert changed["teacher_url"] != first["teacher_url"] and counted == {"teacher": 2, "shard": 6}


def test_changed_target_data_is_a_change(prefect_server, release, tiny_npz, tmp_path):
    with np.load(tiny_npz["train"].removeprefix("npz:")) as data:
        images, labels = data["images"].copy(), data["labels"]
    images[0, 0, 0] ^= 1  # one pixel of one training image
    np.savez(tmp_path / "train.npz", images=images, labels=labels)
    first = publish_task(release(task="pixel"))
    moved = publish_task(release(task="pixel", target_train=f"npz:{tmp_path / 'train.npz'}"))
    assert moved["status"] == "published" and moved["inputs"]["target_train"] != first["inputs"]["target_train"]
    assert moved["teacher_url"] != first["teacher_url"]  # new data, new teacher
    back = publish_task(release(task="pixel"))  # the first inputs again: compared with the latest release only
    assert back["status"] == "published" and back["teacher_url"] == first["teacher_url"]


# --- the catalog flow (tiny) -------------------------------------------------------------------------------------


def test_catalog_run_isolates_a_broken_task(prefect_server, release, tmp_path):
    good = release(task="cat-good").model_dump(mode="json", exclude={"version", "force"})
    url = _write(tmp_path / "catalog.yaml", {"tasks": [
        good,
        {**good, "task": "cat-broken", "target_train": "npz:/nonexistent/nope.npz"},
        {**good, "task": "cat-invalid", "keep": -1},
    ]})  # fmt: skip
    rows = {r["task"]: r for r in run_catalog(CatalogRequest(catalog=url, max_parallel=2))}
    assert rows["cat-good"]["status"] == "published" and rows["cat-good"]["payload_bytes"] > 0
    assert rows["cat-good"]["predicted_acc"] is not None and rows["cat-good"]["flow_run_id"]
    assert rows["cat-broken"]["status"] == "failed" and "nope.npz" in rows["cat-broken"]["reason"]
    assert rows["cat-broken"]["flow_run_id"]  # the failed subflow is linked
    assert rows["cat-invalid"]["status"] == "failed" and "field 'keep'" in rows["cat-invalid"]["reason"]
    again = {r["task"]: r for r in run_catalog(CatalogRequest(catalog=url))}
    assert again["cat-good"]["status"] == "unchanged" and again["cat-good"]["version"] == rows["cat-good"]["version"]


def test_a_check_of_the_whole_task_is_reported_not_raised(tmp_path):
    """Checks across fields (a selector without its score column, a model nothing can be looked at for) have no
    field to name: the problem is reported under the task all the same."""
    url = _write(tmp_path / "c.yaml", {
        "defaults": {"root_url": "r", "reference_url": "p", "target_test": "sklearn-digits:test"},
        "tasks": [{"task": "dr", "target_train": "sklearn-digits:train", "selector": "density_ratio"},
                  {"task": "gone", "target_train": "npz:/no/such.npz"}],
    })  # fmt: skip
    entries, problems = read_catalog(url)
    assert entries == [] and [name for name, _ in problems] == ["dr", "gone"]
    assert "task 'dr' (tasks[0]): --selector density_ratio reads the density_ratio column: add --density-ratio" in (
        problems[0][1])
    assert "task 'gone' (tasks[1]): --teacher-model auto could not look at the target train split" in problems[1][1]


def test_a_student_without_a_model_is_the_recipe_student(tmp_path):
    """The measured accuracy is about the student the prediction is about: with ``teacher_model: auto`` a colour
    task's student is the ImageNet model at its input, unless the student block names its own."""
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "colour.npz", images=rng.integers(0, 256, (8, 12, 12, 3), dtype=np.uint8),
             labels=np.arange(8) % 2)  # fmt: skip
    url = _write(tmp_path / "c.yaml", {
        "defaults": {"root_url": "r", "reference_url": "p", "target_test": "t"},
        "tasks": [{"task": "photos", "target_train": f"npz:{tmp_path}/colour.npz", "student": {"student_epochs": 2}},
                  {"task": "own", "target_train": f"npz:{tmp_path}/colour.npz",
                   "student": {"student_model": "plada_cnn", "student_epochs": 2}},
                  {"task": "digits", "target_train": "sklearn-digits:train", "student": {"seed": 3}}],
    })  # fmt: skip
    photos, own, digits = load_catalog(url)
    assert photos.teacher_model == photos.student.student_model == "plada_effnet_lite0_ml"
    assert photos.student.preprocess == photos.preprocess and photos.student.preprocess.channels == 3
    assert photos.student.student_epochs == 2
    assert own.student.student_model == "plada_cnn" and own.student.preprocess.channels == 1
    assert digits.student.student_model == "plada_cnn" and digits.student.seed == 3
