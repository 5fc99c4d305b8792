"""Selection benchmark outputs: the results table (csv, parquet), the markdown report and the accuracy plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["RESULT_COLUMNS", "auto_bar", "markdown", "selector_colours", "summary_table", "write_outputs"]

RESULT_COLUMNS = [
    "pair", "selector", "keep", "seed", "student_acc", "teacher_acc", "payload_bytes", "n_kept",
    "relevant_frac", "pseudo_label_acc", "class_histogram", "energy_direction", "wall_s",
    "auto_choice", "predicted_acc", "predicted_se", "predicted_proxy_acc", "auto_trained", "auto_wall_s",
]  # fmt: skip
AUTO_MARGIN_PTS = 0.5  # the bar: auto's mean over keeps <= 10 % within this of the best fixed selector's
RANDOM_FLOOR_PTS = 1.0  # ... and at no keep <= 10 % more than this below random


def markdown(frame: pd.DataFrame, index: bool = True) -> str:
    """A GitHub markdown table (pandas' ``to_markdown`` needs ``tabulate``, which is not a dependency)."""
    frame = frame.reset_index() if index else frame
    cells = [[str(c) for c in frame.columns]] + [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(r) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("---" for _ in frame.columns) + "|")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return "–" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def _mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    return f"{values.mean():.4f}" if len(values) == 1 else f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def summary_table(df: pd.DataFrame, max_keep: float = 0.1) -> pd.DataFrame:
    """Per pair and selector: mean student accuracy over seeds, averaged over the keeps ≤ ``max_keep``, and its
    lead over random and over energy (+ Safety-Net)."""
    small = df[df["keep"] <= max_keep]
    per_keep = small.groupby(["pair", "selector", "keep"])["student_acc"].mean().reset_index()
    avg = per_keep.groupby(["pair", "selector"])["student_acc"].mean().rename("mean_acc").reset_index()
    out = []
    for pair, group in avg.groupby("pair"):
        ref = group.set_index("selector")["mean_acc"]
        pk = per_keep[per_keep["pair"] == pair].pivot(index="keep", columns="selector", values="student_acc")
        for _, row in group.iterrows():
            entry = {"pair": pair, "selector": row["selector"], "mean_acc_keep<=10%": round(row["mean_acc"], 4)}
            for base in ("random", "energy"):
                if base in ref:
                    entry[f"vs_{base}_pts"] = round(100 * (row["mean_acc"] - ref[base]), 2)
            if "random" in pk:
                entry["worst_vs_random_pts"] = round(100 * float((pk[row["selector"]] - pk["random"]).min()), 2)
            out.append(entry)
    return pd.DataFrame(out)


def auto_bar(df: pd.DataFrame, max_keep: float = 0.1) -> pd.DataFrame:
    """Per pair with ``auto`` rows, the bar over keeps ≤ ``max_keep`` (means over seeds): auto's mean against the
    best fixed selector's mean (``auto`` itself and ``auto_energy``, which is energy or its opposite, excluded
    from "fixed"), the standard error of that difference paired over the (keep, seed) runs both have (how far
    the seeds alone move it; NaN under two pairs), its worst gap to random at one keep, the predicted-minus-measured
    error, and pass/fail."""
    small = df[df["keep"] <= max_keep]
    rows = []
    for pair, group in small.groupby("pair"):
        if "auto" not in set(group["selector"]):
            continue
        runs = group.pivot_table(index=["keep", "seed"], columns="selector", values="student_acc")
        per_keep = runs.groupby(level="keep").mean().dropna(subset=["auto"])  # keeps where auto ran
        mean = per_keep.mean()
        fixed = mean.drop([c for c in ("auto", "auto_energy") if c in mean.index]).dropna()
        if fixed.empty:  # auto rows alone (a re-run of auto): nothing to hold them against here
            continue
        best = fixed.idxmax()
        auto = group[group["selector"] == "auto"]
        row = {"pair": pair, "keeps": len(per_keep), "seeds": int(auto["seed"].nunique()),
               "auto_mean": round(float(mean["auto"]), 4), "best_fixed": best,
               "best_fixed_mean": round(float(fixed[best]), 4),
               "auto_vs_best_pts": round(100 * float(mean["auto"] - fixed[best]), 2)}  # fmt: skip
        paired = (runs["auto"] - runs[best]).dropna()  # the runs where auto ran
        row["auto_vs_best_se_pts"] = round(100 * float(paired.std(ddof=1) / np.sqrt(len(paired))), 2)
        if "random" in per_keep:
            row["worst_vs_random_pts"] = round(100 * float((per_keep["auto"] - per_keep["random"]).min()), 2)
        if "predicted_acc" in auto:
            row["predicted_minus_measured_pts"] = round(100 * float((auto["predicted_acc"] - auto["student_acc"]).mean()), 2)
        row["chosen"] = ", ".join(f"{k} x{v}" for k, v in auto["auto_choice"].value_counts().items())
        row["passes"] = bool(row["auto_vs_best_pts"] >= -AUTO_MARGIN_PTS
                             and row.get("worst_vs_random_pts", 0.0) >= -RANDOM_FLOOR_PTS)  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def write_outputs(df: pd.DataFrame, infos: dict, out: Path) -> None:
    """``selection.csv`` and ``selection.parquet`` (one row per run), ``selection.md`` and ``selection.png``."""
    out.mkdir(parents=True, exist_ok=True)
    df = df.reindex(columns=RESULT_COLUMNS).sort_values(["pair", "selector", "keep", "seed"], ignore_index=True)
    df.to_csv(out / "selection.csv", index=False)
    df.to_parquet(out / "selection.parquet", index=False)
    lines = ["# Selection benchmark", "", "Student accuracy on the target test split, mean ± std over seeds "
             "(one teacher per pair; `random` has no Safety-Net, every other selector has it, alpha 0.5).", ""]  # fmt: skip
    for pair, group in df.groupby("pair"):
        info = infos.get(pair, {})
        lines += [f"## Pair {pair}", "", f"teacher_acc {group['teacher_acc'].iloc[0]:.4f}; student recipe on the full target train data "
                  f"{info.get('full_data_acc')}; pool {info.get('n_pool')}; relevance AUROC {info.get('auroc')}; "
                  f"prepare {info.get('prepare_s')} s", ""]  # fmt: skip
        acc = group.groupby(["selector", "keep"])["student_acc"].apply(_mean_std).unstack("keep")
        lines += [markdown(acc), ""]
        diag = group.groupby(["selector", "keep"]).agg(
            payload_bytes=("payload_bytes", "mean"), relevant_frac=("relevant_frac", "mean"),
            pseudo_label_acc=("pseudo_label_acc", "mean"), seeds=("seed", "nunique"),
        )  # fmt: skip
        lines += ["Diagnostics (means over seeds):", "", markdown(diag.round(4)), ""]
    lines += ["## Average over keeps ≤ 10 %", "", markdown(summary_table(df), index=False), ""]
    bar = auto_bar(df)
    if not bar.empty:
        lines += ["## The auto bar (keeps ≤ 10 %)", "", f"`auto` passes when its mean is within {AUTO_MARGIN_PTS} "
                  f"point of the best fixed selector's and it is never more than {RANDOM_FLOOR_PTS} point below "
                  "random at one keep.", "", markdown(bar, index=False), ""]  # fmt: skip
    (out / "selection.md").write_text("\n".join(lines))
    _plot(df, infos, out / "selection.png")


def selector_colours(selectors) -> dict[str, tuple]:
    """One colour per selector, the same in every panel: tab10 by sorted name (tab20 beyond ten)."""
    import matplotlib

    names = sorted(set(selectors))
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _plot(df: pd.DataFrame, infos: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    pairs = sorted(df["pair"].unique())
    colours = selector_colours(df["selector"].unique())
    ncols = min(3, len(pairs))  # rows of three keep the panels legible where the README shows the figure
    nrows = -(-len(pairs) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 4.5 * nrows), squeeze=False)
    for ax in axes.flat[len(pairs) :]:
        ax.set_visible(False)
    for ax, pair in zip(axes.flat, pairs):
        group = df[df["pair"] == pair]
        for selector, g in group.groupby("selector"):
            m = g.groupby("keep").agg(x=("payload_bytes", "mean"), y=("student_acc", "mean"), e=("student_acc", "std"))
            ax.errorbar(m["x"], m["y"], yerr=m["e"].fillna(0), marker="o", capsize=3, label=selector,
                        color=colours[selector])  # fmt: skip
        ax.axhline(group["teacher_acc"].iloc[0], color="k", ls="--", lw=1, label="teacher")
        full = infos.get(pair, {}).get("full_data_acc")
        if full is not None:
            ax.axhline(full, color="grey", ls=":", lw=1.5, label="student recipe on the full target train data")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels collide on short ranges
        ax.set(title=f"pair {pair}", xlabel="payload bytes (paper codec)", ylabel="student accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
