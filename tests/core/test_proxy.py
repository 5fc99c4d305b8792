"""The publisher's measured choice, composed: leaked images dropped without shrinking the budget, every candidate
packed, the union of their images loaded once, one proxy student each, the best one chosen."""

import numpy as np
import pandas as pd
import pytest
import torch

from plada_core.auto_selection import Candidate, candidate_grid
from plada_core.proxy import (
    AutoConfig,
    evaluate_candidates,
    proxy_epochs,
    proxy_student_score,
    without_pool_images,
)
from plada_core.selection import AUTO_SELECTOR, SelectionConfig, get_selector, select
from plada_core.training import TrainConfig


def _scores(n=40, n_classes=2):
    rng = np.random.default_rng(0)
    return pd.DataFrame({"index": np.arange(100, 100 + n), "energy": rng.normal(size=n).astype(np.float32),
                         "pred": (np.arange(n) % n_classes).astype(np.int32)})  # fmt: skip


def test_nothing_to_drop_leaves_scores_and_config_alone():
    scores, cfg = _scores(), SelectionConfig(selector="energy", keep=0.25)
    same, same_cfg = without_pool_images(scores, np.array([], np.int64), cfg)
    assert same is scores and same_cfg is cfg


def test_dropped_images_are_never_kept_and_the_budget_stays_that_of_the_full_pool():
    scores, cfg = _scores(), SelectionConfig(selector="energy", keep=0.25, safety_net=False)
    best = scores["index"].to_numpy()[select({"energy": scores["energy"].to_numpy()}, 2, cfg)]
    remaining, fixed = without_pool_images(scores, best[:3], cfg)
    assert fixed.keep == 10 and len(remaining) == 37  # 0.25 of the 40 scored images, as a count
    kept = remaining["index"].to_numpy()[select({"energy": remaining["energy"].to_numpy()}, 2, fixed)]
    assert len(kept) == 10 and not set(kept) & set(best[:3])
    assert set(best[3:]) <= set(kept)  # the others keep their places


def test_a_count_larger_than_what_remains_is_capped():
    scores = _scores(n=10)
    remaining, cfg = without_pool_images(scores, np.arange(100, 105), SelectionConfig(selector="energy", keep=8))
    assert len(remaining) == 5 and cfg.keep == 5


def test_auto_is_a_valid_choice_but_not_a_priority_function():
    assert SelectionConfig(selector=AUTO_SELECTOR).selector == "auto"
    with pytest.raises(ValueError, match="chosen by measurement"):
        get_selector(AUTO_SELECTOR)


def test_union_is_loaded_once_and_each_candidate_trains_on_its_own_rows():
    scores = _scores()
    candidates = candidate_grid(["energy", "pred"], SelectionConfig(selector=AUTO_SELECTOR, keep=8), alphas=())
    loads, seen = [], {}

    def pack(cfg):
        kept = scores["index"].to_numpy()[select({c: scores[c].to_numpy() for c in scores}, 2, cfg)]
        return kept, 100 + len(kept)

    def load(union):
        loads.append(union.copy())
        present = union[union != union[0]]  # one image cannot be read: left out, not fatal
        x = torch.zeros(len(present), 1, 4, 4)
        x[:, 0, 0, 0] = torch.from_numpy(present % 2 * 2 - 1).float()  # the label is readable from pixel (0, 0)
        return present, x

    x_val = torch.zeros(20, 1, 4, 4)
    y_val = torch.arange(20) % 2
    x_val[:, 0, 0, 0] = (y_val * 2 - 1).float()
    train = TrainConfig(model="plada_cnn", batch_size=8, lr=1e-2, shift=0.0, device="cpu")
    choice = evaluate_candidates(candidates, scores, pack, load, x_val, y_val, train, 2, 2, progress=seen.setdefault)
    assert len(loads) == 1 and len(set(loads[0])) == len(loads[0])
    assert {r["candidate"] for r in choice.table} == {c.name for c in candidates}
    assert all(r["n_kept"] == 8 and r["payload_bytes"] == 108 and r["n_val"] == 20 for r in choice.table)
    assert choice.predicted.value == max(r["val_acc"] for r in choice.table)
    assert all(r["val_nll"] > 0 for r in choice.table)  # recorded for every trained proxy
    assert seen  # progress was reported
    # one batch per epoch: the 200-step floor asks for 200 epochs, the recipe's 30 cap it
    assert {r["proxy_epochs"] for r in choice.table} == {train.epochs} == {30}
    plain = evaluate_candidates(candidates[:1], scores, pack, load, x_val, y_val, train, 2, 2, min_steps=0)
    assert plain.table[0]["proxy_epochs"] == 2


def test_the_prediction_is_the_winner_trained_for_the_recipes_epochs_and_the_proxys_score_is_kept():
    scores = _scores()
    candidates = candidate_grid(["energy", "pred"], SelectionConfig(selector=AUTO_SELECTOR, keep=8), alphas=())

    def pack(cfg):
        return scores["index"].to_numpy()[select({c: scores[c].to_numpy() for c in scores}, 2, cfg)], 50

    def load(union):  # labels readable from pixel (0, 0), weakly: more epochs fit them better
        x = torch.randn(len(union), 1, 4, 4, generator=torch.Generator().manual_seed(0))
        x[:, 0, 0, 0] += torch.from_numpy(union % 2 * 2 - 1).float() * 0.5
        return union, x

    x_val = torch.randn(40, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y_val = torch.arange(40) % 2
    x_val[:, 0, 0, 0] += (y_val * 2 - 1).float() * 0.5
    train = TrainConfig(model="plada_cnn", batch_size=8, lr=1e-2, shift=0.0, device="cpu", epochs=6)
    args = (candidates, scores, pack, load, x_val, y_val, train, 2, 2)
    proxy_only = evaluate_candidates(*args, min_steps=0, predict_at_recipe=False)
    recipe = evaluate_candidates(*args, min_steps=0)

    def measured(choice):
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in choice.table]

    assert recipe.winner == proxy_only.winner and measured(recipe) == measured(proxy_only)  # the proxies choose
    assert proxy_only.predicted.epochs == 2 and proxy_only.predicted.proxy_value is None
    assert proxy_only.predicted.value == proxy_only.result.val_acc
    p = recipe.predicted
    assert p.epochs == 6 and p.proxy_value == proxy_only.predicted.value
    kept = pack(recipe.winner.config)[0]
    union, x = load(np.unique(np.concatenate([pack(c.config)[0] for c in candidates])))
    rows = torch.from_numpy(np.searchsorted(union, kept))
    labels = torch.from_numpy(scores.set_index("index").loc[kept, "pred"].to_numpy(np.int64))
    expected = proxy_student_score(x[rows], labels, x_val, y_val, train, 6, 2)
    assert p.value == expected.accuracy
    assert p.se == pytest.approx(np.sqrt(p.value * (1 - p.value) / 40)) and p.ci95[0] <= p.value <= p.ci95[1]
    assert "6 epochs" in p.note and p.as_dict()["proxy_value"] == p.proxy_value
    # a winner whose proxy already trained the recipe's epochs is not trained again
    full = evaluate_candidates(candidates, scores, pack, load, x_val, y_val, train, 6, 2, min_steps=0)
    assert full.predicted.epochs == 6 and full.predicted.proxy_value is None


def test_proxy_epochs_top_up_small_selections_to_the_step_floor_within_the_recipe():
    assert proxy_epochs(425, 64, 5, 200, 30) == 29  # 7 batches an epoch: 35 steps in 5 epochs
    assert proxy_epochs(8500, 64, 5, 200, 30) == 5  # 133 batches an epoch: the floor is met already
    assert proxy_epochs(10, 64, 5, 200, 30) == 30  # one batch an epoch: capped by the student recipe
    assert proxy_epochs(10, 64, 5, 200, 3) == 5  # never fewer than asked
    assert proxy_epochs(425, 64, 5, 0, 30) == 5
    assert proxy_epochs(0, 64, 5, 200, 30) == 30


def test_a_candidate_with_no_loadable_image_scores_zero():
    scores = _scores()
    only = [Candidate("energy", SelectionConfig(selector="energy", keep=4, safety_net=False), 1)]
    choice = evaluate_candidates(
        only, scores, lambda cfg: (np.array([100, 101, 102, 103]), 50),
        lambda union: (np.empty(0, np.int64), torch.zeros(0, 1, 4, 4)),
        torch.zeros(3, 1, 4, 4), torch.zeros(3, dtype=torch.long), TrainConfig(device="cpu"), 1, 2,
    )  # fmt: skip
    assert choice.table[0]["val_acc"] == 0.0 and choice.table[0]["val_nll"] is None


@pytest.mark.parametrize("bad", [{"val_fraction": 0.0}, {"val_fraction": 0.6}, {"val_min_per_class": 0},
                                 {"proxy_epochs": 0}, {"max_hamming": 65}, {"proxy_min_steps": -1}])  # fmt: skip
def test_auto_config_bounds(bad):
    with pytest.raises(ValueError):
        AutoConfig(**bad)
