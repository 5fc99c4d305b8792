"""``--teacher-model auto``: the registered model that suits what the target's images look like.

A publisher who names no model should not get a 16 px grey CNN for colour photos. Measured on this project's
machines (README "Models picked from the target"; ``python -m benchmarks.models``; 30 epochs, seed 0, single runs,
test SE about 1 point):

=================================  ==========================  ==========================
target (train / test images)       ``plada_cnn`` 16 px grey    ``plada_effnet_lite0_ml``
=================================  ==========================  ==========================
CIFAR-10, colour 32 px (5k / 2k)   0.534                       **0.623** (head only)
Fashion-MNIST, grey 28 px (5k/2k)  0.848                       0.852
sklearn digits, grey 8 px (898)    **0.986**                   0.970
=================================  ==========================  ==========================

So colour images get the frozen ImageNet backbone with multi-level features (its own 32 px RGB input), and
grey ones the small CNN trained from scratch: as good or better there, and its scoring pass over a large pool
costs a fraction of the backbone's. The look is taken from the first images of the target train split
(``plada_core.io.sources.first_images``); ``look_at`` and ``auto_model`` are pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

__all__ = ["AUTO_MODEL", "COLOUR_MODEL", "GREY_MODEL", "ImageLook", "auto_model", "look_at"]

AUTO_MODEL = "auto"
COLOUR_MODEL = "plada_effnet_lite0_ml"
GREY_MODEL = "plada_cnn"
LOOK_IMAGES = 128  # images looked at: enough to tell colour from grey, a fraction of a second to decode
# Mean over an image's pixels of max(R, G, B) - min(R, G, B), in 0..255 levels, from which it counts as colour:
# a grey picture stored as RGB JPEG spreads 0-3 levels from compression alone, a colour photo tens.
COLOUR_SPREAD = 6.0


@dataclass(frozen=True)
class ImageLook:
    """What a few images of a split look like: how many were looked at, how many are colour, their median
    smaller side in pixels."""

    n_images: int
    n_colour: int
    median_side: float

    @property
    def colour(self) -> bool:
        """At least half of the images looked at are colour."""
        return self.n_images > 0 and 2 * self.n_colour >= self.n_images

    def describe(self) -> str:
        return (f"{self.n_colour} of the first {self.n_images} target train images are colour, median side "
                f"{self.median_side:g} px")  # fmt: skip


def _is_colour(image: np.ndarray) -> bool:
    if image.ndim != 3 or image.shape[-1] < 3:
        return False
    rgb = image[..., :3].astype(np.int16)
    return float((rgb.max(axis=-1) - rgb.min(axis=-1)).mean()) >= COLOUR_SPREAD


def look_at(images: Iterable[np.ndarray]) -> ImageLook:
    """The ``ImageLook`` of decoded uint8 images (HxW grey or HxWx3), a sequence or a stream (each image is
    looked at once and let go: 128 phone photos would be gigabytes held together)."""
    sides, n_colour = [], 0
    for img in images:
        sides.append(min(img.shape[:2]))
        n_colour += _is_colour(img)
    if not sides:
        return ImageLook(0, 0, 0.0)
    return ImageLook(len(sides), n_colour, float(np.median(sides)))


def auto_model(look: ImageLook) -> tuple[str, str]:
    """(model name, the reason in words) for a target that looks like ``look``."""
    if look.n_images == 0:
        raise ValueError("--teacher-model auto looks at the target train split's images, and it has none: "
                         "name a model (--teacher-model plada_cnn, or plada_effnet_lite0_ml for photos)")  # fmt: skip
    if look.colour:
        return COLOUR_MODEL, f"{look.describe()}: ImageNet features ({COLOUR_MODEL}, 32 px RGB)"
    return GREY_MODEL, f"{look.describe()}: a small CNN trained from scratch ({GREY_MODEL}, 16 px grey)"
