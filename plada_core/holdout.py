"""A stratified validation split of the target training set, for measuring selectors before publishing.

The publisher holds the labelled target train split; the client's test split stays unseen. To choose a selector
by measurement (``plada_core.auto_selection``) the publisher trains proxy students on candidate payloads and
scores them on images none of them trained on: this split. Hold it out *before* training the teacher and building
the target bank (``plada_core.relevance``): a bank that contains the validation images lets the kNN selectors
pick pool images next to exactly those images, and their validation accuracy would overstate what a client sees.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["absent_classes", "stratified_holdout"]

_FIXED = (
    "pick a fixed selector instead of `--selector auto` (it publishes without a validation split, so without a "
    "predicted accuracy)"
)


def _check_args(labels: np.ndarray, fraction: float, min_per_class: int, n_classes: int | None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got {labels.min()} at position {int(labels.argmin())}")
    if not 0 < fraction < 1:  # also rejects NaN
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    if isinstance(min_per_class, bool) or not isinstance(min_per_class, numbers.Integral) or min_per_class < 1:
        raise ValueError(f"min_per_class must be an int >= 1, got {min_per_class!r}")
    if n_classes is not None and len(labels) and labels.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got {labels.max()} at position {int(labels.argmax())}")
    return labels.astype(np.int64)


def absent_classes(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """The class ids in ``[0, n_classes)`` that no label takes, ascending: classes a split cannot teach (labels
    that start at 1 leave class 0 empty; a named class may have no image)."""
    return np.flatnonzero(np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)[:n_classes] == 0)


def stratified_holdout(
    labels: np.ndarray,
    fraction: float = 0.1,
    min_per_class: int = 5,
    seed: int = 0,
    n_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted int64 ``(train_positions, val_positions)`` of ``labels``, disjoint and together covering every row.

    Each class ``c`` with ``n_c`` images gives ``max(min_per_class, round(fraction * n_c))`` of them to
    validation, never so many that fewer than ``min_per_class`` stay for training: both sides need every class
    (a proxy student missing a class cannot be judged on it, and a validation set missing one cannot see what a
    selector does to it). Rounding is Python's (halves to even), as in ``selection.resolve_k``. Which images go
    is a seeded permutation per class (``np.random.default_rng(seed)``, classes in ascending order), so a split
    is a pure function of its arguments.

    A class with at least one but fewer than ``2 * min_per_class`` images raises ValueError naming it. A class
    with no image at all is no part of the split (``absent_classes``: nothing can teach or validate it; the
    caller reports it). Labels of ``n_classes`` or more are rejected.

    Why the defaults: a validation accuracy ``p`` over ``n_val`` images has standard error
    ``sqrt(p * (1 - p) / n_val)``, at most ``0.5 / sqrt(n_val)``. Selectors differ by one to a few points, so
    the split must resolve about one point: 10 % of CIFAR-10's 50,000 images is 5,000, a standard error of at
    most 0.7 points (0.65 at p = 0.7), while the teacher keeps 90 % of its data. Below ~1,000 validation images
    (SE up to 1.6 points) a measured choice is mostly noise. ``min_per_class = 5`` keeps every class on both
    sides even for tiny or very imbalanced tasks, without claiming that 5 images measure a class.
    """
    labels = _check_args(labels, fraction, min_per_class, n_classes)
    counts = np.bincount(labels, minlength=n_classes or 0)
    present = np.flatnonzero(counts)
    for c in present:
        if counts[c] < 2 * min_per_class:
            fix = f"lower `val_min_per_class` to {counts[c] // 2} or less, or {_FIXED}" if counts[c] >= 2 else _FIXED
            raise ValueError(
                f"class {c} has {counts[c]} images, fewer than the {2 * min_per_class} a validation split needs "
                f"(min_per_class={min_per_class} for validation and as many for training): {fix}"
            )
    rng = np.random.default_rng(seed)
    by_class = np.split(np.argsort(labels, kind="stable"), np.cumsum(counts)[:-1]) if len(labels) else []
    val = []
    for c in present:
        members = by_class[c]
        n_val = min(max(min_per_class, int(round(fraction * counts[c]))), counts[c] - min_per_class)
        val.append(members[rng.permutation(len(members))[:n_val]])
    val_positions = np.sort(np.concatenate(val)) if val else np.empty(0, np.int64)
    is_val = np.zeros(len(labels), dtype=bool)
    is_val[val_positions] = True
    return np.flatnonzero(~is_val).astype(np.int64), val_positions.astype(np.int64)
