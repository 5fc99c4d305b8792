"""Automatic selector choice: the candidate grid, ranking and tie-breaks with a fake evaluate, the predicted
accuracy's uncertainty, and the proxy student on tiny tensors."""

import json
import math
from statistics import NormalDist

import numpy as np
import pytest
import torch
from torch import nn

from plada_core import proxy
from plada_core.auto_selection import (
    Candidate,
    CandidateResult,
    candidate_grid,
    choose,
    required_columns,
    standard_error,
    wilson_interval,
)
from plada_core.proxy import proxy_student_score
from plada_core.relevance import RELEVANCE_COLUMNS
from plada_core.scoring import SCORE_COLUMNS
from plada_core.selection import SELECTORS, SelectionConfig
from plada_core.training import TrainConfig

FULL = SCORE_COLUMNS + RELEVANCE_COLUMNS
# The registry as these counts were written against; selectors registered since join the full grid (checked below).
FIRST = ["energy", "opposite_energy", "entropy", "random", "knn", "knn_agree", "knn_cover", "knn_sample", "auto_energy"]
BASE = SelectionConfig("energy", keep=500, safety_net=True, alpha=0.5, seed=3)


def test_required_columns_are_read_from_the_selectors():
    assert required_columns("random") == frozenset()
    assert required_columns("energy") == required_columns("opposite_energy") == {"energy"}
    assert required_columns("knn_sample") == {"knn_sim", "margin", "knn_nn"}
    from plada_core.pruning import PRUNING_COLUMNS

    assert all(required_columns(s) <= set(FULL) | set(PRUNING_COLUMNS) for s in SELECTORS)


def test_full_grid_has_every_selector_off_and_on_with_the_alpha_grid():
    grid = candidate_grid(FULL, BASE, selectors=FIRST)
    names = [c.name for c in grid]
    assert len(grid) == 32 and len(set(names)) == 32
    fixed = ["random", "energy", "opposite_energy", "entropy", "knn", "knn_agree", "knn_cover", "knn_sample"]
    assert names[:8] == fixed
    assert names[8:11] == ["random+sn(0.5)", "random+sn(0)", "random+sn(1)"]
    assert "knn_sample+sn(0.5)" in names and "auto_energy" not in names  # auto_energy is energy or opposite_energy
    assert [c.simplicity for c in grid] == [0] + [1] * 31  # the random baseline, then every other recipe
    sn = {c.name: c.config for c in grid if c.config.safety_net}
    assert sn["knn_cover+sn(0)"] == SelectionConfig("knn_cover", keep=500, safety_net=True, alpha=0.0, seed=3)
    assert all(c.config.keep == 500 and c.config.seed == 3 for c in grid)
    assert not any(c.config.safety_net for c in grid[:8])
    usable = [s for s in SELECTORS if s != "auto_energy" and required_columns(s) <= set(FULL)]
    everything = candidate_grid(FULL, BASE)
    assert len(everything) == 4 * len(usable) and {c.config.selector for c in everything} == set(usable)


def test_grid_follows_the_available_columns():
    paper = candidate_grid(SCORE_COLUMNS, BASE, selectors=FIRST)
    assert len(paper) == 16 and {c.config.selector for c in paper} == {"random", "energy", "opposite_energy", "entropy"}
    no_pred = candidate_grid(["energy"], BASE, selectors=FIRST)
    assert [c.name for c in no_pred] == ["random", "energy", "opposite_energy"]  # Safety-Net needs "pred"
    assert len(candidate_grid(FULL, BASE, alphas=(), selectors=FIRST)) == 16
    assert len(candidate_grid(FULL, BASE, skip=(), selectors=FIRST)) == 36
    base = SelectionConfig("energy", alpha=0.25)
    custom = candidate_grid(FULL, base, alphas=(0.0, 0.25), selectors=["knn", "random"])
    assert [c.name for c in custom] == ["random", "knn", "random+sn(0.25)", "random+sn(0)", "knn+sn(0.25)", "knn+sn(0)"]


def _fake(accuracies: dict[str, float], n_val: int = 1000, calls: list | None = None, nll: dict | None = None):
    def evaluate(c: Candidate) -> CandidateResult:
        if calls is not None:
            calls.append(c.name)
        val_nll = (nll or {}).get(c.name, math.nan)
        return CandidateResult(accuracies[c.name], n_val, n_kept=500, payload_bytes=700 + len(c.name), wall_s=0.5,
                               val_nll=val_nll)  # fmt: skip

    return evaluate


def _grid(names):
    full = {c.name: c for c in candidate_grid(FULL, BASE)}
    return [full[n] for n in names]


def test_best_accuracy_wins_and_the_table_is_ranked():
    grid = _grid(["random", "energy", "energy+sn(0.5)", "knn_sample+sn(1)"])
    acc = {"random": 0.70, "energy": 0.66, "energy+sn(0.5)": 0.68, "knn_sample+sn(1)": 0.74}
    calls = []
    choice = choose(grid, _fake(acc, calls=calls))
    assert calls == [c.name for c in grid]  # each evaluated once, in order
    assert choice.winner.name == "knn_sample+sn(1)" and choice.result.val_acc == 0.74
    assert [r["candidate"] for r in choice.table] == ["knn_sample+sn(1)", "random", "energy+sn(0.5)", "energy"]
    top = choice.table[0]
    assert top["chosen"] and not any(r["chosen"] for r in choice.table[1:])
    assert (top["selector"], top["safety_net"], top["alpha"]) == ("knn_sample", True, 1.0)
    assert choice.table[1]["alpha"] is None  # no Safety-Net, no alpha
    assert top["val_acc_se"] == pytest.approx(math.sqrt(0.74 * 0.26 / 1000))
    assert {"n_kept", "payload_bytes", "wall_s", "n_val"} <= set(top)
    summary = choice.summary()
    assert summary["winner"] == "knn_sample+sn(1)" and summary["config"]["alpha"] == 1.0
    assert summary["candidates"] == choice.table and summary["predicted_accuracy"]["value"] == 0.74
    json.dumps(summary)


def test_exact_tie_goes_to_random_then_to_the_earlier_candidate():
    grid = _grid(["knn+sn(0.5)", "knn", "random"])
    choice = choose(grid, _fake({"knn+sn(0.5)": 0.7, "knn": 0.7, "random": 0.7}), tie_tolerance=0)
    assert choice.winner.name == "random"
    choice = choose(grid, _fake({"knn+sn(0.5)": 0.7, "knn": 0.7, "random": 0.6}), tie_tolerance=0)
    assert choice.winner.name == "knn+sn(0.5)"  # the Safety-Net is not ranked more complex: the earlier one
    grid = _grid(["entropy", "energy"])
    assert choose(grid, _fake({"entropy": 0.7, "energy": 0.7})).winner.name == "entropy"
    assert [c.name for c in candidate_grid(FULL, BASE, selectors=["knn", "random"])][:2] == ["random", "knn"]


def test_the_validation_nll_is_recorded_not_ranked_on():
    grid = _grid(["knn", "knn_cover", "random"])
    acc = {"knn": 0.9, "knn_cover": 0.9, "random": 0.5}
    choice = choose(grid, _fake(acc, nll={"knn": 0.40, "knn_cover": 0.31}), tie_tolerance=0)
    assert choice.winner.name == "knn"  # the earlier of equal accuracies, whatever their NLL (measured: no gain)
    assert [(r["candidate"], r["val_nll"]) for r in choice.table] == [("knn", 0.40), ("knn_cover", 0.31),
                                                                      ("random", None)]  # fmt: skip
    with pytest.raises(ValueError, match="val_nll"):
        CandidateResult(0.5, 10, 1, 1, 0.0, val_nll=-0.1)


def test_inside_the_tie_the_best_candidate_wins_unless_random_is_tied():
    grid = _grid(["random", "knn", "knn_cover", "knn_cover+sn(0.5)"])
    # 100 validation images at ~0.9: SE 3 points; every non-random candidate is within it of the best
    acc = {"random": 0.70, "knn": 0.90, "knn_cover": 0.91, "knn_cover+sn(0.5)": 0.93}
    choice = choose(grid, _fake(acc, n_val=100))
    assert choice.winner.name == "knn_cover+sn(0.5)"  # not the first registered (knn), not the plain one
    assert choice.predicted.runner_up_gap == pytest.approx(0.02)
    acc["random"] = 0.91  # now random is inside the noise of the best: the baseline stands
    assert choose(grid, _fake(acc, n_val=100)).winner.name == "random"


def test_default_tolerance_is_one_standard_error_of_the_best_at_least_one_image():
    grid = _grid(["random", "knn_cover"])
    one_image_better = {"random": 0.700, "knn_cover": 0.701}  # n_val = 1000: SE 1.45 points
    choice = choose(grid, _fake(one_image_better))
    assert choice.tie_tolerance == pytest.approx(math.sqrt(0.701 * 0.299 / 1000))
    assert choice.winner.name == "random"
    assert choice.predicted.runner_up_gap == pytest.approx(-0.001)
    assert choose(grid, _fake(one_image_better), tie_tolerance=0).winner.name == "knn_cover"
    assert choose(grid, _fake(one_image_better), tie_se=0).tie_tolerance == pytest.approx(1 / 1000)
    assert choose(grid, _fake({"random": 0.6, "knn_cover": 1.0})).tie_tolerance == pytest.approx(1 / 1000)


def test_a_small_validation_split_keeps_random_unless_a_candidate_is_clearly_better():
    grid = _grid(["random", "knn_cover", "entropy+sn(0.5)"])
    # 100 validation images: SE ~4.5 points; 4 points ahead of random is within the noise, 11 is not
    close = {"random": 0.67, "knn_cover": 0.69, "entropy+sn(0.5)": 0.71}
    assert choose(grid, _fake(close, n_val=100)).winner.name == "random"
    assert choose(grid, _fake(close, n_val=100), tie_se=0).winner.name == "entropy+sn(0.5)"
    clear = {"random": 0.60, "knn_cover": 0.69, "entropy+sn(0.5)": 0.71}
    assert choose(grid, _fake(clear, n_val=100)).winner.name == "entropy+sn(0.5)"  # random is out: the best
    assert choose(grid, _fake(close, n_val=5000)).winner.name == "entropy+sn(0.5)"  # SE 0.64: resolved
    with pytest.raises(ValueError, match="tie_se"):
        choose(grid, _fake(close), tie_se=-1)


def test_predicted_accuracy_uncertainty():
    grid = candidate_grid(SCORE_COLUMNS, BASE, selectors=FIRST)  # 16 candidates
    acc = {c.name: 0.60 + 0.001 * i for i, c in enumerate(grid)}
    acc["energy+sn(1)"] = 0.70
    choice = choose(grid, _fake(acc, n_val=5000), refine_top=None)
    p = choice.predicted
    assert choice.winner.name == "energy+sn(1)" and p.value == 0.70 and p.n_val == 5000 and p.n_candidates == 16
    assert p.se == pytest.approx(math.sqrt(0.7 * 0.3 / 5000)) == pytest.approx(standard_error(0.7, 5000))
    # Wilson bounds are the roots of (p_hat - p)^2 = z^2 p (1 - p) / n
    z, n = 1.959963984540054, 5000
    a, b, c = 1 + z * z / n, -(2 * 0.7 + z * z / n), 0.7**2
    roots = sorted(np.roots([a, b, c]).real)
    assert p.ci95 == pytest.approx(tuple(roots), abs=1e-12)
    assert p.ci95[0] < 0.7 < p.ci95[1] and p.ci95[1] - p.ci95[0] == pytest.approx(2 * z * p.se, rel=0.01)
    assert p.optimism_bound == pytest.approx(p.se * 1.769, rel=1e-3)  # E[max of 16 standard normals], Blom
    assert p.runner_up_gap == pytest.approx(0.70 - max(v for k, v in acc.items() if k != "energy+sn(1)"))
    assert "winner's curse" in p.note and p.as_dict()["ci95"] == list(p.ci95)


def test_wilson_interval_stays_inside_zero_one():
    assert wilson_interval(0.0, 50)[0] == 0.0 and wilson_interval(0.0, 50)[1] > 0
    assert wilson_interval(1.0, 50)[1] == 1.0 and wilson_interval(1.0, 50)[0] < 1


def test_a_perfect_validation_score_still_carries_a_winners_curse_bound():
    grid = _grid(["random", "energy"])
    p = choose(grid, _fake({"random": 0.9, "energy": 1.0}, n_val=90), tie_se=0).predicted
    assert p.value == 1.0 and p.se == 0.0 and p.ci95[0] < 0.97
    half_width_se = (p.ci95[1] - p.ci95[0]) / (2 * 1.959963984540054)
    e_max_2 = NormalDist().inv_cdf((2 - 0.375) / (2 + 0.25))  # E[max of 2 standard normals], Blom
    assert p.optimism_bound == pytest.approx(half_width_se * e_max_2, rel=1e-9) and p.optimism_bound > 0.005
    again = p.at_recipe_epochs(1.0, 30)
    assert again.optimism_bound == pytest.approx(p.optimism_bound) and again.proxy_value == 1.0


def test_a_single_candidate_has_no_optimism():
    choice = choose(_grid(["random"]), _fake({"random": 0.5}))
    assert choice.predicted.optimism_bound == 0.0 and choice.predicted.runner_up_gap == 0.0


def test_choose_is_deterministic():
    grid = candidate_grid(FULL, BASE)
    acc = {c.name: round(0.6 + 0.1 * np.sin(i), 3) for i, c in enumerate(grid)}
    assert choose(grid, _fake(acc)).table == choose(grid, _fake(acc)).table


def test_choose_errors():
    with pytest.raises(ValueError, match="no candidates"):
        choose([], _fake({}))
    with pytest.raises(ValueError, match="unique"):
        choose(_grid(["random", "random"]), _fake({"random": 0.5}))
    with pytest.raises(ValueError, match="tie_tolerance"):
        choose(_grid(["random"]), _fake({"random": 0.5}), tie_tolerance=-0.1)
    with pytest.raises(ValueError, match="val_acc"):
        CandidateResult(1.5, 10, 1, 1, 0.0)


# --- proxy student ---------------------------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    """Tiny models train 10x slower when two torch threads fight other processes for two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _bars(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 one-channel images: class 0 a bright top half, class 1 a bright bottom half, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    x = torch.rand(n, 1, 8, 8, generator=gen) * 0.3
    x[y == 0, :, :4] += 0.7
    x[y == 1, :, 4:] += 0.7
    return x, y


def test_proxy_student_learns_and_is_deterministic(one_thread):
    x, y = _bars(128, seed=0)
    xv, yv = _bars(64, seed=1)
    cfg = TrainConfig(model="plada_cnn", batch_size=32, shift=0.0, device="cpu", seed=0)
    score = proxy_student_score(x, y, xv, yv, cfg, epochs=3, n_classes=2)
    assert score.accuracy >= 0.9
    assert 0 < score.nll < math.log(2)  # better than a uniform guess over the two classes
    assert proxy_student_score(x, y, xv, yv, cfg, epochs=3, n_classes=2) == score


def test_proxy_score_of_logits():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    y = torch.tensor([0, 1, 1])
    score = proxy.ProxyScore.of_logits(logits, y)
    assert score.accuracy == pytest.approx(2 / 3)
    expected = -np.mean([math.log(math.exp(2) / (math.exp(2) + 1)), math.log(math.e / (math.e + 1)),
                         math.log(1 / (math.exp(3) + 1))])  # fmt: skip
    assert score.nll == pytest.approx(expected)


def test_proxy_weights_start_from_the_seed_not_from_what_ran_before(monkeypatch, one_thread):
    """A candidate's score must not depend on its place in the grid."""
    x, y = _bars(64, seed=0)
    cfg = TrainConfig(model="plada_cnn", batch_size=32, shift=0.0, device="cpu", seed=0)
    made, real = [], proxy.create_model
    monkeypatch.setattr(proxy, "create_model", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    for noise in (1, 2):
        torch.manual_seed(noise)
        proxy_student_score(x, y, x, y, cfg, epochs=1, n_classes=2)
    first, second = (m.state_dict() for m in made)
    assert all(torch.equal(first[k], second[k]) for k in first)


class _FrozenLinear(nn.Module):
    """A stand-in for FrozenEffNetLite0: fixed features, trainable head."""

    frozen_backbone = True

    def __init__(self, num_classes: int, in_chans: int) -> None:
        super().__init__()
        self.head = nn.Linear(4, num_classes)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)


def test_proxy_student_trains_only_the_head_on_features(monkeypatch, one_thread):
    made = []

    def fake_create_model(name, num_classes, in_chans):
        made.append((name, num_classes, in_chans))
        return _FrozenLinear(num_classes, in_chans)

    monkeypatch.setattr(proxy, "create_model", fake_create_model)
    gen = torch.Generator().manual_seed(0)
    centres = torch.eye(3, 4) * 3
    y, yv = torch.randint(0, 3, (90,), generator=gen), torch.randint(0, 3, (60,), generator=gen)
    feats = centres[y] + 0.3 * torch.randn(90, 4, generator=gen)
    feats_val = centres[yv] + 0.3 * torch.randn(60, 4, generator=gen)
    cfg = TrainConfig(model="plada_effnet_lite0", batch_size=16, lr=0.05, device="cpu")
    assert proxy_student_score(feats, y, feats_val, yv, cfg, epochs=5, n_classes=3).accuracy >= 0.95
    assert made == [("plada_effnet_lite0", 3, 3)]


def test_proxy_student_rejects_features_for_a_trainable_backbone():
    cfg = TrainConfig(model="plada_cnn", device="cpu")
    with pytest.raises(ValueError, match="trains its backbone"):
        proxy_student_score(torch.zeros(4, 8), torch.zeros(4, dtype=torch.long), torch.zeros(2, 8),
                               torch.zeros(2, dtype=torch.long), cfg, epochs=1, n_classes=2)  # fmt: skip
    with pytest.raises(ValueError, match="differ in shape"):
        proxy_student_score(torch.zeros(4, 8), torch.zeros(4, dtype=torch.long), torch.zeros(2, 9),
                               torch.zeros(2, dtype=torch.long), cfg, epochs=1, n_classes=2)  # fmt: skip


def test_staged_search_refines_alpha_only_for_the_best_safety_net_selectors():
    grid = candidate_grid(SCORE_COLUMNS, BASE, selectors=FIRST)  # 4 selectors: 4 plain, 4 x (0.5, 0, 1) with SN
    acc = {c.name: 0.5 for c in grid}
    acc.update({"entropy+sn(0.5)": 0.8, "energy+sn(0.5)": 0.7, "random+sn(0.5)": 0.6, "energy+sn(0)": 0.9,
                "opposite_energy+sn(1)": 0.99})  # the last is never trained: its base ranks last
    calls = []
    choice = choose(grid, _fake(acc, calls=calls), refine_top=2)
    assert choice.winner.name == "energy+sn(0)"
    refined = {n for n in calls if n.endswith(("sn(0)", "sn(1)"))}
    assert refined == {"entropy+sn(0)", "entropy+sn(1)", "energy+sn(0)", "energy+sn(1)"}
    assert len(calls) == 8 + 4 == len(choice.table) and len(calls) == len(set(calls))
    assert set(choice.skipped) == {c.name for c in grid} - set(calls)
    assert "opposite_energy+sn(1)" in choice.summary()["not_evaluated"]
    assert choice.predicted.n_candidates == 12
