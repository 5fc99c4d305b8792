"""Decoded images → model-ready tensors (the same path for target splits and selected pool images)."""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from plada_core.images import PreprocessConfig, preprocess_batch

__all__ = ["check_label_range", "labelled_tensors", "selected_tensors", "task_labels"]


def check_label_range(labels: np.ndarray, n_classes: int, where: str) -> None:
    """Raise ValueError naming ``where`` when a label lies outside the task's classes ``[0, n_classes)``: a test
    split of another task, or labelled another way, would otherwise just score its images as errors."""
    labels = np.asarray(labels)
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)]
        raise ValueError(f"{where}: {len(bad)} of {len(labels)} labels lie outside the task's {n_classes} classes "
                         f"(0..{n_classes - 1}), e.g. {sorted(set(bad.tolist()))[:5]}: give a split of the same "
                         "task, labelled the same way as its train split")  # fmt: skip


def _numbered(names: Sequence[str]) -> bool:
    """Whether ``names`` are a source's default names, the class ids themselves ("0", "1", ...)."""
    return list(names) == [str(i) for i in range(len(names))]


def task_labels(labels: np.ndarray, split_names: Sequence[str], task_names: Sequence[str], where: str) -> np.ndarray:
    """``labels`` of a split as class ids of the task whose classes are ``task_names``.

    Where both name their classes and the names differ (an image folder lacking one class numbers the others
    differently; another order), labels are mapped by name, and a class the task does not have raises, naming
    it. Where either side has only numbered classes (no names), the ids are the labels; they must lie in the
    task's classes (``check_label_range``)."""
    labels = np.asarray(labels, dtype=np.int64)
    split_names, task_names = [str(n) for n in split_names], [str(n) for n in task_names]
    if split_names != task_names and not _numbered(split_names) and not _numbered(task_names):
        position = {name: i for i, name in enumerate(task_names)}
        unknown = sorted({split_names[c] for c in np.unique(labels) if split_names[c] not in position})
        if unknown:
            raise ValueError(f"{where}: classes {unknown[:5]} are not among the task's {len(task_names)} classes "
                             f"({task_names[:10]}{' ...' if len(task_names) > 10 else ''}): give a split of the "
                             "same task")  # fmt: skip
        labels = np.array([position.get(n, -1) for n in split_names], dtype=np.int64)[labels]
    check_label_range(labels, len(task_names), where)
    return labels


def labelled_tensors(images: Iterable[np.ndarray], labels: np.ndarray, cfg: PreprocessConfig):
    """(x, y) tensors from uint8 images (a sequence, or a stream of one image per label: only the preprocessed
    tensor is held then) and integer labels."""
    if hasattr(images, "__len__") and len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    x = torch.from_numpy(preprocess_batch(images, cfg, n=len(labels)))
    return x, torch.as_tensor(np.asarray(labels), dtype=torch.long)


def selected_tensors(
    encoded: dict[int, bytes],
    indices: np.ndarray,
    labels: np.ndarray,
    decode: Callable[[bytes], np.ndarray],
    cfg: PreprocessConfig,
):
    """(x, y, missing) for the payload's (index, label) pairs; ``missing`` lists indices that were absent
    from the local pool or failed to decode, so the caller can count and report them."""
    images, kept_labels, missing = [], [], []
    for index, label in zip(indices.tolist(), labels.tolist()):
        data = encoded.get(index)
        if data is None:
            missing.append(index)
            continue
        try:
            image = decode(data)
        except ValueError:
            missing.append(index)
            continue
        images.append(image)
        kept_labels.append(label)
    x, y = labelled_tensors(images, np.asarray(kept_labels, np.int64), cfg)
    return x, y, missing
