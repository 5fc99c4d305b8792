"""Selectors from the data-pruning literature, and the pure functions behind their score columns.

Each selector is a priority function like those of ``plada_core.selection`` (lower first, NaN last, seeded), and
``selection.SELECTORS`` registers them by name; this module imports nothing from it, so imports stay one way.

- ``ccs``: coverage-centric coreset selection (Zheng et al. 2023, "Coverage-centric Coreset Selection for High
  Pruning Rates"). The hardest ``CCS_BETA`` of each predicted class go last (at high pruning rates the hardest
  images are mostly mislabelled or junk), the rest are sampled evenly across ``CCS_STRATA`` equal-width difficulty
  strata inside each class: round-robin over the (class, stratum) cells, random order inside a cell and inside a
  round. A budget then covers easy and hard images alike instead of piling onto either end.
- ``easy_first`` / ``hard_first``: Sorscher et al. 2022 ("Beyond neural scaling laws") found that small budgets
  are best spent on easy, typical images and large budgets on hard ones. A priority function does not see the
  budget, so both ends are registered and ``--selector auto`` (which validates every candidate at the requested
  budget) picks the end that suits it. ``hard_first`` applies ``ccs``'s reliability cut first.
- ``density_ratio``: relevance as the log density ratio ``log p_target(x) / p_pool(x)`` of the teacher's
  embeddings, from a logistic classifier of target-train against pool embeddings (``fit_density_ratio``); most
  target-like first. Unlike ``knn_sim`` it weighs every feature direction by how well it tells the two apart.
- ``reliable``: label-reliability filtering; images whose teacher label survives a horizontal flip and small
  shifts of the image (``label_stability``) first, then the most confident (``margin``).

Difficulty everywhere is ``1 - margin``: the teacher's top-2 softmax gap, an inference-time stand-in for the
training-dynamics scores of the papers (AUM, EL2N), which a teacher trained elsewhere does not provide.

Their score columns (float32): ``density_ratio`` (``density_ratio_scores``) and ``label_stable`` (in [0, 1],
``label_stability``). The scoring pass adds them when ``ScoringConfig.density_ratio`` / ``label_stability`` are on
(``plada publish --density-ratio --label-stability shifts``); without them ``auto`` leaves these two selectors out
and its summary says so (``selectors_left_out``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "CCS_BETA",
    "CCS_STRATA",
    "DENSITY_RATIO_COLUMN",
    "LABEL_STABLE_COLUMN",
    "PRUNING_COLUMNS",
    "DensityRatio",
    "ccs",
    "density_ratio",
    "density_ratio_scores",
    "difficulty",
    "easy_first",
    "fit_density_ratio",
    "hard_first",
    "label_stability",
    "reliable",
]

# Zheng et al. tune beta per pruning rate (0 up to 50 % pruned, 10 % at 70-80 %, 30 % at 90 % on CIFAR-10); every
# PLADA budget prunes 75-99.5 % of the pool, and a priority cannot see the budget, so one value from that range.
CCS_BETA = 0.1
# The paper uses 50 strata on 50 k images; 20 keeps a stratum populated at a few hundred images per class.
CCS_STRATA = 20
DENSITY_RATIO_COLUMN = "density_ratio"
LABEL_STABLE_COLUMN = "label_stable"
PRUNING_COLUMNS = [DENSITY_RATIO_COLUMN, LABEL_STABLE_COLUMN]

Scores = Mapping[str, np.ndarray]


def _column(scores: Scores, name: str) -> np.ndarray:
    # Same message as selection's: a missing column names itself and what is there.
    if name not in scores:
        raise ValueError(f"scores have no column {name!r}; columns: {sorted(scores)}")
    return np.asarray(scores[name])


def _rank_in_group(key: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Each position's rank inside its group by ascending ``key`` (0 = first), ties by position."""
    n = len(key)
    order = np.lexsort((np.arange(n), key, group))
    sorted_groups = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    return rank


def difficulty(scores: Scores) -> np.ndarray:
    """``1 - margin`` (float64): 0 for a certain teacher, 1 for a tie between its top two classes; NaN stays NaN."""
    return 1.0 - _column(scores, "margin").astype(np.float64)


def _classes(scores: Scores) -> np.ndarray:
    """Predicted classes as dense ids 0..C-1 (any labels, the Safety-Net's checks are ``select``'s)."""
    return np.unique(_column(scores, "pred"), return_inverse=True)[1].reshape(-1).astype(np.int64)


def _unreliable(hard: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """The ``floor(CCS_BETA * n_c)`` hardest finite images of each class ``c`` (ties: the earlier position)."""
    finite = np.isfinite(hard)
    group = np.where(finite, cls, -1)
    rank = _rank_in_group(np.where(finite, -hard, 0.0), group)
    n_cut = np.floor(CCS_BETA * np.bincount(cls[finite], minlength=cls.max(initial=-1) + 1)).astype(np.int64)
    return finite & (rank < n_cut[cls])


def _last_tier(priority: np.ndarray, tier: np.ndarray, hard: np.ndarray) -> np.ndarray:
    """Place ``tier`` after every other finite priority (all of which are < n), least hard first."""
    n = len(priority)
    idx = np.flatnonzero(tier)
    priority[idx[np.lexsort((idx, hard[idx]))]] = n + 1 + np.arange(len(idx))
    return priority


def _strata(hard: np.ndarray, mask: np.ndarray, n_strata: int) -> np.ndarray:
    """Equal-width bin (0..n_strata-1) of ``hard`` over its range inside ``mask``; 0 outside or when flat."""
    if not mask.any():
        return np.zeros(len(hard), np.int64)
    lo, hi = hard[mask].min(), hard[mask].max()
    if not hi > lo:
        return np.zeros(len(hard), np.int64)
    scaled = np.where(mask, (np.where(mask, hard, lo) - lo) / (hi - lo) * n_strata, 0.0)
    return np.clip(np.floor(scaled), 0, n_strata - 1).astype(np.int64)


def ccs(scores: Scores, rng: np.random.Generator) -> np.ndarray:
    """Coverage-centric: the ``CCS_BETA`` hardest of each class last, the rest round-robin over difficulty strata.

    Strata are ``CCS_STRATA`` equal-width bins of ``difficulty`` over the range of the images that pass the cut
    (one scale for every class, as margins are comparable across classes); a cell is a (predicted class, stratum)
    pair. Every non-empty cell gives its first image before any gives a second (water-filling: a small stratum is
    taken whole, the rest share the budget evenly, as in the paper's allocation), a cell's images and the cells of
    a round in random order. Under the Safety-Net each class's quota is thus spread evenly over its strata.
    Images past the cut follow everything else, least hard first; NaN margins rank last.
    """
    hard = difficulty(scores)
    cls = _classes(scores)
    n = len(hard)
    cut = _unreliable(hard, cls)
    kept = np.isfinite(hard) & ~cut
    cell = np.where(kept, cls * CCS_STRATA + _strata(hard, kept, CCS_STRATA), -1)
    priority = _rank_in_group(rng.random(n), cell) + rng.random(n)
    priority = _last_tier(priority, cut, hard)
    priority[~np.isfinite(hard)] = np.nan
    return priority


def easy_first(scores: Scores, rng: np.random.Generator) -> np.ndarray:
    """Easiest first: the teacher's most confident images (highest ``margin``), Sorscher's choice for small budgets."""
    return difficulty(scores)


def hard_first(scores: Scores, rng: np.random.Generator) -> np.ndarray:
    """Hardest first among the images that pass ``ccs``'s reliability cut (the ``CCS_BETA`` hardest of each class,
    mostly ambiguous or mislabelled, follow everything else, least hard first): Sorscher's choice for large budgets."""
    hard = difficulty(scores)
    cut = _unreliable(hard, _classes(scores))
    n = len(hard)
    priority = np.empty(n, np.float64)
    rest = np.flatnonzero(np.isfinite(hard) & ~cut)
    priority[rest[np.lexsort((rest, -hard[rest]))]] = np.arange(len(rest))
    priority = _last_tier(priority, cut, hard)
    priority[~np.isfinite(hard)] = np.nan
    return priority


def density_ratio(scores: Scores, rng: np.random.Generator) -> np.ndarray:
    """Most target-like first: the highest ``density_ratio`` column (``density_ratio_scores``)."""
    return -_column(scores, DENSITY_RATIO_COLUMN).astype(np.float64)


def reliable(scores: Scores, rng: np.random.Generator) -> np.ndarray:
    """Stable labels first: descending ``label_stable`` (the share of flipped/shifted views on which the teacher
    keeps its label), ties by descending ``margin``, then by position. NaN in either column ranks last."""
    stable = _column(scores, LABEL_STABLE_COLUMN).astype(np.float64)
    hard = difficulty(scores)
    n = len(stable)
    ok = np.isfinite(stable) & np.isfinite(hard)
    priority = np.full(n, np.nan)
    idx = np.flatnonzero(ok)
    priority[idx[np.lexsort((idx, hard[idx], -stable[idx]))]] = np.arange(len(idx))
    return priority


# --- the score columns -----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DensityRatio:
    """A linear log density ratio ``feats @ weight + bias`` (weight float32, shape (d,)) over teacher embeddings."""

    weight: np.ndarray
    bias: float

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, weight=self.weight.astype(np.float32), bias=np.float64(self.bias))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "DensityRatio":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(weight=z["weight"].astype(np.float32), bias=float(z["bias"]))


def fit_density_ratio(
    target_feats: np.ndarray,
    pool_feats: np.ndarray,
    seed: int = 0,
    l2: float = 1e-3,
    max_rows: int = 20_000,
    max_iter: int = 200,
) -> DensityRatio:
    """Logistic regression of target (1) against pool (0) features; its logit is ``log p_t(x) / p_p(x)``.

    The two sides are weighted equally whatever their sizes, so the logit estimates the density ratio itself,
    not one shifted by the sample-size prior. Features are standardised for the fit (the scaling is folded into
    the returned weights), ``l2`` penalises the weights' squared norm on that scale, and each side is capped at
    ``max_rows`` by a seeded subsample. Full-batch L-BFGS on the CPU: the same inputs give the same weights.
    Use the same features the scoring pass feeds ``density_ratio_scores`` (the bank's unit embeddings).
    """
    target_feats, pool_feats = (np.asarray(f, np.float32) for f in (target_feats, pool_feats))
    if target_feats.ndim != 2 or pool_feats.ndim != 2 or target_feats.shape[1] != pool_feats.shape[1]:
        raise ValueError(f"need two 2-D feature arrays of one width, got {target_feats.shape} and {pool_feats.shape}")
    if len(target_feats) == 0 or len(pool_feats) == 0:
        raise ValueError("need at least one target and one pool row to fit a density ratio")
    rng = np.random.default_rng(seed)
    sides = [f[np.sort(rng.choice(len(f), max_rows, replace=False))] if len(f) > max_rows else f
             for f in (target_feats, pool_feats)]  # fmt: skip
    # float32 with standardisation in place: 2 x 20 k rows of 1,752-d features stay under 300 MB.
    z = torch.from_numpy(np.concatenate(sides))
    y = torch.cat([torch.ones(len(sides[0])), torch.zeros(len(sides[1]))])
    w_row = torch.where(y > 0, 0.5 / len(sides[0]), 0.5 / len(sides[1]))
    mean, std = z.mean(0), z.std(0, unbiased=False).clamp_min(1e-6)
    z.sub_(mean).div_(std)
    w = torch.zeros(z.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        value = (w_row * nn.functional.binary_cross_entropy_with_logits(z @ w + b, y, reduction="none")).sum()
        value = value + l2 * (w * w).sum()
        value.backward()
        return value

    opt.step(loss)
    with torch.no_grad():
        weight = w / std
        bias = b - (mean * weight).sum()
    return DensityRatio(weight.float().numpy(), float(bias))


def density_ratio_scores(ratio: DensityRatio, feats: np.ndarray | torch.Tensor) -> np.ndarray:
    """The ``density_ratio`` column of a batch (float32): estimated ``log p_target(x) / p_pool(x)`` per row."""
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().to("cpu", torch.float64).numpy()
    feats = np.asarray(feats, np.float64)
    if feats.ndim != 2 or feats.shape[1] != len(ratio.weight):
        raise ValueError(f"features of width {len(ratio.weight)} expected, got shape {feats.shape}: another teacher?")
    return (feats @ ratio.weight.astype(np.float64) + ratio.bias).astype(np.float32)


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` (N x C x H x W) moved ``dy`` rows down and ``dx`` columns right, edges replicated (no wrap-around)."""
    p = max(abs(dy), abs(dx))
    if p == 0:
        return x
    h, w = x.shape[-2:]
    padded = nn.functional.pad(x, (p, p, p, p), mode="replicate")
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


@torch.no_grad()
def label_stability(
    model: nn.Module,
    x: torch.Tensor,
    pred: np.ndarray | torch.Tensor,
    shifts: Sequence[tuple[int, int]] = ((1, 1), (-1, -1)),
    flip: bool = True,
) -> np.ndarray:
    """The ``label_stable`` column of a batch (float32 in [0, 1]): the share of augmented views of each image on
    which ``model``'s argmax is still ``pred``.

    Views: the horizontal flip (``flip``; turn it off for tasks whose classes are not mirror-symmetric, such as
    digits or text) and each ``(dy, dx)`` pixel shift in ``shifts`` (edges replicated). ``x`` is the preprocessed
    batch on the model's device, as the scoring pass feeds it; the model should be in eval mode. One forward pass
    per view, so the scoring pass costs ``1 + len(views)`` times as much.
    """
    views = ([lambda t: t.flip(-1)] if flip else []) + [lambda t, s=s: _shift(t, *s) for s in shifts]
    if not views:
        raise ValueError("label_stability needs at least one view: flip=True or a non-empty shifts")
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images (N x C x H x W), got shape {tuple(x.shape)}")
    target = (pred if isinstance(pred, torch.Tensor) else torch.from_numpy(np.array(pred))).to(x.device, torch.long)
    agree = torch.zeros(len(x), dtype=torch.int64, device=x.device)
    for view in views:
        agree += model(view(x)).argmax(dim=1) == target
    return (agree.cpu().numpy() / len(views)).astype(np.float32)
