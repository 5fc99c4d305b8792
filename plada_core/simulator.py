"""An ImageNet-21K-shaped selection simulator, for payload work at the real scale.

The real pool (14.2 M images) cannot live on these machines, and payload size depends almost entirely on
*where* the kept images sit in the canonical order and *how* their labels repeat. This module draws
selections with that structure, seeded and pure (no files, no global state), so codecs can be compared
at 1 %, 0.5 % and 0.1 % keep of a pool shaped like ImageNet-21K.

Assumptions, each a simplification of something real:

- **Layout.** The pool is stored synset by synset (the fall-2011 release is one tar per synset), so the
  canonical order is ``n_blocks`` contiguous class blocks; inside a block the order is unrelated to
  content (file ids), so a selection inside one block looks like independent coin flips.
- **Block sizes.** Ridnik et al. 2021 ("ImageNet-21K Pretraining for the Masses") report that dropping the
  synsets with fewer than 500 images keeps 11,221 of 21,841 classes and about 13 M of the 14.2 M images.
  So about half the blocks are "full" (500 to ~3,000 images, mean ~1,150) and half are a long tail
  (1 to 499, mean ~110). Both halves are drawn (gamma-like and log-normal), then scaled to exactly
  ``n_reference`` images.
- **Target task.** ``n_classes`` target classes; each has a few relevant blocks (1 + Poisson(1.5)),
  drawn size-weighted, because a natural target class (a bird species, an aircraft model) matches a
  handful of well-populated synsets. Blocks are not shared between classes.
- **Scores.** Selection keeps the highest relevance (the lowest energy). An image's relevance is
  ``block mean + N(0, 1)``. Every block has a background mean ``N(0, 0.8)``: in the demo run (a real
  teacher on a real pool) the block of an image explains 38 % of the variance of its energy, and
  0.8**2 / (1 + 0.8**2) = 0.39. Relevant blocks add ``3 * U(0.5, 1)``. With 100 classes about half of a
  1 % keep comes from relevant blocks and the rest from look-alike blocks (90 % relevant at 0.1 %), the way
  energy selection leaks onto synsets that resemble the target. Keeps are the top-k overall (no
  Safety-Net quota), so the keep fractions are nested.
- **Labels (teacher argmax).** Each block has a dominant predicted class and a purity: relevant blocks
  predict their own class with purity U(0.75, 0.98); other blocks predict a random class with purity
  U(0.3, 0.9), since a teacher labels look-alike images of one synset consistently. An impure label is,
  with probability 0.7, one of three fixed confusable classes of the dominant one, else uniform.
  Noise does not depend on the score (real teachers are cleaner on their most confident images, so
  this errs towards harder-to-code labels).

What it leaves out: near-duplicate images, Safety-Net quotas (they move a few images between classes,
not the clustering), and correlation between neighbouring synsets (WordNet order puts related synsets
close; ignoring it makes label coding slightly harder).

**Oracle floor** (:func:`oracle_bits`): what a coder that is *told* the hidden structure would pay per kept
image, so codecs can be judged against what is left to gain. It knows the block boundaries, each block's
dominant class and purity and the confusable-class table, and pays: the labels' ``-log2 P(label | block)``
under the exact label model above; ``log2 C(n_b, k_b)`` for which images of each touched block are kept
(they are exchangeable inside a block); and a plain code for which blocks are touched and how many images
each keeps (``log2 C(B, m) + sum log2(n_b + 1)``). The label and position terms are exact code lengths
under the true model, given what the oracle is told; the block term is a plain two-part code, not a bound
(an oracle that also knew each block's relevance mean could spend somewhat less there). A real codec is
told nothing: it has to find the boundaries and learn every parameter from the data itself, so it will
usually pay more than this floor; but the block term is no bound, so the floor is a yardstick, not a limit.

**Entropy bound** (:func:`entropy_bound`): a limit. The entropy of the selection and its labels given every
hidden parameter (block relevance means included): no codec pays less on average, whatever it is told.

**Prior bound** (:func:`prior_bound`): the tighter limit. The entropy given only the task's structure (block
boundaries, the target classes' own blocks, the confusable table), every block's own parameters integrated out
under the priors above. A codec that is not told the parameters has to learn them from the data; this bound
charges the least that learning can cost, so it sits above the entropy bound and is still a bound.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from plada_core.selection import resolve_k

__all__ = [
    "IMAGENET21K_IMAGES",
    "IMAGENET21K_SYNSETS",
    "OracleBits",
    "PoolLayout",
    "SimulatedSelection",
    "entropy_bound",
    "oracle_bits",
    "prior_bound",
    "simulate_layout",
    "simulate_selections",
]

IMAGENET21K_IMAGES = 14_197_122  # fall-2011 release
IMAGENET21K_SYNSETS = 21_841
_FULL_SHARE = 11_221 / 21_841  # synsets with >= 500 images (Ridnik et al. 2021)
_BACKGROUND_SD = 0.8  # block share of energy variance 0.39, as measured on the demo run
_RELEVANT_BOOST = 3.0
_N_CONFUSABLE = 3
_CONFUSABLE_SHARE = 0.7


@dataclass(frozen=True, eq=False)
class PoolLayout:
    """Contiguous class blocks: block ``b`` holds pool indices ``[starts[b], starts[b] + sizes[b])``."""

    starts: np.ndarray
    sizes: np.ndarray

    @property
    def n_reference(self) -> int:
        return int(self.starts[-1] + self.sizes[-1])


@dataclass(frozen=True, eq=False)
class SimulatedSelection:
    """One simulated publish: sorted ``indices`` (int64) and their ``labels`` (int32).

    ``seed`` and ``layout`` are what it was drawn with (:func:`oracle_bits` redraws the hidden task from them).
    """

    indices: np.ndarray
    labels: np.ndarray
    n_reference: int
    n_classes: int
    keep: float
    seed: int = 0
    layout: PoolLayout | None = None

    @property
    def k(self) -> int:
        return int(self.indices.size)


def _check_int(value, name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")


def _raw_block_sizes(rng: np.random.Generator, n_blocks: int) -> np.ndarray:
    """Unscaled sizes: a "full" half around 1,150 images and a long tail below 500."""
    full = rng.random(n_blocks) < _FULL_SHARE
    big = 500 + rng.gamma(shape=2.0, scale=325.0, size=n_blocks)  # mean 1,150, rarely above 3,000
    small = np.clip(rng.lognormal(mean=np.log(60), sigma=1.1, size=n_blocks), 1, 499)
    return np.where(full, big, small)


def simulate_layout(
    seed: int = 0, *, n_reference: int = IMAGENET21K_IMAGES, n_blocks: int = IMAGENET21K_SYNSETS
) -> PoolLayout:
    """Block sizes summing to exactly ``n_reference``, every block non-empty."""
    _check_int(seed, "seed", 0, 2**63)
    _check_int(n_reference, "n_reference", 1, 2**62)
    _check_int(n_blocks, "n_blocks", 1, n_reference)
    rng = np.random.default_rng([seed, 0])
    raw = _raw_block_sizes(rng, n_blocks)
    # one image per block first, the rest by largest remainder, so the total is exact and no block is empty
    ideal = raw * ((n_reference - n_blocks) / raw.sum())
    sizes = 1 + np.floor(ideal).astype(np.int64)
    short = n_reference - int(sizes.sum())
    sizes[np.argsort(np.floor(ideal) - ideal, kind="stable")[:short]] += 1
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    return PoolLayout(starts=starts, sizes=sizes)


@dataclass(frozen=True, eq=False)
class _Task:
    block_mean: np.ndarray  # relevance mean per block
    dominant: np.ndarray  # teacher's dominant predicted class per block
    purity: np.ndarray  # P(label == dominant) per block
    confusable: np.ndarray  # (n_classes, _N_CONFUSABLE) look-alike classes
    relevant: np.ndarray  # bool per block: one of the target classes' own blocks


def _draw_task(rng: np.random.Generator, layout: PoolLayout, n_classes: int) -> _Task:
    n_blocks = layout.sizes.size
    block_mean = rng.normal(0.0, _BACKGROUND_SD, n_blocks)
    dominant = rng.integers(0, n_classes, n_blocks)
    purity = rng.uniform(0.3, 0.9, n_blocks)
    per_class = 1 + rng.poisson(1.5, n_classes)
    n_relevant = min(int(per_class.sum()), n_blocks)
    relevant = rng.choice(n_blocks, n_relevant, replace=False, p=layout.sizes / layout.sizes.sum())
    owner = np.repeat(np.arange(n_classes), per_class)[:n_relevant]
    block_mean[relevant] += _RELEVANT_BOOST * rng.uniform(0.5, 1.0, n_relevant)
    dominant[relevant] = owner
    purity[relevant] = rng.uniform(0.75, 0.98, n_relevant)
    confusable = rng.integers(0, n_classes, (n_classes, _N_CONFUSABLE))
    is_relevant = np.zeros(n_blocks, dtype=bool)
    is_relevant[relevant] = True
    return _Task(block_mean, dominant, purity, confusable, is_relevant)


def _task(seed: int, layout: PoolLayout, n_classes: int) -> tuple[_Task, np.random.Generator]:
    """The hidden task of a seed, and the generator, which goes on to draw the scores and labels."""
    rng = np.random.default_rng([seed, 1])
    return _draw_task(rng, layout, n_classes), rng


def _labels(rng: np.random.Generator, task: _Task, blocks: np.ndarray, n_classes: int) -> np.ndarray:
    dominant = task.dominant[blocks]
    noisy = rng.random(blocks.size) >= task.purity[blocks]
    confused = task.confusable[dominant, rng.integers(0, _N_CONFUSABLE, blocks.size)]
    uniform = rng.integers(0, n_classes, blocks.size)
    noise = np.where(rng.random(blocks.size) < _CONFUSABLE_SHARE, confused, uniform)
    return np.where(noisy, noise, dominant).astype(np.int32)


def simulate_selections(
    keeps: tuple[float, ...] = (0.01, 0.005, 0.001),
    *,
    n_classes: int = 100,
    seed: int = 0,
    layout: PoolLayout | None = None,
) -> dict[float, SimulatedSelection]:
    """Nested top-k selections of one simulated task, one per keep fraction in (0, 1].

    Draws one relevance score per pool image (float32, ~57 MB at full scale, under a second), keeps the
    top ``resolve_k(keep, N)`` (``round(keep * N)``, at least 1) and labels them. The default layout is
    the full ImageNet-21K shape; pass a small one (``simulate_layout(n_reference=...)``) for fast tests.
    """
    if not keeps or any(not isinstance(keep, float) or not 0 < keep <= 1 for keep in keeps):
        raise ValueError(f"keeps must be float fractions in (0, 1], got {keeps!r}")
    _check_int(n_classes, "n_classes", 1, 1_000_000)
    _check_int(seed, "seed", 0, 2**63)
    layout = simulate_layout(seed) if layout is None else layout
    n = layout.n_reference
    task, rng = _task(seed, layout, n_classes)
    scores = rng.standard_normal(n, dtype=np.float32)
    scores += np.repeat(task.block_mean.astype(np.float32), layout.sizes)
    k_max = max(resolve_k(keep, n) for keep in keeps)
    top = np.argpartition(-scores, k_max - 1)[:k_max] if k_max < n else np.arange(n)
    ranked = top[np.lexsort((top, -scores[top]))]  # best first, ties by index: nested and deterministic
    blocks = np.searchsorted(layout.starts, ranked, side="right") - 1
    labels = _labels(rng, task, blocks, n_classes)  # drawn once for the largest keep: nested keeps agree
    selections = {}
    for keep in keeps:
        k = resolve_k(keep, n)
        order = np.argsort(ranked[:k], kind="stable")
        selections[keep] = SimulatedSelection(
            ranked[:k][order].astype(np.int64), labels[:k][order], n, n_classes, keep, seed=seed, layout=layout
        )
    return selections


@dataclass(frozen=True)
class OracleBits:
    """Bits per kept image of the oracle floor (module docstring): labels, positions in blocks, block choice."""

    labels: float
    positions: float
    blocks: float

    @property
    def total(self) -> float:
        return self.labels + self.positions + self.blocks


def _log2_binomial(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    lgamma = np.vectorize(math.lgamma, otypes=[float])
    return (lgamma(n + 1.0) - lgamma(k + 1.0) - lgamma(n - k + 1.0)) / math.log(2)


def _label_probabilities(
    labels: np.ndarray, dominant: np.ndarray, purity: np.ndarray, confusable: np.ndarray, n_classes: int
) -> np.ndarray:
    """P(label) under the simulator's label model, given each item's block ``dominant`` class and ``purity``."""
    confused = (confusable[dominant] == labels[:, None]).sum(axis=1) / confusable.shape[1]
    noise = _CONFUSABLE_SHARE * confused + (1 - _CONFUSABLE_SHARE) / n_classes
    return purity * (labels == dominant) + (1 - purity) * noise


def oracle_bits(selection: SimulatedSelection) -> OracleBits:
    """The oracle floor of one simulated selection, in bits per kept image (see the module docstring).

    Pure: the hidden task is redrawn from the selection's seed and layout, nothing is stored.
    """
    layout, task, blocks = _hidden_task(selection, "oracle_bits")
    if selection.k == 0:
        return OracleBits(0.0, 0.0, 0.0)
    touched, kept = np.unique(blocks, return_counts=True)
    sizes = layout.sizes[touched]
    which = _log2_binomial(np.array([layout.sizes.size]), np.array([touched.size]))[0]
    k = selection.k
    return OracleBits(
        labels=_label_bits(selection, task, blocks) / k,
        positions=float(_log2_binomial(sizes, kept).sum()) / k,
        blocks=float(which + np.log2(sizes + 1.0).sum()) / k,
    )


def entropy_bound(selection: SimulatedSelection) -> float:
    """A lower bound on what any codec pays per kept image, on average: the entropy of the selection and its
    labels *given* every hidden parameter of the task (block boundaries and relevance means, dominant classes,
    purities, the confusable table).

    Unlike :func:`oracle_bits`, whose block term is a plain two-part code, this is a bound: a coder that does not
    know the parameters can only pay more, and no code beats the entropy on average. An image of block ``b`` is
    kept when its score ``mean_b + N(0, 1)`` clears the top-k threshold ``t``, so given ``t`` each is an
    independent coin with ``p_b = P(N(0, 1) > t - mean_b)`` and the positions cost ``sum_b n_b H2(p_b)`` bits;
    ``t`` is fitted so that the expected count is k (that the count is then exactly k is worth about 10 bits in
    all, which this ignores). The labels cost their exact ``-log2 P(label | block)`` under the label model.
    """
    layout, task, blocks = _hidden_task(selection, "entropy_bound")
    if selection.k == 0:
        return 0.0
    sizes, mean = layout.sizes.astype(np.float64), task.block_mean.astype(np.float64)
    kept_share = _kept_share(_threshold(sizes, mean, selection.k) - mean)
    position_bits = float((sizes * _binary_entropy(kept_share)).sum())
    return (position_bits + _label_bits(selection, task, blocks)) / selection.k


def prior_bound(selection: SimulatedSelection) -> float:
    """A lower bound on what any codec pays per kept image that, unlike :func:`entropy_bound`, includes the
    price of learning each block's parameters: the entropy of the selection and labels given only the task's
    *structure* (block boundaries, which blocks are the target classes' own and their classes, the confusable
    table, the threshold), with every block's own parameters (relevance mean, a background block's dominant
    class, purity) integrated out under the simulator's priors.

    Conditioning on more can only lower an entropy, so this is still a bound for a codec that is told less (or
    nothing); it exceeds :func:`entropy_bound` by what the data say about the per-block parameters, which a
    codec that is not told them has to pay for. Blocks are independent given the structure (the kept count
    is left free, as in :func:`entropy_bound`), so the bound is a sum over blocks of ``-log2 P(the block's
    kept positions and labels)``, each an integral over that block's prior. It is the code length of this
    draw: by the Kraft inequality a code beats it by ``c`` bits on a draw with probability at most ``2**-c``.
    """
    layout, task, blocks = _hidden_task(selection, "prior_bound")
    if selection.k == 0:
        return 0.0
    sizes, mean = layout.sizes.astype(np.float64), task.block_mean.astype(np.float64)
    threshold = _threshold(sizes, mean, selection.k)
    kept = np.bincount(blocks, minlength=sizes.size).astype(np.float64)
    position_bits = _prior_position_bits(sizes, kept, threshold, task.relevant)
    return (position_bits + _prior_label_bits(selection, task, blocks)) / selection.k


def _kept_share(margin) -> np.ndarray:
    """P(N(0, 1) > margin): the chance that an image clears a threshold ``margin`` above its block's mean."""
    return 0.5 * _erfc(np.asarray(margin, dtype=np.float64) / math.sqrt(2.0))


def _threshold(sizes: np.ndarray, mean: np.ndarray, k: int) -> float:
    """The score threshold at which blocks of these ``sizes`` and relevance ``mean`` keep k images on average."""
    lo, hi = float(mean.min()) - 40.0, float(mean.max()) + 40.0
    for _ in range(200):  # bisection: the expected count falls as the threshold rises
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if (sizes * _kept_share(mid - mean)).sum() > k else (lo, mid)
    return 0.5 * (lo + hi)


_MEAN_GRID = np.linspace(-6 * _BACKGROUND_SD, 6 * _BACKGROUND_SD + _RELEVANT_BOOST, 2401)
_BLOCK_CHUNK = 1024  # blocks per vectorised step: bounds memory at a few tens of MB


def _mean_log_priors() -> tuple[np.ndarray, np.ndarray]:
    """Log prior mass on ``_MEAN_GRID`` of a background block's relevance mean, and of a relevant block's."""
    step = _MEAN_GRID[1] - _MEAN_GRID[0]
    scale = _BACKGROUND_SD * math.sqrt(2 * math.pi)
    boosts = _RELEVANT_BOOST * (0.5 + 0.5 * (np.arange(400) + 0.5) / 400)  # midpoints of boost * U(0.5, 1)
    background = np.exp(-0.5 * (_MEAN_GRID / _BACKGROUND_SD) ** 2) / scale
    relevant = (np.exp(-0.5 * ((_MEAN_GRID[:, None] - boosts) / _BACKGROUND_SD) ** 2) / scale).mean(axis=1)
    with np.errstate(divide="ignore"):  # mass 0 far out on the grid: log 0 = -inf drops out of the sums
        return np.log(background * step), np.log(relevant * step)


def _prior_position_bits(sizes: np.ndarray, kept: np.ndarray, threshold: float, relevant: np.ndarray) -> float:
    """``-log2 P`` of each block's kept positions, its relevance mean integrated out (every block, kept or not)."""
    share = _kept_share(threshold - _MEAN_GRID)
    with np.errstate(divide="ignore"):
        log_in, log_out = np.log(share), np.log1p(-share)
    total = 0.0
    for is_relevant, log_prior in zip((False, True), _mean_log_priors()):
        rows = np.flatnonzero(relevant == is_relevant)
        for start in range(0, rows.size, _BLOCK_CHUNK):
            chunk = rows[start:start + _BLOCK_CHUNK]
            with np.errstate(invalid="ignore"):  # 0 * -inf where a grid point makes a count impossible
                loglik = kept[chunk, None] * log_in + (sizes[chunk] - kept[chunk])[:, None] * log_out
            total -= float(_logsumexp(np.nan_to_num(loglik, nan=0.0) + log_prior, axis=1).sum())
    return total / math.log(2)


def _purity_midpoints(low: float, high: float) -> np.ndarray:
    return low + (high - low) * (np.arange(120) + 0.5) / 120


def _prior_label_bits(selection: SimulatedSelection, task: _Task, blocks: np.ndarray) -> float:
    """``-log2 P`` of each touched block's labels, its purity (and a background block's dominant class) integrated out.

    A block with dominant class ``d`` and purity ``q`` labels an image ``d`` with probability
    ``q + (1 - q) noise_d(d)`` and any other ``l`` with ``(1 - q) noise_d(l)``, so its label counts suffice.
    """
    n_classes = selection.n_classes
    touched, row = np.unique(blocks, return_inverse=True)
    counts = np.bincount(row * n_classes + selection.labels, minlength=touched.size * n_classes)
    counts = counts.reshape(touched.size, n_classes).astype(np.float64)
    classes = np.arange(n_classes)
    confused = (task.confusable[:, None, :] == classes[None, :, None]).sum(axis=2) / _N_CONFUSABLE
    log_noise = np.log(_CONFUSABLE_SHARE * confused + (1 - _CONFUSABLE_SHARE) / n_classes)  # [dominant, label]
    self_noise = np.exp(np.diag(log_noise))
    all_noise = counts @ log_noise.T  # [block, dominant]: every label's log-probability as noise
    total = 0.0
    for is_relevant, purity in ((False, _purity_midpoints(0.3, 0.9)), (True, _purity_midpoints(0.75, 0.98))):
        rows = np.flatnonzero(task.relevant[touched] == is_relevant)
        for start in range(0, rows.size, _BLOCK_CHUNK):
            chunk = rows[start:start + _BLOCK_CHUNK]
            if is_relevant:  # a relevant block's dominant class is its target class: part of the structure
                dominant = task.dominant[touched[chunk]][:, None]
            else:
                dominant = np.broadcast_to(classes, (chunk.size, n_classes))
            own = np.take_along_axis(counts[chunk], dominant, axis=1)[..., None]
            size = counts[chunk].sum(axis=1)[:, None, None]
            others = np.take_along_axis(all_noise[chunk], dominant, axis=1) - own[..., 0] * np.log(self_noise[dominant])
            loglik = (own * np.log(purity + (1 - purity) * self_noise[dominant][..., None])
                      + (size - own) * np.log1p(-purity) + others[..., None])
            per_dominant = _logsumexp(loglik, axis=2) - math.log(purity.size)
            total -= float((_logsumexp(per_dominant, axis=1) - math.log(dominant.shape[1])).sum())
    return total / math.log(2)


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    peak = values.max(axis=axis, keepdims=True)
    return np.squeeze(peak, axis) + np.log(np.exp(values - peak).sum(axis=axis))


def _hidden_task(selection: SimulatedSelection, caller: str) -> tuple[PoolLayout, _Task, np.ndarray]:
    """The layout, the hidden task redrawn from the selection's seed, and each kept image's block."""
    if selection.layout is None:
        raise ValueError(f"{caller} needs a selection made by simulate_selections (it carries the layout)")
    layout = selection.layout
    task, _ = _task(selection.seed, layout, selection.n_classes)
    return layout, task, np.searchsorted(layout.starts, selection.indices, side="right") - 1


def _label_bits(selection: SimulatedSelection, task: _Task, blocks: np.ndarray) -> float:
    """``-log2 P(labels)`` under the simulator's exact label model, in bits (all kept images together)."""
    p = _label_probabilities(selection.labels, task.dominant[blocks], task.purity[blocks], task.confusable,
                             selection.n_classes)
    return float(-np.log2(p).sum())


_erfc = np.vectorize(math.erfc, otypes=[float])


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    """H2(p) in bits, 0 at p = 0 and p = 1."""
    p = np.clip(p, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.nan_to_num(h, nan=0.0)
