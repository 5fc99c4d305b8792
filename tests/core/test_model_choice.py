"""``auto`` models: colour targets get the ImageNet backbone, grey ones the small CNN."""

from __future__ import annotations

import numpy as np
import pytest

from plada_core.model_choice import COLOUR_MODEL, GREY_MODEL, ImageLook, auto_model, look_at


def _noisy_rgb(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A grey picture stored as RGB with a few levels of noise per channel (a scan, a lossy round trip)."""
    noise = rng.integers(-2, 3, (*grey.shape, 3))
    return np.clip(grey[..., None].astype(int) + noise, 0, 255).astype(np.uint8)


def test_grey_pictures_stored_as_rgb_are_grey_and_photos_are_colour():
    rng = np.random.default_rng(0)
    grey = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(4)]
    as_rgb = [_noisy_rgb(g, rng) for g in grey]
    colour = [rng.integers(0, 256, (32, 40, 3), dtype=np.uint8) for _ in range(4)]
    assert look_at(grey) == ImageLook(4, 0, 28.0)
    assert look_at(as_rgb).n_colour == 0
    assert look_at(colour) == ImageLook(4, 4, 32.0)  # the smaller side


def test_half_colour_is_colour_and_the_rule_maps_looks_to_models():
    rng = np.random.default_rng(1)
    colour = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)] * 2
    grey = [np.full((8, 8), 7, np.uint8)] * 3
    assert not look_at(colour + grey).colour and look_at(colour + grey[:2]).colour
    name, reason = auto_model(look_at(colour + grey[:2]))
    assert name == COLOUR_MODEL and "2 of the first 4 target train images are colour" in reason
    assert auto_model(look_at(grey))[0] == GREY_MODEL


def test_nothing_to_look_at_names_the_fix():
    with pytest.raises(ValueError, match="has none: name a model"):
        auto_model(look_at([]))


def test_a_stream_of_images_is_looked_at_like_a_list():
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (8 + i, 8, 3), dtype=np.uint8) for i in range(3)] + [np.zeros((5, 6), np.uint8)]
    assert look_at(iter(images)) == look_at(images) == ImageLook(4, 3, 8.0)
    assert look_at(iter([])) == ImageLook(0, 0, 0.0)
