"""The publisher's measured choice, composed: which candidate selection trains the best proxy student.

``plada_core.auto_selection`` ranks candidates given an ``evaluate`` function; this module builds that function
for a publish run, pure of storage: the caller hands in how to pack a candidate (select + encode at the requested
keep or byte budget, ``publishing.select_and_pack``) and how to load pool images (decoded and preprocessed, or a
frozen backbone's features). Every candidate is packed first; the union of their selections is then loaded ONCE,
and each proxy student trains on its rows of that union.

Memory bound: the union holds at most ``min(n_pool, n_candidates * k)`` inputs, each ``C*H*W*4`` bytes as images
(a 28 px grey image: 3 KiB; 32 px RGB: 12 KiB) or ``num_features * 4`` bytes as features (EfficientNet-Lite0:
5 KiB). For the pools ``auto`` is meant for (tens of thousands of images, keeps of a few percent) that is tens to a
few hundred MiB; on an ImageNet-21K-sized pool use a fixed selector, or a frozen-backbone proxy whose features
the scoring pass cached.

``AutoConfig`` holds the knobs of the validated choice and of the leakage check, written once here (the request
models and flags are generated from it).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from plada_core.auto_selection import AutoChoice, Candidate, CandidateResult, choose
from plada_core.devices import model_device
from plada_core.models import create_model
from plada_core.selection import SelectionConfig, resolve_k
from plada_core.training import TrainConfig, predict, train_classifier, train_head

__all__ = [
    "AutoConfig",
    "InputLoader",
    "Packer",
    "ProxyScore",
    "evaluate_candidates",
    "proxy_epochs",
    "proxy_student_score",
    "without_pool_images",
]

Packer = Callable[[SelectionConfig], tuple[np.ndarray, int]]
"""A candidate config → (the pool indices it keeps, its payload bytes)."""
InputLoader = Callable[[np.ndarray], tuple[np.ndarray, torch.Tensor]]
"""Sorted pool indices → (those that could be loaded, sorted; their proxy inputs, one row each)."""


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class AutoConfig:
    """How the publisher validates its selection and checks for leakage.

    The validation split (``plada_core.holdout``) is held out always, fixed selector or ``auto``: the teacher and
    the target bank never see it, so every release can state the accuracy its payload is expected to reach.
    The defaults: 10 % of each class resolves about one point on CIFAR-10 (see ``stratified_holdout``); 5 proxy
    epochs rank selections the way 30 student epochs do on the demo pairs while costing a sixth, but give a
    selection of a few hundred images only ~35 optimizer steps (digits pair, keep 0.5 %: the proxies predicted
    3.2 points under the students' accuracy and ranked the wrong selector first), so ``proxy_min_steps`` (200,
    about the student's 210 steps there) tops small selections up; a pHash distance
    of 6 bits catches re-encoded and rescaled copies and almost nothing else (``plada_core.leakage``).
    """

    val_fraction: Annotated[
        float,
        Field(gt=0, le=0.5, description="Share of each target-train class held out to validate the selection "
              "(the teacher and the target bank never see it)."),
    ] = 0.1  # fmt: skip
    val_min_per_class: Annotated[
        int,
        Field(ge=1, le=100_000, description="Validation images per class at least, and as many left for the "
              "teacher: a smaller class stops the run, naming it."),
    ] = 5  # fmt: skip
    proxy_epochs: Annotated[
        int, Field(ge=1, le=1000, description="Epochs of the proxy student trained on each candidate selection.")
    ] = 5
    proxy_min_steps: Annotated[
        int,
        Field(ge=0, le=1_000_000, description="Optimizer steps each proxy student takes at least: a small "
              "selection trains more than proxy_epochs epochs, up to the student recipe's, so that it is not "
              "judged under-trained. 0: exactly proxy_epochs."),
    ] = 200  # fmt: skip
    predict_at_recipe: Annotated[
        bool,
        Field(description="Train the chosen selection once more for the student recipe's epochs (recipe_epochs, "
              "with the proxy model) and report that student's validation accuracy as the "
              "predicted client accuracy (the proxies train fewer epochs; on noisy labels they scored up to 3.5 "
              "points above full-length students). Off: the winner's proxy accuracy, one training less."),
    ] = True  # fmt: skip
    tie_se: Annotated[
        float,
        Field(ge=0, le=10, description="Candidates within this many standard errors of the best validation "
              "accuracy count as tied, and the simplest of them wins (random first): auto departs from a random "
              "pick only where the validation split can tell them apart. 0: ties within one validation image."),
    ] = 1.0  # fmt: skip
    proxy_model: Annotated[
        str | None,
        Field(min_length=1, description="Model of the proxy students; empty: the teacher's (plada run: the "
              "student's)."),
    ] = None  # fmt: skip
    exclude_test_duplicates: Annotated[
        bool, Field(description="Never select a pool image that duplicates a target test image.")
    ] = True
    max_hamming: Annotated[
        int, Field(ge=0, le=64, description="Perceptual-hash distance (bits) up to which images are duplicates.")
    ] = 6
    pool_features: Annotated[
        bool,
        Field(description="With a frozen-backbone teacher, store the pool's pooled features while scoring, so "
              "proxy students never run the backbone over the pool again."),
    ] = True  # fmt: skip


def without_pool_images(
    scores: pd.DataFrame, drop: np.ndarray, cfg: SelectionConfig
) -> tuple[pd.DataFrame, SelectionConfig]:
    """``scores`` without the rows whose ``index`` is in ``drop``, and ``cfg`` with a fraction ``keep`` turned
    into the count it means on the full scored pool, so that dropping a few images does not shrink the budget.
    With nothing to drop both come back unchanged (and so do the payload bytes)."""
    drop = np.asarray(drop, dtype=np.int64)
    mask = np.isin(scores["index"].to_numpy(), drop)
    if not mask.any():
        return scores, cfg
    if not isinstance(cfg.keep, int):
        cfg = dataclasses.replace(cfg, keep=resolve_k(cfg.keep, len(scores)))
    remaining = scores[~mask].reset_index(drop=True)
    if cfg.keep > len(remaining):
        cfg = dataclasses.replace(cfg, keep=len(remaining))
    return remaining, cfg


def proxy_epochs(n_train: int, batch_size: int, epochs: int, min_steps: int, max_epochs: int) -> int:
    """Epochs of a proxy student on ``n_train`` images: ``epochs``, or as many more as ``min_steps`` optimizer
    steps of ``batch_size`` need, but not past ``max_epochs`` (the student recipe's epochs)."""
    steps_per_epoch = max(1, -(-n_train // batch_size))
    return max(epochs, min(-(-min_steps // steps_per_epoch), max_epochs))


def evaluate_candidates(
    candidates: Sequence[Candidate],
    scores: pd.DataFrame,
    pack: Packer,
    load_inputs: InputLoader,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    train_cfg: TrainConfig,
    epochs: int,
    n_classes: int,
    in_chans: int = 3,
    progress: Callable[[str], None] = lambda message: None,
    tie_se: float = AutoConfig.tie_se,
    min_steps: int = AutoConfig.proxy_min_steps,
    predict_at_recipe: bool = AutoConfig.predict_at_recipe,
) -> AutoChoice:
    """Pack every candidate, load the union of their kept images once, train a proxy student per candidate on its
    images labelled with the teacher's ``pred`` (what its payload would carry), and ``choose`` the best.
    Each proxy trains ``proxy_epochs(n, train_cfg.batch_size, epochs, min_steps, train_cfg.epochs)`` epochs;
    with ``predict_at_recipe`` the winner, if its proxy trained fewer, trains once more for ``train_cfg.epochs``
    and that student's validation accuracy is the prediction (``PredictedAccuracy.at_recipe_epochs``).

    A kept image that ``load_inputs`` could not load is left out of that candidate's proxy training, as a client
    would lose it; a candidate with no loadable image scores 0. ``tie_se``: see ``auto_selection.choose``.
    """
    packed = {}
    for c in candidates:
        start = time.perf_counter()
        packed[c.name] = (*pack(c.config), time.perf_counter() - start)
    union = np.unique(np.concatenate([kept for kept, _, _ in packed.values()])).astype(np.int64)
    progress(f"{len(candidates)} candidates keep {len(union)} distinct pool images; loading them once")
    present, inputs = load_inputs(union)
    pred_of = pd.Series(scores["pred"].to_numpy(), index=scores["index"].to_numpy())

    def training_set(c: Candidate) -> tuple[torch.Tensor, torch.Tensor]:
        """The candidate's loadable inputs and the labels its payload would carry."""
        kept = packed[c.name][0]
        rows = np.searchsorted(present, kept)
        ok = rows < len(present)
        ok[ok] = present[rows[ok]] == kept[ok]
        return inputs[torch.from_numpy(rows[ok])], torch.tensor(pred_of.loc[kept[ok]].to_numpy(np.int64))

    def evaluate(c: Candidate) -> CandidateResult:
        kept, payload_bytes, pack_s = packed[c.name]
        start = time.perf_counter()
        x, labels = training_set(c)
        score, n_epochs = ProxyScore(0.0, math.nan), 0
        if len(labels):
            n_epochs = proxy_epochs(len(labels), train_cfg.batch_size, epochs, min_steps, train_cfg.epochs)
            score = proxy_student_score(x, labels, x_val, y_val, train_cfg, n_epochs, n_classes, in_chans)
        wall = pack_s + time.perf_counter() - start
        progress(f"{c.name}: val acc {score.accuracy:.4f} (NLL {score.nll:.4f}) on {len(y_val)} images, "
                 f"{len(kept)} kept, {payload_bytes} bytes, {n_epochs} proxy epochs")  # fmt: skip
        return CandidateResult(score.accuracy, len(y_val), len(kept), payload_bytes, wall, n_epochs, score.nll)

    choice = choose(candidates, evaluate, tie_se=tie_se)
    if predict_at_recipe and 0 < choice.result.proxy_epochs < train_cfg.epochs:
        x, labels = training_set(choice.winner)
        score = proxy_student_score(x, labels, x_val, y_val, train_cfg, train_cfg.epochs, n_classes, in_chans)
        progress(f"{choice.winner.name} trained {train_cfg.epochs} epochs (the student recipe's): val acc "
                 f"{score.accuracy:.4f}, against {choice.result.val_acc:.4f} for its proxy")  # fmt: skip
        choice = choice.at_recipe_epochs(score.accuracy, train_cfg.epochs)
    return choice


@dataclass(frozen=True)
class ProxyScore:
    """A proxy student on the validation split: its accuracy and its mean negative log-likelihood of the true
    labels, in nats (NaN when no proxy was trained)."""

    accuracy: float
    nll: float

    @classmethod
    def of_logits(cls, logits: torch.Tensor, y: torch.Tensor) -> ProxyScore:
        logits = logits.float()
        return cls(float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y)))


@torch.no_grad()
def _head_logits(model: torch.nn.Module, feats: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    model.eval()
    device = model_device(model)
    return torch.cat([model.forward_head(feats[i : i + batch_size].to(device)).cpu()
                      for i in range(0, len(feats), batch_size)])  # fmt: skip


def proxy_student_score(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    train_cfg: TrainConfig,
    epochs: int,
    n_classes: int,
    in_chans: int = 3,
) -> ProxyScore:
    """Validation accuracy and NLL of ``train_cfg.model`` trained by the student recipe for ``epochs`` epochs.

    ``x_*`` are images (N x C x H x W float, as the student sees them) or, for a frozen-backbone model
    (``FrozenEffNetLite0``), that model's features (N x num_features, from ``training.features``): then only
    the head trains, exactly as ``train_classifier`` would do, and a caller that tries many selections of one
    pool computes each pool and validation image's features once. ``in_chans`` is only read with features.
    ``n_classes`` is the task's, not the selection's (a small selection may miss a class). Seeded by
    ``train_cfg.seed``: on the CPU two calls give the same number.
    """
    if len(x_val) != len(y_val) or len(x_val) == 0:
        raise ValueError(
            f"need the same non-zero number of validation inputs and labels, got {len(x_val)} and {len(y_val)}"
        )
    if x_train.ndim != x_val.ndim or x_train.shape[1:] != x_val.shape[1:]:
        raise ValueError(f"train and validation inputs differ in shape: {tuple(x_train.shape)}, {tuple(x_val.shape)}")
    cfg = dataclasses.replace(train_cfg, epochs=epochs)
    torch.manual_seed(cfg.seed)  # the model's initial weights are part of the recipe, as in fit_classifier
    if x_train.ndim == 4:
        model = create_model(cfg.model, n_classes, in_chans=x_train.shape[1])
        return ProxyScore.of_logits(predict(train_classifier(model, x_train, y_train, cfg, desc="proxy"), x_val), y_val)
    if x_train.ndim != 2:
        raise ValueError(f"inputs must be images (N x C x H x W) or features (N x F), got shape {tuple(x_train.shape)}")
    model = create_model(cfg.model, n_classes, in_chans=in_chans)
    if not getattr(model, "frozen_backbone", False):
        raise ValueError(
            f"features were given, but {cfg.model!r} trains its backbone: pass images, or use a frozen-backbone "
            f"model such as 'plada_effnet_lite0'"
        )
    return ProxyScore.of_logits(_head_logits(train_head(model, x_train, y_train, cfg, desc="proxy"), x_val), y_val)
