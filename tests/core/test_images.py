import numpy as np
import pytest

from plada_core.images import PreprocessConfig, preprocess


def test_resize_channels_and_range():
    img = np.full((28, 28), 255, np.uint8)
    out = preprocess(img, PreprocessConfig(image_size=8, channels=3))
    assert out.shape == (3, 8, 8) and out.dtype == np.float32 and np.allclose(out, 1.0)
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[..., 0] = 255
    gray = preprocess(rgb, PreprocessConfig(image_size=10, channels=1))
    assert gray.shape == (1, 10, 10) and np.allclose(gray, 0.299, atol=1e-3)


def test_content_crop_normalises_object_scale():
    small = np.zeros((28, 28), np.uint8)
    small[10:18, 10:18] = 255  # an 8 px square in a wide margin
    full = np.full((8, 8), 255, np.uint8)
    cfg = PreprocessConfig(image_size=8, channels=1, crop="content")
    assert np.allclose(preprocess(small, cfg), preprocess(full, cfg))


@pytest.mark.parametrize(
    "kwargs, match", [({"image_size": 2}, "image_size"), ({"channels": 2}, "channels"), ({"crop": "zoom"}, "crop")]
)
def test_bad_config_names_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PreprocessConfig(**kwargs)


def test_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        preprocess(np.zeros((4, 4), np.float32), PreprocessConfig(image_size=4))


def test_preprocess_batch_takes_a_stream_of_n_images_and_checks_the_count():
    from plada_core.images import preprocess_batch

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (12 + i, 9, 3), dtype=np.uint8) for i in range(4)]  # sizes differ
    cfg = PreprocessConfig(image_size=8, channels=3)
    assert np.array_equal(preprocess_batch(iter(images), cfg, n=4), preprocess_batch(images, cfg))
    with pytest.raises(ValueError, match="3 images, 4 expected"):
        preprocess_batch(iter(images[:3]), cfg, n=4)
    with pytest.raises(ValueError, match="more than the 3 images expected"):
        preprocess_batch(iter(images), cfg, n=3)
