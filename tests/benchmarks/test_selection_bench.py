"""The selection benchmark's ``--quick`` mode end to end on the tiny pair (CI), and its pure helpers."""

from __future__ import annotations

import json

import pandas as pd

from benchmarks.selection import main
from benchmarks.selection_report import RESULT_COLUMNS, _plot, auto_bar, selector_colours
from benchmarks.selection_runs import auto_recipe, selection_config
from plada_core.pairs import BENCH_PAIRS


def test_random_has_no_safety_net_and_nosn_turns_it_off():
    assert not selection_config("random", 0.1, 0).safety_net
    assert selection_config("knn", 0.1, 1).safety_net
    cfg = selection_config("knn-nosn", 0.05, 2)
    assert (cfg.selector, cfg.safety_net, cfg.keep, cfg.seed) == ("knn", False, 0.05, 2)


def test_quick_mode_writes_every_output(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    assert main(["--quick", "--work", str(work), "--out", str(out), "--threads", "1"]) == 0
    df = pd.read_csv(out / "selection.csv")
    assert set(RESULT_COLUMNS) <= set(df.columns)
    assert len(df) == 4 * 2  # 4 selectors x 2 keeps x 1 seed
    assert set(df["pair"]) == {"tiny"} and set(df["selector"]) == {"random", "energy", "knn", "auto"}
    auto = df[df["selector"] == "auto"]
    assert auto["auto_choice"].notna().all() and auto["predicted_acc"].between(0, 1).all()
    assert df.loc[df["selector"] != "auto", "auto_choice"].isna().all()
    assert (df.groupby("keep")["n_kept"].nunique() == 1).all(), "every selector keeps exactly k"
    assert df["n_kept"].tolist() == [round(k * 2000) for k in df["keep"]]
    assert df["relevant_frac"].between(0, 1).all() and df["student_acc"].between(0, 1).all()
    assert all(sum(json.loads(h)) == n for h, n in zip(df["class_histogram"], df["n_kept"]))
    assert pd.read_parquet(out / "selection.parquet").shape == df.shape
    report = (out / "selection.md").read_text()
    assert "## Pair tiny" in report and "knn" in report and "Average over keeps" in report
    assert "## The auto bar" in report
    assert (out / "selection.png").stat().st_size > 0
    full = json.loads((out / "selection-info.json").read_text())["tiny"]["full_data_acc"]
    assert 0.5 < full <= 1, "the student recipe on the full digits train split is far above chance"
    # a re-run resumes from the finished runs and gives the same table
    before = df.copy()
    assert main(["--quick", "--work", str(work), "--out", str(out), "--threads", "1"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "selection.csv"), before)
    assert main(["--pairs", "tiny", "--collect", "--work", str(work), "--out", str(tmp_path / "c")]) == 0
    assert len(pd.read_csv(tmp_path / "c" / "selection.csv")) == 8
    # an auto run finished under another choice rule is run again; the other finished runs are kept
    runs = work / "tiny" / "runs"
    stale = next(runs.glob("auto-*.json"))
    row = json.loads(stale.read_text())
    assert row["auto_recipe"] == auto_recipe()
    stale.write_text(json.dumps({**row, "auto_recipe": {**row["auto_recipe"], "choice_rule": 1}}))
    kept = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json") if p != stale}
    assert main(["--quick", "--work", str(work), "--out", str(out), "--threads", "1"]) == 0
    assert json.loads(stale.read_text())["auto_recipe"] == auto_recipe()
    assert {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json") if p != stale} == kept
    # a row from before predictions were measured at the recipe's epochs gets its prediction, not a new choice
    current = json.loads(stale.read_text())
    older = {k: v for k, v in current.items() if k != "predicted_proxy_acc"}
    older["auto_recipe"] = {k: v for k, v in current["auto_recipe"].items() if k != "predict_at_recipe"}
    older["predicted_acc"], older["auto_wall_s"] = current["predicted_proxy_acc"], -1.0  # -1: not chosen again
    stale.write_text(json.dumps(older))
    assert main(["--quick", "--work", str(work), "--out", str(out), "--threads", "1"]) == 0
    updated = json.loads(stale.read_text())
    assert updated["auto_wall_s"] == -1.0 and updated["auto_recipe"] == auto_recipe()
    assert updated["predicted_acc"] == current["predicted_acc"]  # what a fresh choice predicted (CPU: exact)
    assert updated["predicted_proxy_acc"] == current["predicted_proxy_acc"]


def test_the_auto_bar_skips_a_table_of_auto_rows_alone():
    rows = pd.DataFrame({"pair": "p", "selector": "auto", "keep": [0.01, 0.05], "seed": 0, "student_acc": 0.5,
                         "auto_choice": "random", "predicted_acc": 0.5})  # fmt: skip
    assert auto_bar(rows).empty
    fixed = pd.concat([rows, rows.assign(selector="random", student_acc=0.4)], ignore_index=True)
    assert auto_bar(fixed)["auto_vs_best_pts"].tolist() == [10.0]


def test_the_auto_bar_gives_the_paired_standard_error_of_auto_against_the_best_fixed_selector():
    # auto - knn over (keep, seed): +2, 0, +1, -1 points -> mean +0.5, SE = std(ddof 1) / 2 = 1.291 / 2
    keys = pd.DataFrame({"pair": "p", "keep": [0.01, 0.01, 0.05, 0.05], "seed": [0, 1, 0, 1]})
    knn = keys.assign(selector="knn", student_acc=[0.50, 0.60, 0.70, 0.80])
    auto = keys.assign(selector="auto", student_acc=[0.52, 0.60, 0.71, 0.79], auto_choice="knn", predicted_acc=0.6)
    late = pd.DataFrame({"pair": "p", "selector": "knn", "keep": [0.25], "seed": [0], "student_acc": [0.9]})
    bar = auto_bar(pd.concat([knn, auto, late], ignore_index=True)).iloc[0]
    assert bar["best_fixed"] == "knn" and bar["auto_vs_best_pts"] == 0.5
    assert bar["auto_vs_best_se_pts"] == round(100 * pd.Series([0.02, 0.0, 0.01, -0.01]).std() / 2, 2) == 0.65


def test_the_pruning_columns_mode_measures_density_ratio_and_reliable(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    args = ["--pairs", "tiny", "--selectors", "density_ratio", "reliable", "--keeps", "0.05", "--seeds", "0",
            "--work", str(work), "--out", str(out), "--threads", "1"]  # fmt: skip
    assert main(args) == 0  # without the columns both selectors are skipped, saying why
    assert not (out / "selection.csv").exists()
    assert main([*args, "--pruning-columns"]) == 0
    df = pd.read_csv(out / "selection.csv")
    assert set(df["selector"]) == {"density_ratio", "reliable"} and (df["n_kept"] == 100).all()
    assert (work / "tiny" / "runs-pruning").is_dir() and (work / "tiny" / "pruning" / "density_ratio.npz").exists()
    auroc = json.loads((out / "selection-info.json").read_text())["tiny"]["auroc"]
    assert {"density_ratio", "label_stable"} <= set(auroc)


def test_selector_colours_are_the_same_in_every_panel():
    one = selector_colours(["random", "knn_cover"])
    both = selector_colours(["knn_cover", "random", "random"])
    assert one == both and len(set(one.values())) == 2


def test_student_input_is_the_teachers_unless_the_pair_says_otherwise():
    assert BENCH_PAIRS["C64"].student_input == BENCH_PAIRS["C64"].preprocess
    c_cnn = BENCH_PAIRS["C-cnn"]
    assert (c_cnn.preprocess.image_size, c_cnn.student_input.image_size) == (32, 64)
    assert c_cnn.student_input.channels == c_cnn.preprocess.channels == 3


def test_plot_puts_at_most_three_pairs_in_a_row(tmp_path):
    from PIL import Image

    rows = [{"pair": p, "selector": s, "keep": k, "seed": 0, "student_acc": 0.5, "teacher_acc": 0.6,
             "payload_bytes": 1000 * k} for p in "ABCD" for s in ("random", "energy") for k in (1, 2)]  # fmt: skip
    _plot(pd.DataFrame(rows), {}, tmp_path / "four.png")
    _plot(pd.DataFrame([r for r in rows if r["pair"] == "A"]), {}, tmp_path / "one.png")
    four, one = Image.open(tmp_path / "four.png").size, Image.open(tmp_path / "one.png").size
    assert four[0] == 3 * one[0] and four[1] == 2 * one[1]
