import numpy as np
import pandas as pd
import pytest

from plada_core.manifest import MANIFEST_SCHEMA, build_manifest, validate_manifest

META = {
    "reference_fingerprint": "ab" * 32,
    "teacher": "t",
    "selector": "energy",
    "config": {},
    "class_names": ["a", "b"],
}


def _kept():
    return pd.DataFrame(
        {
            "index": [5, 1],
            "pred": [1, 0],
            "energy": [-3.0, -2.0],
            "max_softmax": [0.9, 0.8],
            "entropy": [0.1, 0.2],
            "margin": [0.5, 0.4],
        }
    )


def _index():
    return pd.DataFrame({"index": np.arange(8), "key": [f"k{i}" for i in range(8)], "shard": ["s0"] * 4 + ["s1"] * 4})


def test_manifest_has_schema_sorted_rows_and_metadata():
    table = build_manifest(_kept(), _index(), META)
    assert table.schema.remove_metadata().equals(MANIFEST_SCHEMA)
    assert table.column("index").to_pylist() == [1, 5]
    assert table.column("key").to_pylist() == ["k1", "k5"] and table.column("shard").to_pylist() == ["s0", "s1"]
    assert validate_manifest(table)["class_names"] == ["a", "b"]


def test_manifest_rejects_indices_outside_the_pool_and_missing_metadata():
    kept = _kept().assign(index=[5, 99])
    with pytest.raises(ValueError, match="not in the reference index"):
        build_manifest(kept, _index(), META)
    with pytest.raises(ValueError, match="missing"):
        build_manifest(_kept(), _index(), {"teacher": "t"})
