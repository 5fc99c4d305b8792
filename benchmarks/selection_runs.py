"""Selection benchmark, per run: select and pack with the publishing core, decode, train and test the student.

Every run publishes exactly as ``plada run`` does (``plada_core.publishing.select_and_pack``, the paper codec),
decodes the payload again (so what the student sees is what travels) and trains the student recipe on the
pseudo-labelled pool images. A pair's finished runs are kept one JSON each, so an interrupted benchmark resumes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.selection_prepare import Prepared, frozen_student, prepare_pair, relevance_auroc
from plada_core.auto_selection import CHOICE_RULE, Candidate, candidate_grid, required_columns
from plada_core.classifier import fit_classifier
from plada_core.devices import model_device
from plada_core.models import create_model
from plada_core.payload import PAPER_CODEC, decode_payload
from plada_core.proxy import AutoConfig, evaluate_candidates
from plada_core.publishing import select_and_pack
from plada_core.selection import AUTO_SELECTOR, SelectionConfig, energy_direction
from plada_core.training import TrainConfig, accuracy, features, train_head

__all__ = ["PAPER_CODEC", "auto_choice", "collect_pair", "missing_columns", "run_one", "run_pair", "selection_config"]



def selection_config(selector: str, keep: float, seed: int) -> SelectionConfig:
    """``random`` without the Safety-Net (the baseline ``plada run`` reports); ``NAME-nosn`` without; others with."""
    name, _, flag = selector.partition("-")
    safety_net = name != "random" and flag != "nosn"
    return SelectionConfig(selector=name, keep=keep, safety_net=safety_net, seed=seed)


def missing_columns(prep: Prepared, selector: str) -> list[str]:
    """The score columns ``selector`` (``NAME`` or ``NAME-nosn``) reads that the pair's scores lack: the pruning
    selectors' ``density_ratio`` and ``label_stable`` until the scoring pass writes them (``plada_core.pruning``)."""
    if selector == AUTO_SELECTOR:  # its grid holds only the candidates the scores support
        return []
    return sorted(required_columns(selector.partition("-")[0]) - set(prep.scores.columns))


def _pack(prep: Prepared, cfg: SelectionConfig):
    return select_and_pack(
        prep.scores, prep.class_names, cfg, PAPER_CODEC, n_reference=len(prep.index), fingerprint=prep.fingerprint,
        index=prep.index, meta={"teacher": prep.teacher},
    )  # fmt: skip


def auto_recipe() -> dict:
    """What an ``auto`` row's choice depends on besides the pair and the seed: the rule and the proxies' knobs.
    A finished ``auto`` run recorded under another recipe is run again."""
    auto = AutoConfig()
    return {"choice_rule": CHOICE_RULE, "proxy_epochs": auto.proxy_epochs, "proxy_min_steps": auto.proxy_min_steps,
            "tie_se": auto.tie_se, "predict_at_recipe": auto.predict_at_recipe}  # fmt: skip


def auto_candidates(prep: Prepared, keep: float, seed: int) -> dict[str, Candidate]:
    """The candidate grid ``auto`` measures at ``keep``, by name."""
    base = SelectionConfig(selector=AUTO_SELECTOR, keep=keep, seed=seed)
    return {c.name: c for c in candidate_grid(prep.scores.columns, base)}


def auto_choice(prep: Prepared, keep: float, seed: int, only: str | None = None) -> tuple[SelectionConfig, dict]:
    """What ``--selector auto`` publishes at ``keep``: every candidate of the grid packed, a proxy student (the
    student recipe for ``AutoConfig().proxy_epochs`` epochs, at least ``proxy_min_steps`` steps; head-only on the
    pair's features for a frozen student) trained on each and measured on the validation split the teacher never
    saw, the best kept (``plada_core.proxy.evaluate_candidates``, the composite the publish task runs). Returns
    the winner's config and what the row records of the choice. ``only``: measure that candidate alone (its
    prediction, without choosing again)."""
    start = time.perf_counter()
    grid = auto_candidates(prep, keep, seed)
    candidates = list(grid.values()) if only is None else [grid[only]]
    pair = prep.pair
    proxy = TrainConfig(model=pair.student_model, epochs=pair.student_epochs, seed=seed)

    def pack(config: SelectionConfig) -> tuple[np.ndarray, int]:
        packed = _pack(prep, config)
        return packed.kept["index"].to_numpy(np.int64), len(packed.payload)

    def load(union: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        return union, prep.x_pool[torch.from_numpy(union)]

    choice = evaluate_candidates(candidates, prep.scores, pack, load, prep.x_val, prep.y_val, proxy,
                                 AutoConfig().proxy_epochs, prep.n_classes, pair.student_input.channels,
                                 min_steps=AutoConfig().proxy_min_steps,
                                 predict_at_recipe=AutoConfig().predict_at_recipe)  # fmt: skip
    predicted = choice.predicted
    record = {"auto_choice": choice.winner.name, "predicted_acc": predicted.value, "predicted_se": predicted.se,
              "predicted_proxy_acc": predicted.value if predicted.proxy_value is None else predicted.proxy_value,
              "auto_trained": len(choice.table),
              "auto_wall_s": round(time.perf_counter() - start, 2), "auto_recipe": auto_recipe(),
              "auto_table": choice.table}  # fmt: skip
    return choice.winner.config, record


def repredict(prep: Prepared, row: dict) -> dict:
    """An ``auto`` row finished before the prediction was measured at the recipe's epochs, brought up to date
    without choosing again: its winner alone (same grid, keep and seed, so the same selection) goes through
    ``auto_choice``, whose proxy (deterministic: the row's own proxy score again) and recipe-epoch training give
    the prediction. The choice does not depend on ``predict_at_recipe``, so the rest of the row stands."""
    _, record = auto_choice(prep, row["keep"], row["seed"], only=row["auto_choice"])
    predicted = {k: record[k] for k in ("predicted_acc", "predicted_se", "predicted_proxy_acc")}
    return {**row, **predicted, "auto_recipe": auto_recipe()}


def run_one(prep: Prepared, selector: str, keep: float, seed: int, trained: dict | None = None) -> dict:
    """One selection → payload → student. ``trained`` maps (kept indices, labels, seed) to a student accuracy:
    training is deterministic, so a selector that keeps exactly the set another already kept (``auto_energy``
    when it picks low energy, say, or ``auto`` its winner) reuses that student instead of training it again."""
    start = time.perf_counter()
    if selector == AUTO_SELECTOR:
        cfg, choice = auto_choice(prep, keep, seed)
    else:
        cfg, choice = selection_config(selector, keep, seed), {}
    packed = _pack(prep, cfg)
    payload = packed.payload
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
    scores = prep.scores
    direction = energy_direction({c: scores[c].to_numpy() for c in scores.columns}) if "knn_sim" in scores else None
    return {
        "pair": None, "selector": selector, "keep": keep, "seed": seed,
        "student_acc": student_acc, "teacher_acc": prep.teacher_acc,
        "payload_bytes": len(payload), "n_kept": len(decoded.indices),
        "relevant_frac": float(relevant.mean()) if relevant is not None else None, "pseudo_label_acc": pl_acc,
        "class_histogram": json.dumps(np.bincount(decoded.labels, minlength=prep.n_classes).tolist()),
        "energy_direction": direction, "wall_s": round(time.perf_counter() - start, 2), **choice,
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
        x = features(frozen_student(pair, prep.n_classes), x)
    cfg = TrainConfig(model=pair.student_model, epochs=pair.student_epochs, seed=0)
    acc = _student_accuracy(prep, x, y, cfg)
    cache.write_text(json.dumps({"student_acc": acc, "n_train": len(y)}))
    return acc


def _only_prediction_is_older(row: dict) -> bool:
    """A finished ``auto`` row whose recipe differs from today's only in not having measured its prediction at
    the recipe's epochs (``repredict`` updates it)."""
    recipe, now = dict(row.get("auto_recipe") or {}), auto_recipe()
    return "predict_at_recipe" not in recipe and {**recipe, "predict_at_recipe": now["predict_at_recipe"]} == now


def _mode(pruning: bool) -> str:
    """Suffix of the run folder and info file: runs with the pruning columns (whose ``auto`` rows measure more
    candidates) are kept apart from the default scoring's."""
    return "-pruning" if pruning else ""


def collect_pair(name: str, work: Path, pruning: bool = False) -> tuple[list[dict], dict]:
    """The finished runs of ``name`` under ``work`` (whatever an interrupted benchmark left), without running."""
    info_path = work / name / f"info{_mode(pruning)}.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    rows = [json.loads(p.read_text()) for p in sorted((work / name / f"runs{_mode(pruning)}").glob("*.json"))]
    return rows, info


def run_pair(name: str, selectors, keeps, seeds, work: Path, log=print, pruning: bool = False
             ) -> tuple[list[dict], dict]:  # fmt: skip
    """Every (seed, keep, selector) run of pair ``name`` not finished yet under ``work``, and the pair's info
    (``pruning``: with the ``density_ratio`` and ``label_stable`` columns scored, runs kept apart)."""
    t0 = time.perf_counter()
    prep = prepare_pair(name, work, pruning=pruning)
    info = {"prepare_s": round(time.perf_counter() - t0, 1), "teacher_acc": prep.teacher_acc,
            "n_pool": len(prep.index), "auroc": relevance_auroc(prep)}  # fmt: skip
    log(f"[{name}] prepared in {info['prepare_s']} s: pool {info['n_pool']}, teacher {prep.teacher_acc:.4f}, "
        f"AUROC {info['auroc']}")  # fmt: skip
    info["full_data_acc"] = full_data_accuracy(prep, work / name / "full-data.json")
    log(f"[{name}] student recipe on the full target train split (true labels): {info['full_data_acc']:.4f}")
    rows, done_dir, trained = [], work / name / f"runs{_mode(pruning)}", {}
    done_dir.mkdir(parents=True, exist_ok=True)
    info_path = work / name / f"info{_mode(pruning)}.json"
    info_path.write_text(json.dumps(info))
    for seed in seeds:
        for keep in keeps:
            for selector in selectors:
                path = done_dir / f"{selector}-{keep}-{seed}.json"
                if not path.exists() and (missing := missing_columns(prep, selector)):
                    log(f"[{name}] {selector:>12} skipped: the scores have no column {', '.join(missing)}")
                    continue
                row = json.loads(path.read_text()) if path.exists() else None
                if row is not None and selector == AUTO_SELECTOR and _only_prediction_is_older(row):
                    row = repredict(prep, row)
                    path.write_text(json.dumps(row))
                    log(f"[{name}] auto keep {keep} seed {seed}: prediction measured at the recipe's epochs: "
                        f"{row['predicted_acc']:.4f} (proxy {row['predicted_proxy_acc']:.4f})")  # fmt: skip
                if row is not None and selector == AUTO_SELECTOR and row.get("auto_recipe") != auto_recipe():
                    log(f"[{name}] auto keep {keep} seed {seed}: finished under another choice recipe "
                        f"({row.get('auto_recipe')}); running it again")  # fmt: skip
                    row = None
                if row is None:
                    row = {**run_one(prep, selector, keep, seed, trained), "pair": name}
                    path.write_text(json.dumps(row))
                    log(f"[{name}] {selector:>12} keep {keep:<6} seed {seed}: student {row['student_acc']:.4f} "
                        f"rel {row['relevant_frac']} ({row['wall_s']} s)")  # fmt: skip
                rows.append(row)
    info["wall_s"] = round(time.perf_counter() - t0, 1)
    info_path.write_text(json.dumps(info))
    return rows, info
