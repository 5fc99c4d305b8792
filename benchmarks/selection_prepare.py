"""Selection benchmark, per pair: its sources, pool, teacher, scores and pool tensors, made (or reused) once.

Pair definitions are ``plada_core.pairs.BENCH_PAIRS``; the sources they name under ``{work}`` are written here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from plada_core.config import TeacherConfig
from plada_core.datasets import selected_tensors
from plada_core.images import PreprocessConfig, decode_image
from plada_core.io import checkpoints, layout, pool, tables
from plada_core.io.arrays import read_npz
from plada_core.io.sources import open_source
from plada_core.models import create_model
from plada_core.pairs import BENCH_PAIRS, BenchPair
from plada_core.proxy import AutoConfig
from plada_core.scoring import ScoringConfig
from plada_core.training import TrainConfig, features

__all__ = ["Prepared", "frozen_student", "prepare_pair", "relevance_auroc"]


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


PREPARERS = {"pair_b": pair_b, "pair_tiny": pair_tiny}  # BenchPair.prepare names one of these


def _resolve(pair: BenchPair, work: Path) -> BenchPair:
    if pair.prepare:
        PREPARERS[pair.prepare](work)
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
    pair: BenchPair
    reference_url: str
    fingerprint: str
    class_names: list[str]  # the teacher's
    teacher: dict  # url, model and test accuracy, as the manifest records them
    scores: pd.DataFrame
    index: pd.DataFrame
    x_pool: torch.Tensor  # every pool image, preprocessed (or its frozen-backbone features), row = global index
    x_test: torch.Tensor  # likewise for the target test split
    y_test: torch.Tensor
    x_val: torch.Tensor  # likewise for the validation split the teacher never saw (auto's proxies)
    y_val: torch.Tensor
    frozen_student: bool = False  # x_pool, x_test and x_val hold the student backbone's features

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def teacher_acc(self) -> float:
        return self.teacher["test_acc"]


def prepare_pair(name: str, work: Path, shard_size: int = 8192, pruning: bool = False) -> Prepared:
    """Pool, teacher (+ target bank) and scores of ``name``, made (or reused) by the project's task bodies.

    As a publisher running ``--selector auto`` does, the teacher holds out a stratified validation split of the
    target train split (``AutoConfig``'s defaults) that neither it, its target bank nor any selector sees; every
    row of the pair uses that one teacher, and the ``auto`` rows measure their candidates on that split. When the
    student is the teacher's frozen backbone at the teacher's input, the scoring pass stores the pool's features
    and the students train on them (no second pass of the backbone over the pool). ``pruning`` also scores the
    ``density_ratio`` and ``label_stable`` columns (the pair's ``label_views``), into ``<pair>/pruning``."""
    from tasks.common import load_split
    from tasks.reference import build_reference_pool
    from tasks.score import fit_density_ratio, score_shard
    from tasks.teacher import train_teacher

    pair_work = work / name
    pair = _resolve(BENCH_PAIRS[name], pair_work)
    ref_url = build_reference_pool.fn(pair.references, str(pair_work / "reference"), shard_size)
    teacher_cfg = TeacherConfig(
        train=TrainConfig(model=pair.teacher_model, epochs=pair.teacher_epochs, seed=0), preprocess=pair.preprocess
    )
    teacher_url = train_teacher.fn(
        pair.target_train, pair.target_test, str(pair_work / "teacher"), teacher_cfg, auto=AutoConfig()
    )
    _, meta = checkpoints.load_checkpoint(teacher_url)
    if len(meta["class_names"]) != int(meta["num_classes"]):
        raise ValueError(f"teacher {teacher_url} names {len(meta['class_names'])} classes but has "
                         f"{meta['num_classes']} outputs: delete {pair_work / 'teacher'} and rerun")  # fmt: skip
    ref = pool.read_reference(ref_url)
    backbone = frozen_student(pair, int(meta["num_classes"]))
    shared = backbone is not None and pair.student_model == pair.teacher_model and pair.student_input == pair.preprocess
    shards = pool.list_shards(ref_url)
    scored, scoring = str(pair_work), ScoringConfig()
    if pruning:
        scored = str(pair_work / "pruning")
        scoring = ScoringConfig(density_ratio=True, label_stability=pair.label_views)
        fit_density_ratio.fn([s["url"] for s in shards], ref["n"], teacher_url, scored, scoring)
    urls = [score_shard.fn(s["url"], s["n"], teacher_url, scored, scoring, features=shared) for s in shards]
    scores = pd.concat([tables.read_frame(u) for u in urls], ignore_index=True).sort_values("index", ignore_index=True)
    index = pool.read_index(ref_url)
    x_test, y_test, _ = load_split(pair.target_test, pair.student_input)
    x_train, y_train, _ = load_split(pair.target_train, pair.student_input)
    val = torch.from_numpy(read_npz(layout.validation_url(teacher_url))["val_positions"])
    x_val, y_val = x_train[val], y_train[val]
    del x_train
    if backbone is None:
        x_pool = _pool_tensor(ref_url, index, pair.student_input, pair_work / "pool-x.pt")
    elif shared:
        x_pool = _stored_features(scored, [s["url"] for s in shards], len(index))
        x_test, x_val = features(backbone, x_test), features(backbone, x_val)
    else:
        x_pool = _pool_features(ref_url, index, pair.student_input, backbone, pair_work / "pool-features.pt")
        x_test, x_val = features(backbone, x_test), features(backbone, x_val)
    teacher = {"url": teacher_url, "model": meta["model"], "test_acc": float(meta["test_acc"])}
    return Prepared(
        pair, ref_url, ref["fingerprint"], list(meta["class_names"]), teacher, scores, index, x_pool, x_test, y_test,
        x_val, y_val, backbone is not None,
    )  # fmt: skip


def _stored_features(out_dir: str, shard_urls: list[str], n: int) -> torch.Tensor:
    """The pool features the scoring pass stored (float16, one file per shard), as one float32 tensor whose row
    is the global pool index."""
    out = torch.zeros(0)
    for shard in shard_urls:
        npz = read_npz(layout.pool_features_url(out_dir, shard))
        if out.numel() == 0:
            out = torch.zeros(n, npz["features"].shape[1])
        out[torch.from_numpy(npz["indices"].astype(np.int64))] = torch.from_numpy(npz["features"].astype(np.float32))
    return out


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


def frozen_student(pair: BenchPair, n_classes: int) -> torch.nn.Module | None:
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
    for column in ("density_ratio", "label_stable"):
        if column in prep.scores:
            out[column] = roc_auc_score(relevant, prep.scores[column])
    return {k: round(float(v), 4) for k, v in out.items()}
