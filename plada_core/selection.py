"""Which reference images to keep, given the teacher's per-image scores.

Every selector is a *priority* function over the pool: lower priority is kept first. ``select`` turns a
priority into exactly ``k`` global positions, either the ``k`` best overall or, with the Safety-Net, the
best ``K_c`` inside each predicted class. Everything here is a pure function of (scores, config): ties are
broken by global position and the only randomness comes from ``np.random.default_rng(cfg.seed)``.

Beside the paper's selectors sit domain-aware ones that read the relevance columns of the scoring pass
(``plada_core.relevance``: ``knn_sim``, ``knn_agree``, ``knn_nn``, ``energy_cdf``): ``knn`` (most target-like
first), ``knn_agree`` (target-like and label-consistent first), ``knn_cover`` (round-robin over the nearest target
images, so the kept set covers the target data), ``knn_sample`` (the same rounds in random order, each
neighbourhood's closest and most confidently labelled image first) and ``auto_energy`` (low- or high-energy
first, whichever agrees with the target-based relevance). Selectors from the data-pruning literature (``ccs``,
``easy_first``, ``hard_first``, ``density_ratio``, ``reliable``) live in ``plada_core.pruning``; the registry
below is still the one list of names.

NaN priorities (a NaN energy from a broken image, say) rank after every non-NaN value of the same
ranking, so they are kept only when a budget cannot be filled otherwise. Under the Safety-Net the ranking
is per class: a NaN image can be kept to fill its own class's quota while a finite image of another
class is dropped.
"""

from __future__ import annotations

import math
import numbers
from typing import Annotated, Callable, Mapping

import numpy as np
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field
from pydantic.dataclasses import dataclass

from plada_core import pruning
from plada_core.quotas import safety_net_quotas

__all__ = [
    "AUTO_SELECTOR",
    "SELECTORS",
    "SelectionConfig",
    "energy_direction",
    "get_selector",
    "resolve_k",
    "safety_net_quotas",
    "select",
]

Scores = Mapping[str, np.ndarray]
Selector = Callable[[Scores, np.random.Generator], np.ndarray]


def _column(scores: Scores, name: str) -> np.ndarray:
    if name not in scores:
        raise ValueError(f"scores have no column {name!r}; columns: {sorted(scores)}")
    return np.asarray(scores[name])


def _energy(scores: Scores, rng: np.random.Generator) -> np.ndarray:
    """The paper's rule: low energy looks in-distribution, so it goes first."""
    return _column(scores, "energy").astype(np.float64)


def _opposite_energy(scores: Scores, rng: np.random.Generator) -> np.ndarray:
    """The paper's far-OOD variant: high energy first. NaN stays NaN, so it still ranks last."""
    return -_column(scores, "energy").astype(np.float64)


def _entropy(scores: Scores, rng: np.random.Generator) -> np.ndarray:
    """Confident (low-entropy) predictions first."""
    return _column(scores, "entropy").astype(np.float64)


def _random(scores: Scores, rng: np.random.Generator) -> np.ndarray:
    """Uniform: ignores every score, NaN energies included; the baseline every result is compared to."""
    n = len(next(iter(scores.values())))
    return rng.random(n)


def _knn(scores: Scores, rng: np.random.Generator) -> np.ndarray:
    """Most target-like first: mean cosine similarity to the 5 nearest target-train embeddings."""
    return -_column(scores, "knn_sim").astype(np.float64)


def _knn_agree(scores: Scores, rng: np.random.Generator) -> np.ndarray:
    """Target-like *and* label-consistent first: ``knn_sim + knn_agree``, where ``knn_agree`` is the share of
    the nearest target images whose true label is the teacher's pseudo-label (cleaner labels)."""
    return -(_column(scores, "knn_sim").astype(np.float64) + _column(scores, "knn_agree").astype(np.float64))


def _rank_in_group(goodness: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Each image's rank inside its ``knn_nn`` group, highest ``goodness`` first (0 = the group's best); NaN
    ranks last, ties by position (lexsort is stable)."""
    n = len(goodness)
    order = np.lexsort((np.arange(n), -np.nan_to_num(goodness, nan=-np.inf), group))
    sorted_groups = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    return rank


def _knn_cover(scores: Scores, rng: np.random.Generator) -> np.ndarray:
    """Coverage of the target data: group the pool by nearest target-train image (``knn_nn``); the most similar
    image of every group goes first, then every group's second, and so on, each round ordered by ``knn_sim``.
    A kept set from this ranking spreads over the whole target distribution instead of piling onto its densest
    corner."""
    sim = _column(scores, "knn_sim").astype(np.float64)
    rank = _rank_in_group(sim, _column(scores, "knn_nn").astype(np.int64))
    n = len(sim)
    # Within a round, more similar first: a rank in [0, 1) from the global similarity order.
    global_rank = np.empty(n, np.float64)
    global_rank[np.lexsort((np.arange(n), -np.nan_to_num(sim, nan=-np.inf)))] = np.arange(n) / max(n, 1)
    return rank + global_rank


def _knn_sample(scores: Scores, rng: np.random.Generator) -> np.ndarray:
    """A random sample of the target data, each sampled target image standing for its best pool matches.

    Rounds as in ``knn_cover`` (every ``knn_nn`` group's best image before any group's second), but each round
    visits the groups in random order instead of most-similar first, and a group's best image is the one with
    the highest ``knn_sim + margin``: close to the target data *and* confidently labelled by the teacher (both
    terms lie in [0, 1]). A budget smaller than one round is then a uniform sample of target neighbourhoods, as
    representative as random selection, yet every kept image is a close, cleanly labelled match of a target
    image rather than an arbitrary pool image. Ordering rounds by similarity (``knn_cover``) favours the target
    images with the closest pool matches, which on a pool that is mostly in-domain are the most typical and
    least informative ones (pairs B and C in benchmarks/results).
    """
    sim = _column(scores, "knn_sim").astype(np.float64)
    goodness = sim + _column(scores, "margin").astype(np.float64)
    rank = _rank_in_group(goodness, _column(scores, "knn_nn").astype(np.int64))
    return rank + rng.random(len(sim))


def energy_direction(scores: Scores) -> int:
    """+1 when low energy goes with target-likeness (the paper's rule), -1 when high energy does (far-OOD).

    Decided from target data only: the sign of the rank correlation between energy and ``knn_sim`` (similarity to
    the target training images) over the pool. Negative correlation (low energy ⇔ target-like) → +1.
    """
    energy = _column(scores, "energy").astype(np.float64)
    sim = _column(scores, "knn_sim").astype(np.float64)
    ok = np.isfinite(energy) & np.isfinite(sim)
    if ok.sum() < 2:
        return 1
    ranks = [np.argsort(np.argsort(v[ok], kind="stable"), kind="stable").astype(np.float64) for v in (energy, sim)]
    corr = np.corrcoef(*ranks)[0, 1]
    return -1 if np.isfinite(corr) and corr > 0 else 1


def _auto_energy(scores: Scores, rng: np.random.Generator) -> np.ndarray:
    """The paper's energy rule with its direction chosen by ``energy_direction`` (low or high energy first)."""
    return energy_direction(scores) * _column(scores, "energy").astype(np.float64)


SELECTORS: dict[str, Selector] = {
    "energy": _energy,
    "opposite_energy": _opposite_energy,
    "entropy": _entropy,
    "random": _random,
    "knn": _knn,
    "knn_agree": _knn_agree,
    "knn_cover": _knn_cover,
    "knn_sample": _knn_sample,
    "auto_energy": _auto_energy,
    "ccs": pruning.ccs,
    "easy_first": pruning.easy_first,
    "hard_first": pruning.hard_first,
    "density_ratio": pruning.density_ratio,
    "reliable": pruning.reliable,
}


# Not a priority function: the publisher replaces it by the candidate that trains the best proxy student on a
# held-out validation split (plada_core.auto_selection, tasks/auto_select.py) before anything is selected.
AUTO_SELECTOR = "auto"


def get_selector(name: str) -> Selector:
    """The priority function registered as ``name`` in ``SELECTORS``."""
    if name == AUTO_SELECTOR:
        raise ValueError(
            f"selector {AUTO_SELECTOR!r} is chosen by measurement before selecting (plada_core.auto_selection): "
            f"resolve it to one of {sorted(SELECTORS)} first"
        )
    try:
        return SELECTORS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown selector {name!r}; valid selectors: {sorted(SELECTORS)}") from None


def _check_keep(keep: float | int) -> None:
    # bool is an int subclass; True would silently mean "keep one image".
    if isinstance(keep, bool) or not isinstance(keep, numbers.Real):
        raise TypeError(f"keep must be a float fraction or an int count, got {keep!r}")
    if isinstance(keep, numbers.Integral):
        if keep < 1:
            raise ValueError(f"keep as a count must be >= 1, got {keep!r}")
    elif not 0 < keep <= 1:  # also rejects NaN
        raise ValueError(
            f"keep as a fraction must be in (0, 1], got {keep!r}; pass an int for an absolute count"
        )


def resolve_k(keep: float | int, n: int) -> int:
    """Number of images to keep out of a pool of ``n``.

    A float is a fraction in (0, 1]: ``round(keep * n)`` (Python's round, halves to even), raised to 1 so a
    tiny fraction of a non-empty pool never keeps nothing. An int is an absolute count and must not exceed
    ``n``. Mind the type: ``1`` keeps one image, ``1.0`` keeps the whole pool.
    """
    _check_keep(keep)
    if n < 0:
        raise ValueError(f"pool size n must be >= 0, got {n!r}")
    if isinstance(keep, numbers.Integral):
        if keep > n:
            raise ValueError(f"keep={keep!r} images asked for, but the pool holds only n={n}: ask for at most {n} "
                             "images, or a fraction such as 0.1")  # fmt: skip
        return int(keep)
    if n == 0:
        return 0
    return max(1, int(round(keep * n)))


def _checked_keep(keep: float | int) -> float | int:
    _check_keep(keep)
    return int(keep) if isinstance(keep, numbers.Integral) else float(keep)  # an int stays a count


def _checked_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return int(seed)


def _finite_alpha(alpha: float) -> float:
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be finite, got {alpha!r}")
    return alpha


def _known_selector(name: str) -> str:
    if name != AUTO_SELECTOR:
        get_selector(name)
    return name


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class SelectionConfig:
    """How ``select`` picks images.

    ``selector`` names a priority function in ``SELECTORS``, or is ``auto`` (the default, for every entry point):
    the measured choice, which the publish run resolves to a named selector before ``select`` runs
    (``plada_core.proxy``); ``select`` itself refuses ``auto`` with that advice. ``keep`` is a fraction of the
    pool when a float in (0, 1], an absolute count when an int >= 1 (see ``resolve_k``). ``safety_net`` turns on the per-class
    quota ``K_c ∝ N_c**alpha`` over the teacher's predicted classes (see ``safety_net_quotas``). ``seed``
    feeds ``np.random.default_rng`` for selectors that draw random numbers.
    """

    selector: Annotated[
        str,
        AfterValidator(_known_selector),
        Field(
            description="Selection rule (auto: the candidate whose proxy student scores best on a held-out "
            "validation split; energy: the paper's).",
            json_schema_extra={"enum": [AUTO_SELECTOR, *SELECTORS]},
        ),
    ] = AUTO_SELECTOR
    keep: Annotated[
        float | int,
        BeforeValidator(_checked_keep),
        Field(description="Fraction of the pool in (0, 1], or a whole count of images >= 1."),
    ] = 0.1
    safety_net: Annotated[bool, Field(description="Per-class quota K_c ∝ N_c^alpha over predicted classes.")] = True
    alpha: Annotated[
        float, BeforeValidator(_finite_alpha), Field(ge=-4, le=4, description="Safety-Net exponent.")
    ] = 0.5
    seed: Annotated[
        int, BeforeValidator(_checked_seed), Field(ge=0, description="Seed of the selectors that draw at random.")
    ] = 0


def _check_scores(scores: Scores) -> int:
    if not scores:
        raise ValueError("scores are empty: need at least one column, e.g. 'energy'")
    lengths = {name: np.shape(values) for name, values in scores.items()}
    if any(len(shape) != 1 for shape in lengths.values()):
        raise ValueError(f"every score column must be 1-D, got shapes {lengths}")
    if len({shape[0] for shape in lengths.values()}) > 1:
        raise ValueError(f"score columns differ in length: { {k: s[0] for k, s in lengths.items()} }")
    return next(iter(lengths.values()))[0]


def _check_pred(pred: np.ndarray, n_classes: int) -> np.ndarray:
    if not np.issubdtype(pred.dtype, np.integer):
        raise ValueError(f"'pred' must hold integer class ids, got dtype {pred.dtype}")
    bad = (pred < 0) | (pred >= n_classes)
    if bad.any():
        raise ValueError(
            f"'pred' must lie in [0, {n_classes}), got {pred[bad][0]} at position {int(np.flatnonzero(bad)[0])}"
        )
    return pred.astype(np.int64)


def _ranking(priority: np.ndarray) -> np.ndarray:
    """Positions from best to worst: lower priority first, NaN last, ties by position."""
    priority = np.asarray(priority, dtype=np.float64)
    # lexsort is stable, so equal keys keep position order; NaN is its own primary key so that its place
    # does not depend on how the sort treats NaN.
    return np.lexsort((priority, np.isnan(priority)))


def _take_per_class(ranking: np.ndarray, pred: np.ndarray, quotas: np.ndarray) -> np.ndarray:
    """The first ``quotas[c]`` positions of ``ranking`` among those predicted as c, for every c."""
    by_class = ranking[np.argsort(pred[ranking], kind="stable")]
    class_start = np.concatenate(([0], np.cumsum(np.bincount(pred, minlength=len(quotas)))))
    labels = pred[by_class]
    rank_in_class = np.arange(len(by_class)) - class_start[labels]
    return by_class[rank_in_class < quotas[labels]]


def select(scores: Scores, n_classes: int, cfg: SelectionConfig) -> np.ndarray:
    """Sorted global positions (int64) of the ``resolve_k(cfg.keep, n)`` images to keep.

    ``scores`` maps column name to one value per pool image in global index order; the selector reads its
    own column ("energy", "entropy", ...), the Safety-Net reads "pred" (class ids in [0, n_classes)).
    Without the Safety-Net the k best by priority are kept; with it, the best ``K_c`` of each predicted
    class, ``K_c`` from ``safety_net_quotas`` over the pool's predicted-class counts.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral) or n_classes < 1:
        raise ValueError(f"n_classes must be an int >= 1, got {n_classes!r}")
    n = _check_scores(scores)
    k = resolve_k(cfg.keep, n)
    priority = get_selector(cfg.selector)(scores, np.random.default_rng(cfg.seed))
    ranking = _ranking(priority)
    if cfg.safety_net:
        pred = _check_pred(_column(scores, "pred"), n_classes)
        quotas = safety_net_quotas(np.bincount(pred, minlength=n_classes), k, cfg.alpha)
        kept = _take_per_class(ranking, pred, quotas)
    else:
        kept = ranking[:k]
    return np.sort(kept).astype(np.int64)
