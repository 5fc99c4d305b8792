"""Streaming student training on a real pool of sklearn digits: it learns, it is deterministic without workers, and
frozen-backbone students train their head on a per-shard feature cache that a second run reuses."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from plada_core.images import PreprocessConfig, preprocess_batch
from plada_core.io import pool, storage
from plada_core.io.payload_stream import PayloadStream
from plada_core.models import create_model
from plada_core.payload import Payload
from plada_core.stream_training import train_classifier_streaming
from plada_core.training import TrainConfig, accuracy, configure_torch

CFG = PreprocessConfig(image_size=8, channels=1)


class _Sample:
    def __init__(self, key: str, image: np.ndarray, label: int):
        buf = io.BytesIO()
        Image.fromarray(image, "L").save(buf, format="PNG")
        self.key, self.data, self.ext, self.label = key, buf.getvalue(), "png", label


class _Digits:
    spec = name = "digits"
    class_names = [str(i) for i in range(10)]

    def __init__(self, images, labels):
        self.samples = [_Sample(f"d-{i:06d}", img, int(y)) for i, (img, y) in enumerate(zip(images, labels))]

    def __len__(self):
        return len(self.samples)

    def iter_encoded(self):
        return iter(self.samples)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small CPU ops on a shared machine ran ~20x slower with more threads than free cores."""
    threads = torch.get_num_threads()
    configure_torch(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """(pool URL, payload of 500 correctly labelled pool digits, test x, test y)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images, labels = np.round(d.images * (255 / 16)).astype(np.uint8), d.target
    url = storage.join(tmp_path_factory.mktemp("pool").as_uri(), "pool")
    ref = pool.build_reference([_Digits(images[:600], labels[:600])], url, shard_size=50, progress=False)
    chosen = np.sort(np.random.default_rng(0).choice(600, 500, replace=False))
    payload = Payload(chosen, labels[chosen].astype(np.int32), ref["n"], 10, ref["fingerprint"], "test")
    x_test = torch.from_numpy(preprocess_batch(images[1200:1500], CFG))
    return url, payload, x_test, torch.as_tensor(labels[1200:1500])


def _train(url, payload, cfg, model=None, **kw):
    torch.manual_seed(cfg.seed)
    model = model or create_model(cfg.model, num_classes=10, in_chans=1)
    stream = PayloadStream(url, payload, CFG, seed=cfg.seed, shuffle_buffer=64)
    return train_classifier_streaming(model, stream, stream.n_expected, cfg, **kw)


def test_streamed_student_learns_digits_and_is_deterministic(digits):
    url, payload, x_test, y_test = digits
    cfg = TrainConfig(epochs=4, batch_size=32, lr=3e-3, device="cpu")
    fit = _train(url, payload, cfg)
    assert fit.n_seen == [payload.k] * 4 and all(d.total == 0 for d in fit.drops)
    assert accuracy(fit.model, x_test, y_test) > 0.5, "well above the 0.1 of chance"
    again = _train(url, payload, cfg).model.state_dict()
    assert all(torch.equal(v, again[k]) for k, v in fit.model.state_dict().items())


def test_two_workers_train_on_the_same_images(digits):
    url, payload, x_test, y_test = digits
    fit = _train(url, payload, TrainConfig(epochs=2, batch_size=32, device="cpu"), num_workers=2)
    assert fit.n_seen == [payload.k] * 2 and accuracy(fit.model, x_test, y_test) > 0.2


class _FrozenRandomFeatures(nn.Module):
    """A frozen random conv backbone and a linear head: the shape of ``FrozenEffNetLite0``, at test speed."""

    frozen_backbone = True
    num_features = 32

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU()).requires_grad_(False)
        self.head = nn.Linear(32, 10)
        self.feature_calls = 0

    @torch.no_grad()
    def forward_features(self, x):
        self.feature_calls += 1
        return self.backbone(x).mean(dim=(2, 3))

    def forward_head(self, feats):
        return self.head(feats)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_frozen_backbone_trains_its_head_on_a_reused_feature_cache(digits, tmp_path):
    url, payload, _, _ = digits
    cfg = TrainConfig(epochs=3, batch_size=32, device="cpu")
    cache = (tmp_path / "features").as_uri()
    first = _train(url, payload, cfg, model=_FrozenRandomFeatures(), feature_cache_url=cache)
    files = sorted(p.name for p in (tmp_path / "features").iterdir())
    assert "cache.json" in files and len(files) == 1 + len(PayloadStream(url, payload, CFG).shards)
    second = _train(url, payload, cfg, model=_FrozenRandomFeatures(), feature_cache_url=cache)
    assert second.model.feature_calls == 0, "the second run reads the cache"
    uncached = _train(url, payload, cfg, model=_FrozenRandomFeatures())
    assert first.n_seen == second.n_seen == uncached.n_seen == [payload.k] * 3
    for other in (second, uncached):  # same samples in the same order: the same head, up to float summation
        torch.testing.assert_close(first.model.head.weight, other.model.head.weight, rtol=1e-4, atol=1e-5)
    in_workers = (tmp_path / "features-2").as_uri()
    _train(url, payload, cfg, model=_FrozenRandomFeatures(), feature_cache_url=in_workers, num_workers=2)
    for file in (tmp_path / "features").glob("*.npz"):
        with np.load(file) as one, np.load(tmp_path / "features-2" / file.name) as two:
            assert np.array_equal(one["indices"], two["indices"])
            np.testing.assert_allclose(one["features"], two["features"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="own cache URL"):
        _train(url, payload, cfg, model=_OtherFrozenBackbone(), feature_cache_url=cache)


class _OtherFrozenBackbone(_FrozenRandomFeatures):
    """Another backbone: its features must not be read from the first one's cache."""
