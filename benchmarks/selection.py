"""Selection benchmark: selectors × keep fractions × seeds on real (target, reference pool) pairs.

For every pair there is one pool, one teacher (seed 0) and one scoring pass, all made by the project's own task
bodies (``build_reference_pool``, ``train_teacher`` + target bank, ``score_shard``). Every run then selects with
``plada_core.selection.select``, encodes the payload with ``encode_payload``, decodes it again (so what the student
sees is what travels) and trains the same student recipe (``fit_classifier``) on the pseudo-labelled pool images,
evaluated on the target test split. ``random`` is uniform without the Safety-Net (as ``plada run``'s baseline);
every other selector runs with the Safety-Net (alpha 0.5) unless its name ends in ``-nosn``.

Pairs:
  A      target sklearn digits (8 px, content crop); pool mnist5k + animal-mnist + fashion-mnist (85 k); plada_cnn.
  B      target fashion-mnist, 100 labels per class (8 px... see PAIRS); pool = the rest of fashion-mnist train
         (unlabelled) + animal-mnist + mnist5k.
  C      target cifar10; pool tiny-imagenet (32 px, frozen EfficientNet-Lite0 + linear head).
  C64    pair C at 64 px (images upsampled): the frozen backbone sees more than a 1x1 feature map, a better
         teacher for 4x the compute. Frozen-backbone students train their head on pool features computed once.
  C-cnn  pair C with a teacher trained from scratch on all 50 k CIFAR-10 train images (plada_cnn_wide, 32 px,
         20 epochs) and C64's student (frozen EfficientNet-Lite0 + linear head at 64 px).
  tiny   a 2 k pool (1 k MNIST + 1 k animal silhouettes) for ``--quick`` / CI.

Outputs under ``--out`` (default ``benchmarks/results``): ``selection.csv`` and ``selection.parquet`` (one row per
pair, selector, keep, seed), ``selection.md`` (mean ± std tables, relevance AUROCs) and ``selection.png`` (student
accuracy against payload bytes, teacher accuracy as a line). Work files (pool, teacher, scores, one JSON per
finished run, so an interrupted benchmark resumes) go under ``--work`` (default ``runs/bench``).

    .venv/bin/python benchmarks/selection.py --pairs A --keeps 0.01 0.05 0.1 --seeds 0 1 2
    .venv/bin/python benchmarks/selection.py --quick          # tiny pair, < 2 min, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from plada_core.config import TeacherConfig  # noqa: E402
from plada_core.datasets import selected_tensors  # noqa: E402
from plada_core.devices import model_device  # noqa: E402
from plada_core.images import PreprocessConfig  # noqa: E402
from plada_core.io import checkpoints, pool, storage, tables  # noqa: E402
from plada_core.io.sources import decode_image, open_source  # noqa: E402
from plada_core.models import create_model  # noqa: E402
from plada_core.payload import decode_payload, encode_payload  # noqa: E402
from plada_core.scoring import ScoringConfig  # noqa: E402
from plada_core.selection import SelectionConfig, energy_direction, select  # noqa: E402
from plada_core.teacher import fit_classifier  # noqa: E402
from plada_core.training import TrainConfig, accuracy, configure_torch, features, train_head  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAPER_CODEC = "paper-zstd19"
DEFAULT_SELECTORS = ["random", "energy", "auto_energy", "knn", "knn_agree", "knn_cover", "knn_sample"]
RESULT_COLUMNS = [
    "pair", "selector", "keep", "seed", "student_acc", "teacher_acc", "payload_bytes", "n_kept",
    "relevant_frac", "pseudo_label_acc", "class_histogram", "energy_direction", "wall_s",
]  # fmt: skip


@dataclass(frozen=True)
class Pair:
    """One (target, pool) setting. ``relevant`` names the pool sources that are truly relevant (for diagnostics
    only); ``same_labels`` says their source labels are the target's classes (pseudo-label accuracy).
    ``student_preprocess``: the student's input when it differs from the teacher's (``preprocess``)."""

    target_train: str
    target_test: str
    references: list[str]
    preprocess: PreprocessConfig
    teacher_model: str = "plada_cnn"
    student_model: str = "plada_cnn"
    teacher_epochs: int = 30
    student_epochs: int = 30
    relevant: list[str] = field(default_factory=list)
    same_labels: bool = True
    prepare: str | None = None  # name of a function that writes npz sources into the work folder
    student_preprocess: PreprocessConfig | None = None

    @property
    def student_input(self) -> PreprocessConfig:
        return self.student_preprocess or self.preprocess


DIGITS_8 = PreprocessConfig(image_size=8, channels=1, crop="content")
PAIRS = {
    "A": Pair(
        "sklearn-digits:train", "sklearn-digits:test", ["mnist5k", "animal-mnist", "fashion-mnist"], DIGITS_8,
        relevant=["mnist5k"],
    ),
    "B": Pair(
        "npz:{work}/b-train.npz", "fashion-mnist:test", ["npz:{work}/b-pool-fashion.npz", "animal-mnist", "mnist5k"],
        PreprocessConfig(image_size=16, channels=1, crop="none"), relevant=["b-pool-fashion"], prepare="pair_b",
    ),
    "C": Pair(
        "cifar10:train", "cifar10:test", ["tiny-imagenet"], PreprocessConfig(image_size=32, channels=3, crop="none"),
        teacher_model="plada_effnet_lite0", student_model="plada_effnet_lite0", same_labels=False,
    ),
    "C64": Pair(
        "cifar10:train", "cifar10:test", ["tiny-imagenet"], PreprocessConfig(image_size=64, channels=3, crop="none"),
        teacher_model="plada_effnet_lite0", student_model="plada_effnet_lite0", same_labels=False,
    ),
    "C-cnn": Pair(
        "cifar10:train", "cifar10:test", ["tiny-imagenet"], PreprocessConfig(image_size=32, channels=3, crop="none"),
        teacher_model="plada_cnn_wide", teacher_epochs=20, student_model="plada_effnet_lite0", same_labels=False,
        student_preprocess=PreprocessConfig(image_size=64, channels=3, crop="none"),
    ),
    "tiny": Pair(
        "sklearn-digits:train", "sklearn-digits:test", ["npz:{work}/tiny-digits.npz", "npz:{work}/tiny-animals.npz"],
        DIGITS_8, teacher_epochs=10, student_epochs=8, relevant=["tiny-digits"], prepare="pair_tiny",
    ),
}  # fmt: skip


# --- sources the registry does not name directly ---------------------------------------------------------------


def _save_npz(path: Path, images: np.ndarray, labels: np.ndarray, class_names: list[str] | None = None) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    extra = {"class_names": np.asarray(class_names)} if class_names else {}
    np.savez(tmp, images=images, labels=labels, **extra)
    tmp.rename(path)


def pair_b(work: Path) -> None:
    """Fashion-MNIST with 100 labels per class (seeded), the other 59 k train images as the relevant pool part."""
    source = open_source("fashion-mnist:train")
    images, labels = source.load_arrays()
    rng = np.random.default_rng(0)
    labelled = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:100] for c in range(10)]))
    rest = np.setdiff1d(np.arange(len(labels)), labelled)
    _save_npz(work / "b-train.npz", images[labelled], labels[labelled], source.class_names)
    _save_npz(work / "b-pool-fashion.npz", images[rest], labels[rest], source.class_names)


def pair_tiny(work: Path) -> None:
    """1,000 MNIST digits (relevant) + 1,000 animal silhouettes (distractors), seeded subsets."""
    rng = np.random.default_rng(0)
    for spec, name in (("mnist5k", "tiny-digits"), ("animal-mnist", "tiny-animals")):
        images, labels = open_source(spec).load_arrays()
        pick = np.sort(rng.permutation(len(images))[:1000])
        _save_npz(work / f"{name}.npz", images[pick], labels[pick])


def _resolve(pair: Pair, work: Path) -> Pair:
    if pair.prepare:
        globals()[pair.prepare](work)
    fmt = lambda s: s.format(work=work)  # noqa: E731
    return replace(
        pair,
        target_train=fmt(pair.target_train),
        target_test=fmt(pair.target_test),
        references=[fmt(r) for r in pair.references],
    )


# --- one pair: pool, teacher, scores, pool tensors -------------------------------------------------------------


@dataclass
class Prepared:
    pair: Pair
    reference_url: str
    fingerprint: str
    n_classes: int
    teacher_acc: float
    scores: pd.DataFrame
    index: pd.DataFrame
    x_pool: torch.Tensor  # every pool image, preprocessed (or its frozen-backbone features), row = global index
    x_test: torch.Tensor  # likewise for the target test split
    y_test: torch.Tensor
    frozen_student: bool = False  # x_pool and x_test hold the student backbone's features


def prepare_pair(name: str, work: Path, shard_size: int = 8192) -> Prepared:
    """Pool, teacher (+ target bank) and scores of ``name``, made (or reused) by the project's task bodies."""
    from tasks.common import load_split
    from tasks.reference import build_reference_pool
    from tasks.score import score_shard
    from tasks.teacher import train_teacher

    pair_work = work / name
    pair = _resolve(PAIRS[name], pair_work)
    ref_url = build_reference_pool.fn(pair.references, str(pair_work / "reference"), shard_size)
    teacher_cfg = TeacherConfig(
        train=TrainConfig(model=pair.teacher_model, epochs=pair.teacher_epochs, seed=0), preprocess=pair.preprocess
    )
    teacher_url = train_teacher.fn(pair.target_train, pair.target_test, str(pair_work / "teacher"), teacher_cfg)
    _, meta = checkpoints.load_checkpoint(teacher_url)
    ref = pool.read_reference(ref_url)
    urls = [
        score_shard.fn(storage.join(ref_url, s["name"]), s["n"], teacher_url, str(pair_work), ScoringConfig())
        for s in ref["shards"]
    ]
    scores = pd.concat([tables.read_frame(u) for u in urls], ignore_index=True).sort_values("index", ignore_index=True)
    index = pool.read_index(ref_url)
    x_test, y_test, _ = load_split(pair.target_test, pair.student_input)
    backbone = _frozen_student(pair, int(meta["num_classes"]))
    if backbone is None:
        x_pool = _pool_tensor(ref_url, index, pair.student_input, pair_work / "pool-x.pt")
    else:
        x_pool = _pool_features(ref_url, index, pair.student_input, backbone, pair_work / "pool-features.pt")
        x_test = features(backbone, x_test)
    return Prepared(
        pair, ref_url, ref["fingerprint"], int(meta["num_classes"]), float(meta["test_acc"]), scores, index,
        x_pool, x_test, y_test, backbone is not None,
    )  # fmt: skip


def _pool_tensor(ref_url: str, index: pd.DataFrame, cfg: PreprocessConfig, cache: Path) -> torch.Tensor:
    """All pool images as one tensor (cached): students read rows from it instead of re-reading the shards."""
    if cache.exists():
        return torch.load(cache, weights_only=True)
    indices = index["index"].to_numpy()
    encoded, _ = pool.load_images(ref_url, indices, progress=False)
    x, _, missing = selected_tensors(encoded, indices, np.zeros(len(indices), np.int64), decode_image, cfg)
    if missing:
        raise RuntimeError(f"{len(missing)} pool images could not be read: {missing[:5]}")
    torch.save(x, cache)
    return x


def _frozen_student(pair: Pair, n_classes: int) -> torch.nn.Module | None:
    """The student model when its backbone is frozen (its features are then computed once per pool), else None."""
    model = create_model(pair.student_model, num_classes=n_classes, in_chans=pair.student_input.channels)
    return model if getattr(model, "frozen_backbone", False) else None


def _pool_features(
    ref_url: str, index: pd.DataFrame, cfg: PreprocessConfig, model: torch.nn.Module, cache: Path, chunk: int = 4096
) -> torch.Tensor:
    """Frozen-backbone features of every pool image (cached), computed chunk by chunk: at 64 px the images of a
    100 k pool would take 5 GB, their features 0.5 GB."""
    if cache.exists():
        return torch.load(cache, weights_only=True)
    indices = index["index"].to_numpy()
    parts = []
    for start in tqdm(range(0, len(indices), chunk), desc="pool features", unit="chunk"):
        part = indices[start : start + chunk]
        encoded, _ = pool.load_images(ref_url, part, progress=False)
        x, _, missing = selected_tensors(encoded, part, np.zeros(len(part), np.int64), decode_image, cfg)
        if missing:
            raise RuntimeError(f"{len(missing)} pool images could not be read: {missing[:5]}")
        parts.append(features(model, x))
    out = torch.cat(parts)
    torch.save(out, cache)
    return out


def relevance_auroc(prep: Prepared) -> dict[str, float]:
    """AUROC of each score for telling relevant pool images from the rest (higher = more relevant)."""
    if not prep.pair.relevant:
        return {}
    from sklearn.metrics import roc_auc_score

    relevant = prep.index.set_index("index").loc[prep.scores["index"], "source"].isin(prep.pair.relevant).to_numpy()
    out = {"low energy": roc_auc_score(relevant, -prep.scores["energy"])}
    if "knn_sim" in prep.scores:
        out["knn_sim"] = roc_auc_score(relevant, prep.scores["knn_sim"])
        out["knn_sim + knn_agree"] = roc_auc_score(relevant, prep.scores["knn_sim"] + prep.scores["knn_agree"])
    return {k: round(float(v), 4) for k, v in out.items()}


# --- one run ---------------------------------------------------------------------------------------------------


def selection_config(selector: str, keep: float, seed: int) -> SelectionConfig:
    """``random`` without the Safety-Net (the baseline ``plada run`` reports); ``NAME-nosn`` without; others with."""
    name, _, flag = selector.partition("-")
    safety_net = name != "random" and flag != "nosn"
    return SelectionConfig(selector=name, keep=keep, safety_net=safety_net, seed=seed)


def run_one(prep: Prepared, selector: str, keep: float, seed: int, trained: dict | None = None) -> dict:
    """One selection → payload → student. ``trained`` maps (kept indices, labels, seed) to a student accuracy:
    training is deterministic, so a selector that keeps exactly the set another already kept (``auto_energy``
    when it picks low energy, say) reuses that student instead of training an identical one."""
    start = time.perf_counter()
    scores = prep.scores
    columns = {c: scores[c].to_numpy() for c in scores.columns}
    kept = scores.iloc[select(columns, prep.n_classes, selection_config(selector, keep, seed))]
    payload = encode_payload(
        kept["index"].to_numpy(), kept["pred"].to_numpy(), n_reference=len(prep.index), n_classes=prep.n_classes,
        fingerprint=prep.fingerprint, codec=PAPER_CODEC,
    )  # fmt: skip
    decoded = decode_payload(payload, expected_fingerprint=prep.fingerprint)
    x = prep.x_pool[torch.from_numpy(decoded.indices.astype(np.int64))]
    y = torch.from_numpy(decoded.labels.astype(np.int64))
    pair = prep.pair
    key = (decoded.indices.tobytes(), decoded.labels.tobytes(), seed)
    if trained is not None and key in trained:
        student_acc = trained[key]
    else:
        cfg = TrainConfig(model=pair.student_model, epochs=pair.student_epochs, seed=seed)
        student_acc = _student_accuracy(prep, x, y, cfg)
        if trained is not None:
            trained[key] = student_acc
    info = prep.index.set_index("index").loc[decoded.indices]
    relevant = info["source"].isin(pair.relevant).to_numpy() if pair.relevant else None
    pl_acc = None
    if relevant is not None and relevant.any() and pair.same_labels:
        pl_acc = float((decoded.labels[relevant] == info["source_label"].to_numpy()[relevant]).mean())
    direction = energy_direction(columns) if "knn_sim" in columns else None
    return {
        "pair": None, "selector": selector, "keep": keep, "seed": seed,
        "student_acc": student_acc, "teacher_acc": prep.teacher_acc,
        "payload_bytes": len(payload), "n_kept": len(decoded.indices),
        "relevant_frac": float(relevant.mean()) if relevant is not None else None, "pseudo_label_acc": pl_acc,
        "class_histogram": json.dumps(np.bincount(decoded.labels, minlength=prep.n_classes).tolist()),
        "energy_direction": direction, "wall_s": round(time.perf_counter() - start, 2),
    }  # fmt: skip


def _student_accuracy(prep: Prepared, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> float:
    """Train the student recipe on (x, y) and test it. With a frozen backbone ``x`` already holds features: the
    head is trained exactly as ``fit_classifier`` would train it (same seed, same steps), only faster."""
    if prep.frozen_student:
        torch.manual_seed(cfg.seed)  # model init is part of the recipe, as in fit_classifier
        model = create_model(cfg.model, num_classes=prep.n_classes, in_chans=prep.pair.student_input.channels)
        train_head(model, x, y, cfg)
        with torch.no_grad():
            logits = model.forward_head(prep.x_test.to(model_device(model))).cpu()
        return float((logits.argmax(1) == prep.y_test).float().mean())
    return accuracy(fit_classifier(x, y, prep.n_classes, cfg), prep.x_test, prep.y_test)


def full_data_accuracy(prep: Prepared, cache: Path) -> float:
    """The reference a payload competes with: the student recipe (seed 0) trained on the whole target train
    split with its true labels, tested like every run. Cached in ``cache``."""
    from tasks.common import load_split

    if cache.exists():
        return json.loads(cache.read_text())["student_acc"]
    pair = prep.pair
    x, y, _ = load_split(pair.target_train, pair.student_input)
    if prep.frozen_student:
        x = features(_frozen_student(pair, prep.n_classes), x)
    cfg = TrainConfig(model=pair.student_model, epochs=pair.student_epochs, seed=0)
    acc = _student_accuracy(prep, x, y, cfg)
    cache.write_text(json.dumps({"student_acc": acc, "n_train": len(y)}))
    return acc


def collect_pair(name: str, work: Path) -> tuple[list[dict], dict]:
    """The finished runs of ``name`` under ``work`` (whatever an interrupted benchmark left), without running."""
    info_path = work / name / "info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    rows = [json.loads(p.read_text()) for p in sorted((work / name / "runs").glob("*.json"))]
    return rows, info


def run_pair(name: str, selectors, keeps, seeds, work: Path, log=print) -> tuple[list[dict], dict]:
    t0 = time.perf_counter()
    prep = prepare_pair(name, work)
    info = {"prepare_s": round(time.perf_counter() - t0, 1), "teacher_acc": prep.teacher_acc,
            "n_pool": len(prep.index), "auroc": relevance_auroc(prep)}  # fmt: skip
    log(f"[{name}] prepared in {info['prepare_s']} s: pool {info['n_pool']}, teacher {prep.teacher_acc:.4f}, "
        f"AUROC {info['auroc']}")  # fmt: skip
    info["full_data_acc"] = full_data_accuracy(prep, work / name / "full-data.json")
    log(f"[{name}] student recipe on the full target train split (true labels): {info['full_data_acc']:.4f}")
    rows, done_dir, trained = [], work / name / "runs", {}
    done_dir.mkdir(parents=True, exist_ok=True)
    (work / name / "info.json").write_text(json.dumps(info))
    for seed in seeds:
        for keep in keeps:
            for selector in selectors:
                path = done_dir / f"{selector}-{keep}-{seed}.json"
                if path.exists():
                    row = json.loads(path.read_text())
                else:
                    row = {**run_one(prep, selector, keep, seed, trained), "pair": name}
                    path.write_text(json.dumps(row))
                    log(f"[{name}] {selector:>12} keep {keep:<6} seed {seed}: student {row['student_acc']:.4f} "
                        f"rel {row['relevant_frac']} ({row['wall_s']} s)")  # fmt: skip
                rows.append(row)
    info["wall_s"] = round(time.perf_counter() - t0, 1)
    (work / name / "info.json").write_text(json.dumps(info))
    return rows, info


# --- outputs ---------------------------------------------------------------------------------------------------


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


def write_outputs(df: pd.DataFrame, infos: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    df = df[RESULT_COLUMNS].sort_values(["pair", "selector", "keep", "seed"], ignore_index=True)
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", nargs="+", default=["A"], choices=sorted(PAIRS))
    p.add_argument("--selectors", nargs="+", default=DEFAULT_SELECTORS)
    p.add_argument("--keeps", nargs="+", type=float, default=[0.005, 0.01, 0.05, 0.1, 0.25])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--threads", type=int, default=int(os.environ.get("PLADA_TORCH_THREADS", os.cpu_count() or 1)))
    p.add_argument("--quick", action="store_true", help="tiny pair, 3 selectors, 2 keeps, 1 seed (CI, < 2 min)")
    p.add_argument("--collect", action="store_true", help="only gather the finished runs under --work into --out")
    args = p.parse_args(argv)
    if args.quick:
        args.pairs, args.selectors, args.keeps, args.seeds = ["tiny"], ["random", "energy", "knn"], [0.05, 0.2], [0]
    os.environ.setdefault("PLADA_TORCH_THREADS", str(args.threads))
    os.environ.setdefault("PLADA_SCORING_THREADS", str(args.threads))
    configure_torch(args.threads)
    rows, infos = [], {}
    for name in args.pairs:
        if args.collect:
            pair_rows, infos[name] = collect_pair(name, args.work)
        else:
            pair_rows, infos[name] = run_pair(name, args.selectors, args.keeps, args.seeds, args.work)
        rows += pair_rows
    df = pd.DataFrame(rows)
    write_outputs(df, infos, args.out)
    (args.out / "selection-info.json").write_text(json.dumps(infos, indent=2))
    print(summary_table(df).to_string(index=False))
    print(json.dumps({"out": str(args.out), "rows": len(df)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
