"""The payload benchmark's per-setting row on a small simulated pool: every codec, the ratios, the oracle floor."""

from __future__ import annotations

import numpy as np
import pytest

from plada_core.codecs import CODECS, layout_rc
from plada_core.payload import HEADER_SIZE
from plada_core.simulator import entropy_bound, oracle_bits, prior_bound, simulate_layout, simulate_selections


@pytest.fixture(scope="module")
def bench():
    from benchmarks import payload

    return payload


def test_simulated_row_has_every_codec_and_the_floor(bench):
    layout = simulate_layout(0, n_reference=300_000, n_blocks=500)
    sim = simulate_selections((0.01,), n_classes=50, layout=layout)[0.01]
    row = bench.measure({"indices": sim.indices, "labels": sim.labels, "n_reference": sim.n_reference,
                         "n_classes": sim.n_classes, "simulated": sim, "layout": sim.layout.sizes})
    assert set(row["bytes"]) == set(CODECS) == set(row["ratios_vs_paper"])
    assert row["ratio_vs_paper"] == min(row["ratios_vs_paper"].values()) < 1
    assert set(row["split"]) == {"context-rc", "context-rc2", "layout-rc"}
    for codec, part in row["split"].items():  # the split adds up to the body, but for the coder's last bytes
        digest = layout_rc.DIGEST_SIZE if codec == "layout-rc" else 0
        body_bits = 8 * (row["bytes"][codec] - HEADER_SIZE - digest) / row["k"]
        total = part["gap_bits_per_image"] + part["label_bits_per_image"]
        assert total == pytest.approx(body_bits, abs=48 / row["k"] + 0.002)
    oracle = row["oracle_floor"]
    assert oracle["total_bits_per_image"] == pytest.approx(oracle_bits(sim).total, abs=1e-3)
    assert oracle["bytes"] < min(row["bytes"].values())  # no codec reaches the floor
    assert oracle["entropy_bound_bits_per_image"] == pytest.approx(entropy_bound(sim), abs=1e-3)
    assert oracle["bound_ratio_vs_paper"] < oracle["best_possible_ratio_vs_paper"]
    assert oracle["prior_bound_bits_per_image"] == pytest.approx(prior_bound(sim), abs=1e-3)
    assert oracle["bound_ratio_vs_paper"] < oracle["prior_bound_ratio_vs_paper"] < row["ratio_vs_paper"]
    assert oracle["best_possible_ratio_vs_paper"] == pytest.approx(oracle["bytes"] / row["bytes"]["paper-zstd19"],
                                                                   abs=1e-4)


def test_demo_row_has_no_floor(bench):
    row = bench.measure({"indices": np.array([1, 5, 9]), "labels": np.array([0, 0, 1]), "n_reference": 10,
                         "n_classes": 2, "layout": np.array([4, 6])})
    assert "oracle_floor" not in row and row["k"] == 3
