"""Turning decoded images into model inputs, identically for target and reference images.

The teacher is trained on target images and then scores reference images; any difference in how the two
are preprocessed becomes a domain gap the selection pays for. So there is exactly one preprocessing
function, driven by one frozen config that is saved with the teacher checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["CROPS", "PreprocessConfig", "preprocess", "preprocess_batch"]


@dataclass(frozen=True)
class PreprocessConfig:
    """How every image becomes a ``channels x image_size x image_size`` float array in [0, 1].

    ``crop``: ``"none"`` resizes the whole frame; ``"content"`` first crops to the bounding box of pixels
    brighter than 25 % of the image maximum, padded to a square. Content cropping puts objects on dark
    backgrounds (digits, silhouettes, sketches) at the same scale whatever their margin in the source
    (MNIST centres digits in a 20 px box inside 28 px; sklearn digits fill their 8 px frame). Leave it off
    for natural photos.
    """

    image_size: int = 16
    channels: int = 1
    crop: str = "none"

    def __post_init__(self) -> None:
        if not 4 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [4, 1024], got {self.image_size!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels!r}")
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {sorted(CROPS)}, got {self.crop!r}")


def _no_crop(img: np.ndarray) -> np.ndarray:
    return img


def _content_crop(img: np.ndarray) -> np.ndarray:
    gray = img if img.ndim == 2 else img.mean(axis=2)
    mask = gray > 0.25 * max(float(gray.max()), 1.0)
    if not mask.any():
        return img
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = max(box.shape[0], box.shape[1])
    pad_h, pad_w = side - box.shape[0], side - box.shape[1]
    pads = [(pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)] + [(0, 0)] * (img.ndim - 2)
    return np.pad(box, pads)


CROPS = {"none": _no_crop, "content": _content_crop}


def _to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    if img.ndim == 2:
        return img[None] if channels == 1 else np.repeat(img[None], 3, axis=0)
    chw = img.transpose(2, 0, 1)
    if channels == 3:
        return chw
    # ITU-R 601 luma, the same weights PIL uses for mode "L".
    return (0.299 * chw[0] + 0.587 * chw[1] + 0.114 * chw[2])[None]


def preprocess(img: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """uint8 ``HxW`` or ``HxWx3`` image → float32 ``CxSxS`` array in [0, 1]."""
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 HxW or HxWx3 image, got dtype {img.dtype} shape {img.shape}")
    img = CROPS[cfg.crop](img)
    if img.shape[0] != cfg.image_size or img.shape[1] != cfg.image_size:
        mode = "L" if img.ndim == 2 else "RGB"
        # Box filter when shrinking averages every source pixel (no aliasing of thin strokes).
        resample = Image.Resampling.BOX if img.shape[0] > cfg.image_size else Image.Resampling.BILINEAR
        img = np.asarray(Image.fromarray(img, mode).resize((cfg.image_size, cfg.image_size), resample))
    return _to_channels(img.astype(np.float32) / 255.0, cfg.channels).astype(np.float32)


def preprocess_batch(images, cfg: PreprocessConfig) -> np.ndarray:
    """Stack :func:`preprocess` over a sequence of images into an ``NxCxSxS`` float32 array."""
    out = np.empty((len(images), cfg.channels, cfg.image_size, cfg.image_size), np.float32)
    for i, img in enumerate(images):
        out[i] = preprocess(img, cfg)
    return out
