"""Versioned publishing: idempotent re-runs, failures leave ``latest`` alone, concurrent runs are excluded."""

from __future__ import annotations

import pytest

from flows.params import PublishRequest, ReleaseRequest, RunRequest, StudentRecipe
from flows.release import publish_task
from plada_core.images import PreprocessConfig
from plada_core.io import pool, releases, storage
from plada_core.io.sources import open_source
from plada_core.payload import read_header
from plada_core.recipe import student_recipe


@pytest.fixture(scope="module")
def request_for(tiny_npz, tmp_path_factory):
    root = tmp_path_factory.mktemp("rel")
    pool.build_reference([open_source(tiny_npz["pool"])], str(root / "pool"), shard_size=128, progress=False)

    def make(**overrides) -> ReleaseRequest:
        fields = dict(
            task="tiny",
            version="v1",
            root_url=str(root / "store"),
            reference_url=str(root / "pool"),
            target_train=tiny_npz["train"],
            target_test=tiny_npz["test"],
            teacher_epochs=3,
            keep=0.2,
            preprocess=PreprocessConfig(image_size=8),
        )
        return ReleaseRequest(**{**fields, **overrides})

    return make


def test_release_then_idempotent_rerun(prefect_server, request_for):
    req = request_for()
    first = publish_task(req)
    latest = releases.read_latest(req.root_url, "tiny")
    assert latest["version"] == "v1" and latest["payload_url"] == first["payload_url"]
    # the student a client without a preference trains: the one the predicted accuracy was measured with
    recipe = {**latest["student_recipe"]}
    predicted = recipe.pop("predicted")  # and what the publisher expects of that student
    assert recipe == student_recipe(req.proxy_config(), req.preprocess) and recipe["model"] == req.proxy_config().model
    expected = latest["report"]["predicted_acc"]
    assert (predicted["acc"], predicted["n_val"]) == (round(expected["value"], 4), expected["n_val"])
    payload = read_header(storage.read_bytes(latest["payload_url"]))
    assert (payload["format_version"], payload["student_recipe"]) == (3, latest["student_recipe"])  # travels too
    release_file = releases.release_url(req.root_url, "tiny", "v1").removeprefix("file://")
    before = open(release_file).read()
    again = publish_task(req)
    assert again["payload_url"] == first["payload_url"] and open(release_file).read() == before


def test_release_predicts_its_accuracy_from_the_validation_table(prefect_server, request_for):
    record = publish_task(request_for(version="v-auto", proxy_epochs=2))
    report = record["report"]
    predicted = report["predicted_acc"]
    assert 0 <= predicted["ci95"][0] <= predicted["value"] <= predicted["ci95"][1] <= 1 and predicted["se"] > 0
    assert predicted["n_candidates"] == len(report["auto_selection"]["candidates"]) > 8
    assert report["selector"] == report["auto_selection"]["config"]["selector"] != "auto"
    assert report["leakage"]["checked"] and report["leakage"]["n_excluded"] == len(
        releases_excluded(record)
    )
    stored = releases.read_release(request_for().root_url, "tiny", "v-auto")
    assert stored["report"]["predicted_acc"] == predicted


def releases_excluded(record: dict) -> list[int]:
    """The pool indices the release could not select (test duplicates), from its leakage.json."""
    from plada_core.io import layout, storage

    return storage.read_json(layout.leakage_url(record["url"]))["test_duplicates"]


def test_failed_run_leaves_latest_where_it_was(prefect_server, request_for):
    publish_task(request_for())
    before = releases.read_latest(request_for().root_url, "tiny")
    with pytest.raises(Exception, match="nope.npz"):
        publish_task(request_for(version="v2", target_train="npz:/nonexistent/nope.npz"))
    assert releases.read_latest(request_for().root_url, "tiny")["version"] == before["version"]
    assert not releases.is_released(request_for().root_url, "tiny", "v2")


def test_run_waits_out_or_refuses_a_held_lock(prefect_server, request_for):
    req = request_for(version="v3")
    with releases.task_lock(req.root_url, "tiny", owner="nightly"):
        with pytest.raises(releases.LockHeld, match="nightly"):
            publish_task(req, lock_wait_s=0)
    assert not releases.is_released(req.root_url, "tiny", "v3")


def test_bad_request_names_the_field():
    with pytest.raises(ValueError, match="keep"):
        ReleaseRequest(task="t", root_url="r", reference_url="r", target_train="a", target_test="b", keep=2.5)
    with pytest.raises(ValueError, match="task"):
        ReleaseRequest(task="bad name", root_url="r", reference_url="r", target_train="a", target_test="b")
    with pytest.raises(ValueError, match="device.*'gpu'"):
        ReleaseRequest(task="t", root_url="r", reference_url="r", target_train="a", target_test="b", device="gpu")
    with pytest.raises(ValueError, match="codec"):
        ReleaseRequest(task="t", root_url="r", reference_url="r", target_train="a", target_test="b", codec="gzip")
    with pytest.raises(ValueError, match="max_payload_bytes"):
        ReleaseRequest(task="t", root_url="r", reference_url="r", target_train="a", target_test="b",
                       max_payload_bytes=10)


def test_release_with_a_codec_and_a_payload_budget(prefect_server, request_for):
    from plada_core.io import storage
    from plada_core.payload import read_header

    budget = 600  # the recipe with its prediction alone is ~300 B of it
    record = publish_task(request_for(version="v5", codec="layout-rc", max_payload_bytes=budget))
    data = storage.read_bytes(record["payload_url"])
    assert len(data) <= budget and read_header(data)["codec"] == "layout-rc"
    assert read_header(data)["student_recipe"]["predicted"]  # the prediction travels within the budget
    # the candidates were sized with the same recipe (a stand-in prediction): the validation table's bytes are the
    # payload's, and under a budget that binds the payload holds exactly the winner's images (its real prediction
    # being shorter than the stand-in would otherwise leave room for a few more)
    selection = storage.read_json(storage.join(record["url"], "selection.json"))
    won = next(row for row in selection["auto_selection"]["candidates"] if row["chosen"])
    assert selection["n_kept"] == won["n_kept"] and 0 <= won["payload_bytes"] - len(data) <= 16


def test_the_device_reaches_every_stage_config():
    req = ReleaseRequest(task="t", root_url="r", reference_url="r", target_train="sklearn-digits:train", target_test="b", device="cuda:1")
    assert req.teacher_config().train.device == req.scoring_config().device == "cuda:1"
    assert StudentRecipe(device="cpu").student_config().train.device == "cpu"
    assert ReleaseRequest.model_json_schema()["properties"]["device"]["default"] == "auto"  # the UI form's value


def test_student_runs_report_and_plot_accuracy_over_releases(prefect_server, request_for, tiny_npz):
    from flows.release import train_student_release

    student = StudentRecipe(student_epochs=2, preprocess=PreprocessConfig(image_size=8))
    for version, keep in (("k10", 0.1), ("k30", 0.3)):
        record = publish_task(request_for(version=version, keep=keep))
        report = train_student_release(record["payload_url"], record["reference_url"], tiny_npz["test"],
                                       record["random_payload_url"], record["publish_flow_run_id"], student)
        assert report["random_acc"] is not None and report["n_kept"] == round(keep * 300)
        paired = report["student_vs_random"]  # the two students on the same test images
        assert paired["diff"] == pytest.approx(report["student_acc"] - report["random_acc"], abs=1e-6)
    rows = releases.student_reports(request_for().root_url, "tiny", "plada_cnn-seed0")
    assert sorted(r["version"] for r in rows) == ["k10", "k30"]
    png = (releases.version_url(request_for().root_url, "tiny", "k30").removeprefix("file://")
           + "/students/plada_cnn-seed0/accuracy_vs_payload.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def _form(model) -> dict:
    """The parameter form the Prefect UI renders for a flow taking ``model`` (its JSON schema), leaves inlined."""
    schema = model.model_json_schema()
    props = dict(schema["properties"])
    for name, prop in schema["properties"].items():
        for ref in [prop.get("$ref")] + [a.get("$ref") for a in prop.get("anyOf", [])]:  # optional groups: anyOf
            if ref:
                props.update(schema["$defs"][ref.split("/")[-1]]["properties"])
    return props


@pytest.mark.parametrize("model", [ReleaseRequest, PublishRequest, RunRequest])
def test_ui_form_offers_exactly_the_registered_codecs_and_auto(model):
    from plada_core.payload import AUTO, CODECS

    assert set(_form(model)["codec"]["enum"]) == {*CODECS, AUTO}


@pytest.mark.parametrize("model", [ReleaseRequest, PublishRequest, RunRequest])
def test_ui_form_offers_exactly_the_registered_selectors_and_crops(model):
    from plada_core.images import CROPS
    from plada_core.selection import AUTO_SELECTOR, SELECTORS

    assert set(_form(model)["selector"]["enum"]) == {AUTO_SELECTOR, *SELECTORS}
    assert _form(model)["selector"]["default"] == AUTO_SELECTOR  # publishers measure their selection by default
    assert set(_form(model)["crop"]["enum"]) == set(CROPS)


def test_ui_form_fields_carry_the_core_configs_defaults_bounds_and_help():
    from plada_core.selection import SelectionConfig
    from plada_core.training import TrainConfig

    form = _form(ReleaseRequest)
    epochs = TrainConfig.__pydantic_fields__["epochs"]
    assert form["teacher_epochs"]["default"] == TrainConfig().epochs
    assert form["teacher_epochs"]["description"] == epochs.description
    assert (form["teacher_epochs"]["minimum"], form["teacher_epochs"]["maximum"]) == (1, 1000)
    assert form["alpha"]["default"] == SelectionConfig().alpha and form["image_size"]["default"] == 16
    assert form["preprocess"]["default"] is None  # left empty: the model's own input (models.model_input)
    assert set(_form(StudentRecipe)) >= {"student_epochs", "student_lr", "seed", "device", "image_size"}


def test_a_release_student_without_a_model_follows_the_payload_recipe():
    """train-student-release (the event-triggered deployment, a catalog's student) trains the payload's recipe
    when its ``student`` names no model, as ``plada train-student`` does; a named model is trained as named."""
    recipe = {"model": "plada_cnn_wide", "preprocess": {"image_size": 12, "channels": 1, "crop": "none"},
              "train": {"epochs": 7, "lr": 0.01}}  # fmt: skip
    student, source = StudentRecipe().following(recipe, "payload")
    assert type(student) is StudentRecipe and source == "payload"
    assert (student.student_model, student.preprocess.image_size, student.student_epochs, student.student_lr) == (
        "plada_cnn_wide", 12, 7, 0.01)  # fmt: skip
    assert StudentRecipe(student_epochs=3).following(recipe, "payload")[0].student_epochs == 3  # its own flag wins
    named, source = StudentRecipe(student_model="plada_cnn").following(recipe, "payload")
    assert named.student_model == "plada_cnn" and source == "request"
