"""The CLI's error paths: bad input is a clear message and exit code 2, and nothing written before is lost."""

from __future__ import annotations

import dataclasses
import json

import pytest

from flows.cli import _build_parser, main, parse, parse_keep
from flows.params import PublishRequest
from plada_core.config import StudentConfig, TeacherConfig
from plada_core.images import PreprocessConfig
from plada_core.payload import CODECS
from plada_core.scoring import ScoringConfig
from plada_core.selection import SelectionConfig
from plada_core.training import TrainConfig


def test_parse_keep_fraction_and_count():
    assert parse_keep("0.05") == 0.05 and parse_keep("1.0") == 1.0
    assert parse_keep("500") == 500 and isinstance(parse_keep("500"), int)


@pytest.mark.parametrize("command", ["publish", "run"])
def test_codec_choices_are_the_registered_codecs(command, capsys):
    required = {"publish": ["--reference-url", "r"], "run": ["--reference", "r"]}[command]
    common = [command, *required, "--target-train", "sklearn-digits:train", "--target-test", "t", "--out", "o"]
    for codec in CODECS:
        assert _build_parser().parse_args([*common, "--codec", codec]).codec == codec
    with pytest.raises(SystemExit):
        _build_parser().parse_args([*common, "--codec", "lzma"])
    assert "invalid choice: 'lzma'" in capsys.readouterr().err


def test_missing_source_is_a_clear_error(tmp_path, capsys):
    code = main(["reference", "build", "--source", f"npz:{tmp_path}/nope.npz", "--out", str(tmp_path / "p")])
    assert code == 2 and "nope.npz" in capsys.readouterr().err


def test_unreadable_npz_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_text("not an archive")
    assert main(["reference", "build", "--source", f"npz:{bad}", "--out", str(tmp_path / "p")]) == 2
    assert "bad.npz" in capsys.readouterr().err


def test_build_then_refuse_to_overwrite(tiny_npz, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["reference", "build", "--source", tiny_npz["pool"], "--out", str(out), "--shard-size", "128"]) == 0
    before = json.loads((out / "reference.json").read_text())
    assert main(["reference", "build", "--source", tiny_npz["train"], "--out", str(out)]) == 2
    assert "never overwrites" in capsys.readouterr().err
    assert json.loads((out / "reference.json").read_text()) == before


def test_build_reports_the_unreadable_files_each_source_passed_over(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "3.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        assert main(["reference", "build", "--source", f"images:{tmp_path}", "--out", str(tmp_path / "p")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n"] == 3 and printed["sources"] == {f"images:{tmp_path}": {"n": 3, "n_unreadable": 1}}
    record = json.loads((tmp_path / "p" / "reference.json").read_text())["sources"][0]
    assert record["labelled"] is False and record["n_unreadable"] == 1


def test_unknown_source_lists_the_known_ones(tmp_path, capsys):
    assert main(["reference", "build", "--source", "imagenet-99k", "--out", str(tmp_path / "p")]) == 2
    assert "mnist5k" in capsys.readouterr().err


REQUIRED = {
    "publish": ["--reference-url", "r", "--target-train", "sklearn-digits:train"],
    "run": ["--reference", "r", "--target-train", "sklearn-digits:train"],
    "train-student": ["--payload", "p", "--reference-url", "r"],
}


@pytest.mark.parametrize("command", ["publish", "run", "train-student"])
def test_device_reaches_training_and_scoring_and_a_typo_is_refused(command, capsys):
    common = [command, *REQUIRED[command], "--target-test", "t", "--out", "o"]
    _, request = parse([*common, "--device", "cuda:1"])
    if command == "train-student":
        assert request.student_config().train.device == "cuda:1"
    else:
        assert request.teacher_config().train.device == request.scoring_config().device == "cuda:1"
    assert parse(common)[1].device == "auto"
    with pytest.raises(SystemExit) as exc:
        parse([*common, "--device", "gpu"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"plada {command}: error: argument --device:" in err and "'gpu'" in err


@pytest.mark.parametrize(
    "option, message",
    [
        (["--keep", "2.5"], "argument --keep: "),
        (["--keep", "0"], "argument --keep: keep as a fraction must be in (0, 1]"),
        (["--alpha", "9"], "argument --alpha: Input should be less than or equal to 4"),
        (["--teacher-epochs", "0"], "argument --teacher-epochs: Input should be greater than or equal to 1"),
        (["--image-size", "2"], "argument --image-size: Input should be greater than or equal to 4"),
        (["--max-payload-bytes", "3"], "argument --max-payload-bytes: "),
        (["--selector", "nope"], "argument --selector: invalid choice: 'nope'"),
        (["--channels", "2"], "argument --channels: invalid choice: 2"),
        (["--teacher-model", "resnet_18"], "argument --teacher-model: unknown model 'resnet_18' (did you mean "
                                           "'resnet18'?): PLADA's are plada_cnn, "),
        (["--proxy-model", "auto"], "argument --proxy-model: auto is not a proxy model: leave it empty"),
    ],
)
def test_a_refused_value_names_its_flag(option, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(["publish", *REQUIRED["publish"], "--target-test", "t", "--out", "o", *option])
    assert exc.value.code == 2 and "plada publish: error: " + message in capsys.readouterr().err


def test_flags_reach_the_stage_configs():
    _, run = parse(["run", *REQUIRED["run"], "--reference", "r2", "--target-test", "t", "--out", "o", "--keep", "500",
                    "--no-safety-net", "--alpha", "0.25", "--teacher-epochs", "3", "--student-lr", "0.01",
                    "--image-size", "8", "--crop", "content", "--seed", "4", "--codec", "auto", "--runner", "dask",
                    "--workers", "3", "--dask-address", "tcp://h:8786", "--teacher-checkpoint", "t.pt"])  # fmt: skip
    assert run.references == ["r", "r2"] and (run.codec, run.runner, run.workers) == ("auto", "dask", 3)
    assert run.selection_config() == SelectionConfig("auto", keep=500, safety_net=False, alpha=0.25, seed=4)
    teacher = run.teacher_config()
    assert (teacher.train.epochs, teacher.train.seed, teacher.checkpoint) == (3, 4, "t.pt")
    assert teacher.preprocess == run.student_config().preprocess == PreprocessConfig(image_size=8, crop="content")
    assert run.student_config().train == TrainConfig(lr=0.01, seed=4)
    assert run.task_runner().__class__.__name__ == "DaskTaskRunner"


def test_the_prediction_is_about_the_student_the_run_trains():
    """plada run: the proxies are the run's student, model and every training setting of the recipe, not the
    teacher's; --recipe-* and --proxy-model still win; publish alone predicts for the teacher's settings."""
    base = ["run", *REQUIRED["run"], "--target-test", "t", "--out", "o", "--teacher-epochs", "12",
            "--teacher-lr", "0.002"]  # fmt: skip
    student = ["--student-epochs", "7", "--student-model", "plada_cnn_wide", "--student-lr", "0.01",
               "--student-batch-size", "32", "--student-weight-decay", "0", "--student-shift", "0.25"]  # fmt: skip
    _, run = parse([*base, *student])
    proxy = run.publish_request("ref", "out").proxy_config()
    assert proxy == dataclasses.replace(run.student_config().train, seed=proxy.seed)
    assert (proxy.epochs, proxy.model, proxy.lr, proxy.batch_size, proxy.weight_decay, proxy.shift) == (
        7, "plada_cnn_wide", 0.01, 32, 0.0, 0.25)  # fmt: skip
    _, run = parse([*base, "--student-epochs", "7", "--recipe-epochs", "9", "--recipe-lr", "0.02",
                    "--proxy-model", "plada_cnn"])  # fmt: skip
    publish = run.publish_request("ref", "out")
    assert (publish.proxy_config().epochs, publish.proxy_config().lr, publish.proxy_model) == (9, 0.02, "plada_cnn")
    alone = PublishRequest(reference_url="r", out="o", target_train="sklearn-digits:train", target_test="b", teacher_epochs=12,
                           teacher_lr=0.002).proxy_config()  # fmt: skip
    assert (alone.epochs, alone.lr) == (12, 0.002)
    with pytest.raises(ValueError, match="recipe_shift"):
        PublishRequest(reference_url="r", out="o", target_train="sklearn-digits:train", target_test="b", recipe_shift=0.5)


def test_the_recipe_never_fine_tunes():
    """A fine-tuning teacher's proxies train the head alone (features computed once), so the recipe they measured,
    the one the payload recommends, says finetune 0; a run's fine-tuned student is reported as differing."""
    _, run = parse(["run", *REQUIRED["run"], "--target-test", "t", "--out", "o", "--teacher-model",
                    "plada_effnet_lite0_ml", "--teacher-finetune", "1", "--student-model", "plada_effnet_lite0_ml",
                    "--student-finetune", "1"])  # fmt: skip
    publish = run.publish_request("ref", "out")
    assert publish.teacher_config().train.finetune == 1
    assert publish.proxy_config().finetune == 0 and publish.student_recipe()["train"]["finetune"] == 0


def test_defaults_are_the_core_configs_defaults():
    _, run = parse(["run", *REQUIRED["run"], "--target-test", "t", "--out", "o"])
    assert run.teacher_config() == TeacherConfig() and run.student_config() == StudentConfig()
    assert run.selection_config() == SelectionConfig(selector="auto")  # the one default a publisher changes
    assert run.scoring_config() == ScoringConfig()
    from plada_core.proxy import AutoConfig

    assert run.auto_config() == AutoConfig()


def test_demo_takes_the_pair_and_the_given_flags(monkeypatch):
    from plada_core.pairs import DEMO_PAIRS

    monkeypatch.setattr("flows.cli._available", lambda spec: False)
    _, request = parse(["demo", "--out", "o", "--seed", "2"])
    pair = DEMO_PAIRS["default"]
    assert request.references == pair["references"] and request.preprocess == pair["preprocess"]
    assert request.keep == pair["keep"] and request.seed == 2 and request.teacher_config().train.seed == 2
    assert parse(["demo", "--out", "o", "--keep", "0.05", "--pair", "natural"])[1].keep == 0.05
    natural = parse(["demo", "--out", "o", "--pair", "natural"])[1]
    assert natural.teacher_model == "plada_effnet_lite0_ml"
    assert natural.preprocess == PreprocessConfig(image_size=32, channels=3, crop="none")  # the model's own input


def test_preprocess_leaves_left_out_come_from_the_model():
    base = ["run", "--target-train", "sklearn-digits:train", "--target-test", "b", "--reference", "r", "--out", "o"]
    _, request = parse([*base, "--teacher-model", "plada_effnet_lite0_ml", "--image-size", "64"])
    assert request.preprocess == PreprocessConfig(image_size=64, channels=3, crop="none")
    _, request = parse(base)  # plada_cnn has no natural input: PreprocessConfig's defaults
    assert request.preprocess == PreprocessConfig()
    _, request = parse([*base, "--teacher-model", "plada_effnet_lite0_ml", "--channels", "1"])
    assert request.preprocess.channels == 1 and request.teacher_config().preprocess.image_size == 32


@pytest.fixture(scope="module")
def payload_files(tiny_npz, tmp_path_factory):
    """A pool, a layout-rc payload for it, and a second pool it was not made for."""
    from plada_core.io import pool
    from plada_core.io.sources import open_source
    from plada_core.payload import encode_payload

    root = tmp_path_factory.mktemp("inspect")
    ref = pool.build_reference([open_source(tiny_npz["pool"])], str(root / "pool"), shard_size=128, progress=False)
    other = pool.build_reference([open_source(tiny_npz["train"])], str(root / "other"), shard_size=128, progress=False)
    data = encode_payload([3, 4, 5, 90], [1, 1, 0, 2], n_reference=ref["n"], n_classes=3,
                          fingerprint=ref["fingerprint"], codec="layout-rc", layout=pool.read_layout(str(root / "pool")))
    (root / "payload.plada").write_bytes(data)
    (root / "cut.plada").write_bytes(data[:-3])
    return {"pool": str(root / "pool"), "other": str(root / "other"), "payload": str(root / "payload.plada"),
            "cut": str(root / "cut.plada"), "bytes": len(data), "other_ref": other}


def test_payload_inspect_reads_the_header_and_decodes_against_a_pool(payload_files, capsys):
    assert main(["payload", "inspect", payload_files["payload"]]) == 0
    header = json.loads(capsys.readouterr().out)
    assert (header["codec"], header["k"], header["n_classes"]) == ("layout-rc", 4, 3)
    assert header["payload_bytes"] == payload_files["bytes"] and "decoded" not in header
    assert main(["payload", "inspect", payload_files["payload"], "--reference-url", payload_files["pool"]]) == 0
    decoded = json.loads(capsys.readouterr().out)
    assert decoded["decoded"] is True and decoded["classes_present"] == 3
    assert decoded["images_per_class"] == {"min": 1, "max": 2}


def test_payload_inspect_names_a_foreign_pool_and_a_truncated_file(payload_files, capsys):
    assert main(["payload", "inspect", payload_files["payload"], "--reference-url", payload_files["other"]]) == 2
    assert "different reference pool" in capsys.readouterr().err
    assert main(["payload", "inspect", payload_files["cut"]]) == 2
    assert "truncated" in capsys.readouterr().err


def test_auto_models_suit_the_target_images(tmp_path, capsys):
    """No model named: colour targets get the ImageNet backbone and its 32 px RGB input, grey ones the small CNN;
    the student follows the teacher; the choice is printed with its reason."""
    import numpy as np

    rng = np.random.default_rng(0)
    colour, grey = tmp_path / "colour.npz", tmp_path / "grey.npz"
    np.savez(colour, images=rng.integers(0, 256, (12, 20, 20, 3), dtype=np.uint8), labels=np.arange(12) % 3)
    np.savez(grey, images=rng.integers(0, 256, (12, 20, 20), dtype=np.uint8), labels=np.arange(12) % 3)
    base = ["run", "--target-test", "t", "--reference", "r", "--out", "o"]
    _, run = parse([*base, "--target-train", f"npz:{colour}"])
    assert (run.teacher_model, run.student_model) == ("plada_effnet_lite0_ml",) * 2
    assert run.preprocess == PreprocessConfig(image_size=32, channels=3, crop="none")
    assert run.publish_request("ref", "out").proxy_config().model == "plada_effnet_lite0_ml"
    assert "note: --teacher-model auto: plada_effnet_lite0_ml, because 12 of the first 12" in capsys.readouterr().err
    _, run = parse([*base, "--target-train", f"npz:{grey}", "--image-size", "24"])
    assert (run.teacher_model, run.student_model, run.preprocess.image_size) == ("plada_cnn", "plada_cnn", 24)
    _, run = parse([*base, "--target-train", f"npz:{colour}", "--teacher-model", "plada_cnn_wide"])
    assert run.student_model == "plada_cnn_wide" and run.preprocess == PreprocessConfig()  # no look: named
    _, publish = parse(["publish", "--target-train", f"npz:{colour}", "--target-test", "t", "--reference-url", "r",
                        "--out", "o", "--image-size", "64"])  # fmt: skip
    assert publish.teacher_model == "plada_effnet_lite0_ml" and publish.preprocess.image_size == 64


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--target-train", "npz:/no/such.npz", "--target-test", "t", "--reference", "r", "--out", "o"],
         "--teacher-model auto could not look at the target train split 'npz:/no/such.npz' (npz:/no/such.npz: file "
         "not found"),
        (["train-student", "--payload", "p", "--reference-url", "r", "--out", "o", "--student-model", "auto"],
         "--student-model auto picks the model from the target train split's images, and there is none here: name "
         "a model (--student-model plada_cnn"),
    ],
)
def test_an_auto_model_with_nothing_to_look_at_names_the_fix(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
