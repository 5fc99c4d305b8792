"""The pure publishing core: selection, budget search, manifest and payload from scores held in memory."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from plada_core.manifest import validate_manifest
from plada_core.payload import CODECS, decode_payload, encode_payload, read_header
from plada_core.publishing import select_and_pack
from plada_core.selection import SelectionConfig, select

N_POOL, N_SCORED, CLASSES = 600, 500, ["zero", "one", "two", "three"]
FINGERPRINT = "cd" * 32
TEACHER = {"teacher": {"url": "mem://teacher", "model": "plada_cnn", "test_acc": 0.9}}


def _scores(seed: int = 0) -> pd.DataFrame:
    """Scores of 500 of a 600-image pool (some images dropped), sorted by index, with a blocky label layout."""
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(N_POOL, N_SCORED, replace=False))
    return pd.DataFrame({
        "index": index,
        "pred": (index // 150 + (rng.random(N_SCORED) < 0.1)) % len(CLASSES),
        "energy": rng.normal(-5, 2, N_SCORED).astype(np.float32),
        "max_softmax": rng.uniform(0.3, 1, N_SCORED).astype(np.float32),
        "entropy": rng.uniform(0, 1.4, N_SCORED).astype(np.float32),
    })  # fmt: skip


def _index() -> pd.DataFrame:
    return pd.DataFrame({"index": np.arange(N_POOL), "key": [f"k{i:04d}" for i in range(N_POOL)],
                         "shard": [f"shard-{i // 200:06d}.tar" for i in range(N_POOL)]})  # fmt: skip


def _pack(cfg=SelectionConfig("energy", keep=0.1), codec="paper-zstd19", **kwargs):
    kwargs = {"n_reference": N_POOL, "fingerprint": FINGERPRINT, "index": _index(), "meta": TEACHER, **kwargs}
    return select_and_pack(_scores(), CLASSES, cfg, codec, **kwargs)


def test_keeps_what_select_keeps_and_the_payload_carries_exactly_it():
    scores, cfg = _scores(), SelectionConfig("energy", keep=0.1)
    result = _pack(cfg)
    expected = scores.iloc[select({c: scores[c].to_numpy() for c in scores.columns}, len(CLASSES), cfg)]
    pd.testing.assert_frame_equal(result.kept, expected)
    decoded = decode_payload(result.payload, expected_fingerprint=FINGERPRINT, expected_n_reference=N_POOL)
    assert decoded.indices.tolist() == expected["index"].tolist()
    assert decoded.labels.tolist() == expected["pred"].tolist()
    assert (decoded.class_names, decoded.task, decoded.version) == (tuple(CLASSES), None, None)


def test_the_payload_names_the_classes_the_task_and_the_version():
    result = _pack(task="digits", version="2024-06-01")
    header = read_header(result.payload)
    assert (header["format_version"], header["class_names"]) == (2, tuple(CLASSES))
    assert (header["task"], header["version"]) == ("digits", "2024-06-01")
    assert result.payload.endswith(_pack().payload[-header["body_length"]:])  # the body does not change
    with pytest.raises(ValueError, match="task 'no way' is not a release name"):
        _pack(task="no way")


def test_summary_counts_sizes_and_the_config_used():
    result = _pack(SelectionConfig(keep=0.1, selector="entropy"))
    s = result.summary
    assert set(s) == {"n_reference", "n_scored", "n_kept", "keep_reached", "payload_bytes", "max_payload_bytes",
                      "class_histogram", "selection", "codec", "codec_requested"}  # fmt: skip
    assert (s["n_reference"], s["n_scored"], s["n_kept"]) == (N_POOL, N_SCORED, round(0.1 * N_SCORED))
    assert s["keep_reached"] == s["n_kept"] / N_POOL
    assert s["payload_bytes"] == len(result.payload) and s["max_payload_bytes"] is None
    assert sum(s["class_histogram"]) == s["n_kept"] and len(s["class_histogram"]) == len(CLASSES)
    assert s["selection"] == dataclasses.asdict(SelectionConfig(keep=0.1, selector="entropy"))
    assert (s["codec"], s["codec_requested"]) == ("paper-zstd19", "paper-zstd19")


def test_manifest_carries_the_run_metadata_and_the_index_rows():
    result = _pack(SelectionConfig("energy", keep=25))
    meta = validate_manifest(result.manifest)
    assert meta["reference_fingerprint"] == FINGERPRINT and meta["teacher"] == TEACHER["teacher"]
    assert (meta["selector"], meta["config"]["keep"], meta["class_names"]) == ("energy", 25, CLASSES)
    assert list(meta)[:3] == ["manifest_version", "reference_fingerprint", "teacher"]  # the task's historic order
    keys = result.manifest.column("key").to_pylist()
    assert keys == [f"k{i:04d}" for i in result.kept["index"]]
    assert result.manifest.column("label").to_pylist() == result.kept["pred"].tolist()


def test_index_lookup_is_asked_for_the_kept_rows_only_and_gives_the_same_manifest():
    asked = []

    def lookup(indices):
        asked.append(np.asarray(indices).tolist())
        return _index().set_index("index").loc[np.asarray(indices)].reset_index()

    by_lookup, by_frame = _pack(index=lookup), _pack()
    assert asked == [by_frame.kept["index"].tolist()]
    assert by_lookup.manifest.equals(by_frame.manifest, check_metadata=True)
    assert by_lookup.payload == by_frame.payload


def test_scores_outside_the_index_are_refused():
    with pytest.raises(ValueError, match="not in the reference index"):
        _pack(index=_index().iloc[:100])


@pytest.mark.parametrize("codec", ["paper-zstd19", "context-rc", "auto"])
def test_budget_mode_keeps_the_largest_selection_that_fits(codec):
    budget = 115  # 90 for the selection, 25 for the class names (format 2)
    result = _pack(SelectionConfig("energy", keep=0.5), codec, max_bytes=budget)
    s, k = result.summary, result.summary["n_kept"]
    assert 0 < k < N_SCORED and s["payload_bytes"] <= budget and s["max_payload_bytes"] == budget
    assert s["selection"]["keep"] == k and validate_manifest(result.manifest)["config"]["keep"] == k
    one_more = _pack(SelectionConfig("energy", keep=k + 1), codec)
    assert one_more.summary["payload_bytes"] > budget
    # the payload found by the search is the one a plain run makes
    same = _pack(SelectionConfig("energy", keep=k), codec)
    assert same.payload == result.payload and same.kept.equals(result.kept)


def test_a_budget_keeps_at_most_max_kept():
    """The validated winner's count caps the search: room for more images does not add any; less room still wins."""
    cfg = SelectionConfig("energy", keep=0.5)
    free = _pack(cfg, "context-rc", max_bytes=115).summary["n_kept"]
    assert free > 4
    capped = _pack(cfg, "context-rc", max_bytes=115, max_kept=free - 3)
    assert capped.summary["n_kept"] == free - 3 and capped.summary["payload_bytes"] <= 115
    assert _pack(cfg, "context-rc", max_bytes=115, max_kept=free + 50).summary["n_kept"] == free


def test_a_budget_below_the_header_names_the_problem():
    with pytest.raises(ValueError, match="max_bytes=10 is too small"):
        _pack(max_bytes=10)


def test_auto_codec_keeps_the_smallest_payload_and_uses_the_layout_when_given():
    layout = np.full(4, 150)
    auto = _pack(codec="auto", layout=layout)
    kept = auto.kept
    sizes = {name: len(encode_payload(kept["index"], kept["pred"], n_reference=N_POOL, n_classes=len(CLASSES),
                                      fingerprint=FINGERPRINT, codec=name, layout=layout, class_names=CLASSES))
             for name in CODECS}  # fmt: skip
    assert auto.summary["payload_bytes"] == min(sizes.values())
    assert auto.summary["codec"] == read_header(auto.payload)["codec"] and sizes[auto.summary["codec"]] == min(
        sizes.values()
    )
    assert auto.summary["codec_requested"] == "auto"
    without = _pack(codec="auto")
    assert without.summary["codec"] in {n for n, c in CODECS.items() if not c.needs_layout}


def test_unknown_codec_is_named():
    with pytest.raises(ValueError, match="unknown codec 'gzip'"):
        _pack(codec="gzip")
