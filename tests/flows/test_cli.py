"""The CLI's error paths: bad input is a clear message and exit code 2, and nothing written before is lost."""

from __future__ import annotations

import json

import pytest

from flows.cli import _build_parser, main, parse_keep
from plada_core.payload import CODECS


def test_parse_keep_fraction_and_count():
    assert parse_keep("0.05") == 0.05 and parse_keep("1.0") == 1.0
    assert parse_keep("500") == 500 and isinstance(parse_keep("500"), int)


@pytest.mark.parametrize("command", ["publish", "run"])
def test_codec_choices_are_the_registered_codecs(command, capsys):
    required = {"publish": ["--reference-url", "r"], "run": ["--reference", "r"]}[command]
    common = [command, *required, "--target-train", "t", "--target-test", "t", "--out", "o"]
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


def test_unknown_source_lists_the_known_ones(tmp_path, capsys):
    assert main(["reference", "build", "--source", "imagenet-99k", "--out", str(tmp_path / "p")]) == 2
    assert "mnist5k" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["publish", "run", "train-student"])
def test_device_reaches_training_and_scoring_and_a_typo_is_refused(command, capsys):
    from flows.cli import _scoring_cfg, _train_cfg

    required = {"publish": ["--reference-url", "r", "--target-train", "t"], "run": ["--reference", "r", "--target-train", "t"],
                "train-student": ["--payload", "p", "--reference-url", "r"]}[command]  # fmt: skip
    common = [command, *required, "--target-test", "t", "--out", "o"]
    args = _build_parser().parse_args([*common, "--device", "cuda:1"])
    prefix = "student" if command == "train-student" else "teacher"
    assert _train_cfg(args, prefix).device == "cuda:1"
    if command != "train-student":
        assert _scoring_cfg(args).device == "cuda:1"
    assert _build_parser().parse_args(common).device == "auto"
    with pytest.raises(SystemExit):
        _build_parser().parse_args([*common, "--device", "gpu"])
    assert "'gpu'" in capsys.readouterr().err


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
