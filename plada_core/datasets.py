"""Decoded images → model-ready tensors (the same path for target splits and selected pool images)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from plada_core.images import PreprocessConfig, preprocess_batch

__all__ = ["labelled_tensors", "selected_tensors"]


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
