"""Image bytes to arrays and back, and arrays to model inputs, identically for target and reference images.

``decode_image`` is the one decoder of stored image bytes (pool shards, source files) and ``encode_png`` the one
encoder of arrays; both are pure, so the storage layer (``plada_core.io``) and the algorithm share them.

The teacher is trained on target images and then scores reference images; any difference in how the two
are preprocessed becomes a domain gap the selection pays for. So there is exactly one preprocessing
function, driven by one frozen config that is saved with the teacher checkpoint.
"""

from __future__ import annotations

import io
from typing import Annotated, Callable, Literal

import numpy as np
from PIL import Image
from pydantic import AfterValidator, ConfigDict, Field
from pydantic.dataclasses import dataclass

__all__ = [
    "CROPS",
    "IMAGE_MAGIC",
    "PreprocessConfig",
    "as_png_or_jpg",
    "decode_image",
    "encode_png",
    "preprocess",
    "preprocess_batch",
    "sniff_format",
]

# What every PNG / JPEG starts with. Checking it costs nanoseconds, not a decode, and catches garbage bytes.
IMAGE_MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "jpg": b"\xff\xd8\xff"}
# Modes that hold one channel; everything else (RGB, RGBA, P, CMYK, YCbCr …) decodes to RGB.
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG of a uint8 HxW (mode "L") or HxWx3 (mode "RGB") array."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """uint8 HxW for single-channel images (16-bit and float ones are clipped to 0..255), HxWx3 otherwise.

    Alpha is dropped and palettes are expanded. Raises ValueError for bytes Pillow cannot decode, including
    truncated files, so callers can count bad images instead of crashing.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode = "L" if img.mode in _GRAY_MODES else "RGB"
            return np.array(img if img.mode == mode else img.convert(mode))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"undecodable image ({len(data)} bytes, starting {bytes(data[:8])!r}): {exc}") from exc


def sniff_format(data: bytes) -> str | None:
    """``"png"`` or ``"jpg"`` from the leading bytes, None for any other format."""
    if data.startswith(IMAGE_MAGIC["png"]):
        return "png"
    if data.startswith(IMAGE_MAGIC["jpg"]):
        return "jpg"
    return None


def as_png_or_jpg(data: bytes, where: Callable[[], str]) -> tuple[bytes, str]:
    """JPEG and PNG pass through byte for byte; anything else is decoded and re-encoded as PNG.

    ``where`` builds the error context only when needed (it is called at most once per bad image).
    """
    ext = sniff_format(data)
    if ext is not None:
        return data, ext
    try:
        return encode_png(decode_image(data)), "png"
    except ValueError as exc:
        raise ValueError(f"{where()}: {exc}") from exc


def _known_crop(crop: str) -> str:
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {sorted(CROPS)}, got {crop!r}")
    return crop


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class PreprocessConfig:
    """How every image becomes a ``channels x image_size x image_size`` float array in [0, 1].

    ``crop``: ``"none"`` resizes the whole frame; ``"content"`` first crops to the bounding box of pixels
    brighter than 25 % of the image maximum, padded to a square. Content cropping puts objects on dark
    backgrounds (digits, silhouettes, sketches) at the same scale whatever their margin in the source
    (MNIST centres digits in a 20 px box inside 28 px; sklearn digits fill their 8 px frame). Leave it off
    for natural photos.
    """

    image_size: Annotated[int, Field(ge=4, le=1024, description="Side of the square model input, in pixels.")] = 16
    channels: Annotated[Literal[1, 3], Field(description="1 = grayscale, 3 = RGB.")] = 1
    crop: Annotated[
        str,
        AfterValidator(_known_crop),
        Field(
            description="'content' crops to the object's bounding box first (objects on dark backgrounds).",
            json_schema_extra=lambda schema: schema.update(enum=list(CROPS)),  # the registry, read when asked
        ),
    ] = "none"


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


def preprocess_batch(images, cfg: PreprocessConfig, n: int | None = None) -> np.ndarray:
    """Stack :func:`preprocess` over images into an ``NxCxSxS`` float32 array. ``images`` is a sequence, or any
    iterable of ``n`` images (a stream of decoded images: only the preprocessed ones are held); a stream of another
    length raises ValueError."""
    n = len(images) if n is None else n
    out = np.empty((n, cfg.channels, cfg.image_size, cfg.image_size), np.float32)
    count = 0
    for count, img in enumerate(images, start=1):
        if count > n:
            raise ValueError(f"more than the {n} images expected")
        out[count - 1] = preprocess(img, cfg)
    if count != n:
        raise ValueError(f"{count} images, {n} expected")
    return out
