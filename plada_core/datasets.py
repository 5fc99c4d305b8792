"""Decoded images → model-ready tensors (the same path for target splits and selected pool images)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from plada_core.images import PreprocessConfig, preprocess_batch

__all__ = ["check_label_range", "labelled_tensors", "selected_tensors"]


def check_label_range(labels: np.ndarray, n_classes: int, where: str) -> None:
    """Raise ValueError naming ``where`` when a label lies outside the task's classes ``[0, n_classes)``: a test
    split of another task, or labelled another way, would otherwise just score its images as errors."""
    labels = np.asarray(labels)
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)]
        raise ValueError(f"{where}: {len(bad)} of {len(labels)} labels lie outside the task's {n_classes} classes "
                         f"(0..{n_classes - 1}), e.g. {sorted(set(bad.tolist()))[:5]}: give a split of the same "
                         "task, labelled the same way as its train split")  # fmt: skip


def labelled_tensors(images: Sequence[np.ndarray], labels: np.ndarray, cfg: PreprocessConfig):
    """(x, y) tensors from uint8 images and integer labels."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    x = torch.from_numpy(preprocess_batch(images, cfg))
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
