"""``--selector auto``: choose the selector by measuring it, on a validation split the publisher holds.

Which selector trains the best student depends on the task; the paper's default (energy + Safety-Net) often loses
to random. The publisher has the labelled target train split, so it can hold some of it out
(``plada_core.holdout``), build each candidate payload at the requested budget, train a proxy student on it, and
keep the candidate with the best validation accuracy. This module holds the pure parts:

- ``candidate_grid``: the candidates the score table supports (every registered selector whose columns are
  there, Safety-Net off and on, a small alpha grid).
- ``choose``: evaluate each candidate with the caller's function, rank, keep the random baseline unless it is beaten,
  and predict the client's accuracy with its uncertainty.
The proxy students that ``evaluate`` trains, and the candidates' packing and loading, are in
``plada_core.proxy``; the caller (a task) owns storage and the payload bytes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from statistics import NormalDist
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from plada_core.paired import Z95 as _Z95
from plada_core.selection import SELECTORS, SelectionConfig, get_selector

__all__ = [
    "REDUNDANT_SELECTORS",
    "AutoChoice",
    "Candidate",
    "CandidateResult",
    "PredictedAccuracy",
    "candidate_grid",
    "choose",
    "required_columns",
    "unusable_selectors",
    "standard_error",
    "wilson_interval",
]

# ``auto_energy`` is ``energy`` or ``opposite_energy`` exactly (whichever direction it detects); both are in the grid.
REDUNDANT_SELECTORS = ("auto_energy",)


class _ColumnProbe(Mapping):
    """A score table that has every column (zeros) and records which ones a selector reads."""

    _ANY = "\0any"  # what iteration yields: reading it says nothing about the columns a selector needs

    def __init__(self, n: int = 4) -> None:
        self.read: set[str] = set()
        self._n = n

    def __getitem__(self, name: str) -> np.ndarray:
        if name != self._ANY:
            self.read.add(name)
        return np.zeros(self._n, dtype=np.float32)

    def __contains__(self, name: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter([self._ANY])

    def __len__(self) -> int:
        return 1


def required_columns(selector: str) -> frozenset[str]:
    """The score columns ``selector`` reads, found by running it on a probe table (``random``: none).

    Asking the selector itself keeps this in step with ``selection.SELECTORS`` without a second table to maintain.
    """
    probe = _ColumnProbe()
    get_selector(selector)(probe, np.random.default_rng(0))
    return frozenset(probe.read)


def unusable_selectors(available_columns: Iterable[str], skip: Sequence[str] = REDUNDANT_SELECTORS) -> dict[str, list]:
    """Registered selectors ``candidate_grid`` leaves out for want of score columns: name → the missing columns
    (e.g. ``density_ratio`` and ``reliable`` unless the scoring pass added their columns), so a report can say so."""
    columns = set(available_columns)
    return {s: sorted(required_columns(s) - columns) for s in SELECTORS
            if s not in skip and not required_columns(s) <= columns}  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    """One selection recipe to try. ``simplicity`` breaks ties, lower first: 0 a plain random pick (the
    baseline every payload is measured against), 1 any other recipe. Among the others no tier is drawn: an
    earlier rule ranked "without the Safety-Net" simpler than "with it", and on the digits pair (90 validation
    images, one SE 2-3 points) that made ``auto`` take a no-Safety-Net pick at keep 1 % that trailed the
    Safety-Net one by 2 points on the test split; nothing measured said the Safety-Net overfits the validation."""

    name: str
    config: SelectionConfig
    simplicity: int


# Bumped whenever ``choose`` picks differently from the same measurements, so that cached choices (the selection
# harness's finished runs) are recomputed: 1 ranked "no Safety-Net" simpler than "with it"; 2 draws no tier there.
# (A rule 3 broke accuracy ties by the validation NLL: on the digits pair it changed 2 of 12 choices, both to
# students 1-2 test images worse, -0.03 point in the mean; not adopted. benchmarks/results/selection-nll-tiebreak-A.csv)
CHOICE_RULE = 2


def _candidate(selector: str, safety_net: bool, alpha: float, base: SelectionConfig) -> Candidate:
    if safety_net:
        return Candidate(f"{selector}+sn({alpha:g})", replace(base, selector=selector, safety_net=True, alpha=alpha), 1)
    return Candidate(selector, replace(base, selector=selector, safety_net=False), 0 if selector == "random" else 1)


def candidate_grid(
    available_columns: Iterable[str],
    base: SelectionConfig,
    alphas: Sequence[float] = (0.0, 0.5, 1.0),
    selectors: Sequence[str] | None = None,
    skip: Sequence[str] = REDUNDANT_SELECTORS,
) -> list[Candidate]:
    """Every selector whose columns are in ``available_columns``, Safety-Net off, then on at ``base.alpha`` and at
    each of ``alphas``; ``random`` first, then the other plain selectors in registry order, then the Safety-Net
    ones (base alpha before the grid): the order ``choose`` breaks exact ties by.

    ``keep`` and ``seed`` come from ``base``. Safety-Net candidates need the "pred" column. ``selectors``
    restricts the registry (default: all of ``SELECTORS``); ``skip`` drops selectors that would repeat another
    candidate. Each usable selector gives 1 + 3 candidates with the default alphas around a base alpha of 0.5
    (``alphas=()``: 1 + 1): with ``SCORE_COLUMNS`` + ``RELEVANCE_COLUMNS`` and the registry of this writing, 11
    selectors, 44 candidates (the paper's four and knn's four, 32, before the data-pruning ones joined).
    """
    columns = set(available_columns)
    names = [s for s in (SELECTORS if selectors is None else selectors) if s not in skip]
    names = sorted(names, key=lambda s: s != "random")  # stable: registry order after random
    usable = [s for s in names if required_columns(s) <= columns]
    sn_alphas = list(dict.fromkeys([float(base.alpha), *map(float, alphas)]))
    grid = [_candidate(s, False, base.alpha, base) for s in usable]
    if "pred" in columns:
        grid += [_candidate(s, True, a, base) for s in usable for a in sn_alphas]
    return sorted(grid, key=lambda c: c.simplicity)  # stable: keeps the order above inside each tier


@dataclass(frozen=True)
class CandidateResult:
    """What ``evaluate`` measured for one candidate: the proxy student's accuracy on ``n_val`` validation
    images, the selection's size and payload bytes, the seconds the evaluation took, the epochs its proxy
    trained (0: not recorded) and the proxy's mean negative log-likelihood of the validation labels, in nats
    (NaN: not recorded; reported, not ranked on: see ``choose``)."""

    val_acc: float
    n_val: int
    n_kept: int
    payload_bytes: int
    wall_s: float
    proxy_epochs: int = 0
    val_nll: float = math.nan

    def __post_init__(self) -> None:
        if not 0 <= self.val_acc <= 1:
            raise ValueError(f"val_acc must be in [0, 1], got {self.val_acc!r}")
        if not (self.val_nll >= 0 or math.isnan(self.val_nll)):
            raise ValueError(f"val_nll must be >= 0 (NaN: not recorded), got {self.val_nll!r}")
        if self.n_val < 1:
            raise ValueError(f"n_val must be >= 1, got {self.n_val!r}")


def standard_error(p: float, n: int) -> float:
    """Binomial standard error ``sqrt(p (1 - p) / n)`` of an accuracy ``p`` measured on ``n`` images."""
    return math.sqrt(p * (1 - p) / n)


def wilson_interval(p: float, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for an accuracy ``p`` over ``n`` images (95 % by default); unlike p ± z·SE it stays
    inside [0, 1] and is not empty at p = 0 or 1."""
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _curse_se(p: float, n: int) -> float:
    """The spread the winner's-curse bound scales: the binomial SE, but never less than the Wilson interval's
    half-width in SE units, which stays positive when every validation image is right (90 of 90: 1.0 points,
    where the binomial SE is 0 and would claim no optimism at all)."""
    lo, hi = wilson_interval(p, n)
    return max(standard_error(p, n), (hi - lo) / (2 * _Z95))


def _expected_max_normal(k: int) -> float:
    """E[max of k independent standard normals], Blom's approximation (0 for k = 1, 1.55 for 10, 2.07 for 32)."""
    return NormalDist().inv_cdf((k - 0.375) / (k + 0.25))


@dataclass(frozen=True)
class PredictedAccuracy:
    """The client's expected accuracy: a validation accuracy of the winning selection, its binomial SE and 95 %
    Wilson interval.

    ``value`` is the winner's proxy accuracy, or, once ``at_recipe_epochs`` re-trained the winner with the
    student recipe's full ``epochs``, that student's (``proxy_value`` then keeps the proxy's). The two differ:
    on the harness's C-cnn pair (a from-scratch teacher's noisy labels, a linear head on frozen features) the
    5-epoch proxies scored 3.2-3.5 points above 30-epoch students at keeps of 10-25 %, on validation and test
    alike, because the longer training fits more of the noisy labels.

    ``optimism_bound`` is how much picking the best of ``n_candidates`` noisy estimates inflates the winner's
    (winner's curse), estimated for the worst case where every candidate is truly equally good and their errors
    independent: SE x E[max of K standard normals] (the SE no less than the Wilson interval implies, so a
    perfect validation score still carries a bound). Truly different candidates, and errors correlated through
    the shared validation set, both make the bias smaller, so expect the client between
    ``value - optimism_bound`` and ``value`` (each ± the SE). ``runner_up_gap`` is the winner's proxy accuracy
    minus the best other one (negative when a tie went to the random baseline): well above ``optimism_bound``,
    the winner stands out; below it, the top of the ranking is noise. For an unbiased number, score the winner
    once more on images no candidate was chosen with.
    """

    value: float
    se: float
    ci95: tuple[float, float]
    n_val: int
    n_candidates: int
    optimism_bound: float
    runner_up_gap: float
    epochs: int = 0  # epochs of the student that scored ``value`` (0: not recorded)
    proxy_value: float | None = None  # the winner's proxy accuracy, when ``value`` is a re-training's

    def at_recipe_epochs(self, value: float, epochs: int) -> PredictedAccuracy:
        """This prediction with ``value`` measured again by the winner trained ``epochs`` epochs (the recipe's)."""
        return replace(self, value=value, se=standard_error(value, self.n_val),
                       ci95=wilson_interval(value, self.n_val),
                       optimism_bound=_curse_se(value, self.n_val) * _expected_max_normal(self.n_candidates),
                       epochs=epochs,
                       proxy_value=self.value if self.proxy_value is None else self.proxy_value)  # fmt: skip

    @property
    def note(self) -> str:
        trained = (f"a student trained {self.epochs} epochs (the recipe's) on the chosen selection; its proxy "
                   f"scored {self.proxy_value:.4f}" if self.proxy_value is not None else
                   f"the proxy student ({self.epochs or '?'} epochs); a client training longer may land elsewhere")
        gap = self.runner_up_gap
        runner_up = (f"the runner-up's proxy is {gap:.4f} behind" if gap >= 0 else f"a candidate's proxy scored "
                     f"{-gap:.4f} more, inside the tie rule, so the random baseline stood")  # fmt: skip
        return (
            f"validation accuracy of {trained}; chosen from {self.n_candidates} candidates: optimistic by up to "
            f"{self.optimism_bound:.4f} (winner's curse; {runner_up})"
        )

    def as_dict(self) -> dict:
        return {
            "value": self.value,
            "se": self.se,
            "ci95": list(self.ci95),
            "n_val": self.n_val,
            "n_candidates": self.n_candidates,
            "optimism_bound": self.optimism_bound,
            "runner_up_gap": self.runner_up_gap,
            "epochs": self.epochs,
            "proxy_value": self.proxy_value,
            "note": self.note,
        }


@dataclass(frozen=True)
class AutoChoice:
    """``table``: one row per candidate, best validation accuracy first (ties: random, then earlier);
    ``winner`` and its ``result``; ``predicted`` client accuracy; ``tie_tolerance`` as applied; ``skipped``: the
    alpha refinements the staged search did not train."""

    table: list[dict]
    winner: Candidate
    result: CandidateResult
    predicted: PredictedAccuracy
    tie_tolerance: float
    skipped: list[str] = field(default_factory=list)

    def at_recipe_epochs(self, value: float, epochs: int) -> AutoChoice:
        """This choice with its prediction measured again by the winner trained ``epochs`` epochs."""
        return replace(self, predicted=self.predicted.at_recipe_epochs(value, epochs))

    def summary(self) -> dict:
        """JSON-ready record of the choice, for the publish report."""
        return {
            "winner": self.winner.name,
            "config": asdict(self.winner.config),
            "predicted_accuracy": self.predicted.as_dict(),
            "tie_tolerance": self.tie_tolerance,
            "candidates": self.table,
            "not_evaluated": self.skipped,
        }


def _alpha_refinements(candidates: Sequence[Candidate]) -> dict[int, str]:
    """Position → selector of each Safety-Net candidate after its selector's first one (the alpha grid around
    the base alpha, which ``candidate_grid`` puts first)."""
    seen, refinements = set(), {}
    for i, c in enumerate(candidates):
        if c.config.safety_net:
            if c.config.selector in seen:
                refinements[i] = c.config.selector
            seen.add(c.config.selector)
    return refinements


def _evaluate_staged(candidates, evaluate, refine_top: int | None) -> dict[int, CandidateResult]:
    """Stage 1: every candidate but the alpha refinements; stage 2: the refinements of the ``refine_top``
    selectors whose base Safety-Net candidate did best in stage 1 (``None``: every refinement)."""
    refinements = _alpha_refinements(candidates)
    results = {i: evaluate(c) for i, c in enumerate(candidates) if i not in refinements}
    if refine_top is None:
        chosen = set(refinements.values())
    else:
        base = [i for i in results if candidates[i].config.safety_net]
        base.sort(key=lambda i: (-results[i].val_acc, i))
        chosen = {candidates[i].config.selector for i in base[:refine_top]}
    results.update({i: evaluate(candidates[i]) for i, sel in refinements.items() if sel in chosen})
    return results


def choose(
    candidates: Sequence[Candidate],
    evaluate: Callable[[Candidate], CandidateResult],
    tie_tolerance: float | None = None,
    refine_top: int | None = 2,
    tie_se: float = 1.0,
) -> AutoChoice:
    """Evaluate the candidates, in order, and pick the best validation accuracy, ties to the simpler.

    Staged: the alpha grid of a Safety-Net selector (its candidates after the first) is evaluated only for the
    ``refine_top`` selectors whose first Safety-Net candidate ranked best among the others (``None``: all of
    them). On the full grid that trains 22 + 4 proxies instead of 44, and alpha mostly reorders a selector
    against itself. Candidates not evaluated are listed in ``AutoChoice.skipped``.

    Candidates within ``tie_tolerance`` of the best accuracy count as tied; among them the lowest
    ``simplicity`` wins (a plain ``random`` pick), else the best accuracy, then the earliest in ``candidates``.
    So ``auto`` keeps the random baseline unless the best candidate beats it by more than the tolerance, and
    then takes the best measured candidate. The validation NLL (``CandidateResult.val_nll``) is recorded, not
    ranked on: breaking equal accuracies by it was measured on the digits pair (90 validation images, the top
    step shared in 4 of 12 runs) and changed 2 of 12 choices, both for slightly worse students (-0.03 point in
    the mean). ``None`` (the default) means
    ``tie_se`` standard errors of the best accuracy, at least one validation image: the "one-standard-error
    rule". A validation split resolves differences of about its SE only (100 images at 70 %: 4.6 points; 5,000
    images: 0.65), and the best of ~26 proxies is the best partly by luck (``PredictedAccuracy.optimism_bound``);
    so ``auto`` departs from a random pick only when the validation split can tell them apart. Measured on the
    harness's pair B (100 validation images): with a one-image tolerance ``auto`` chose entropy + Safety-Net at
    keep 0.5 %, 3.7 points under random on the test split.
    The price is up to ``tie_se`` SE of expected accuracy when a complex candidate truly is that much better.
    ``tie_se=0`` (or ``tie_tolerance=1 / n_val``) is the plain "best, ties within one image" rule.
    """
    if not candidates:
        raise ValueError("no candidates to choose from: the score table supports none (see candidate_grid)")
    if len({c.name for c in candidates}) != len(candidates):
        raise ValueError(f"candidate names must be unique, got {[c.name for c in candidates]}")
    by_position = _evaluate_staged(candidates, evaluate, refine_top)
    positions = sorted(by_position)
    results = [by_position[i] for i in positions]
    evaluated = [candidates[i] for i in positions]
    best = max(range(len(results)), key=lambda i: (results[i].val_acc, -evaluated[i].simplicity, -i))
    if not tie_se >= 0:
        raise ValueError(f"tie_se must be >= 0, got {tie_se!r}")
    top = results[best]
    noise = max(1 / top.n_val, tie_se * standard_error(top.val_acc, top.n_val))
    tol = noise if tie_tolerance is None else float(tie_tolerance)
    if not tol >= 0:
        raise ValueError(f"tie_tolerance must be >= 0 or None (tie_se standard errors), got {tie_tolerance!r}")
    # 1e-9: accuracies are counts / n_val, and "one image behind" must not hinge on how 0.701 - 0.001 rounds
    tied = [i for i, r in enumerate(results) if r.val_acc >= results[best].val_acc - tol - 1e-9]
    win = min(tied, key=lambda i: (evaluated[i].simplicity, -results[i].val_acc, i))
    order = sorted(range(len(results)), key=lambda i: (-results[i].val_acc, evaluated[i].simplicity, i))
    table = [_row(evaluated[i], results[i], chosen=i == win) for i in order]
    skipped = [c.name for i, c in enumerate(candidates) if i not in by_position]
    return AutoChoice(table, evaluated[win], results[win], _predict(results, win), tol, skipped)


def _row(c: Candidate, r: CandidateResult, chosen: bool) -> dict:
    return {
        "candidate": c.name,
        "selector": c.config.selector,
        "safety_net": c.config.safety_net,
        "alpha": c.config.alpha if c.config.safety_net else None,
        "val_acc": r.val_acc,
        "val_acc_se": standard_error(r.val_acc, r.n_val),
        "val_nll": None if math.isnan(r.val_nll) else r.val_nll,
        "n_val": r.n_val,
        "n_kept": r.n_kept,
        "payload_bytes": r.payload_bytes,
        "wall_s": r.wall_s,
        "proxy_epochs": r.proxy_epochs,
        "chosen": chosen,
    }


def _predict(results: list[CandidateResult], win: int) -> PredictedAccuracy:
    r = results[win]
    se = standard_error(r.val_acc, r.n_val)
    others = [x.val_acc for i, x in enumerate(results) if i != win]
    return PredictedAccuracy(
        value=r.val_acc,
        se=se,
        ci95=wilson_interval(r.val_acc, r.n_val),
        n_val=r.n_val,
        n_candidates=len(results),
        optimism_bound=_curse_se(r.val_acc, r.n_val) * _expected_max_normal(len(results)),
        runner_up_gap=r.val_acc - max(others) if others else 0.0,
        epochs=r.proxy_epochs,
    )
