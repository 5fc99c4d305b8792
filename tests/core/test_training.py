"""The training recipe: seeded, and the head-only path equals full training for a frozen backbone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from plada_core.training import TrainConfig, features, train_classifier, train_head

CFG = TrainConfig(epochs=2, batch_size=8, seed=3)


class _Frozen(nn.Module):
    """A fixed random projection as the backbone and a trainable linear head, like FrozenEffNetLite0."""

    frozen_backbone = True

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(16, 6)).requires_grad_(False)
        self.head = nn.Linear(6, 3)

    def forward_features(self, x):
        return self.backbone(x)

    def forward_head(self, feats):
        return self.head(feats)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _data(n: int = 20):
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 4, 4, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def test_head_on_cached_features_equals_training_through_the_frozen_backbone():
    x, y = _data()
    full = train_classifier(_Frozen(), x, y, CFG)
    model = _Frozen()
    head = train_head(model, features(model, x), y, CFG)
    for a, b in zip(full.state_dict().values(), head.state_dict().values()):
        assert torch.equal(a, b)


def test_training_is_seeded():
    x, y = _data()
    conv = lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(32, 3))  # noqa: E731
    torch.manual_seed(0)
    a = train_classifier(conv(), x, y, CFG)
    torch.manual_seed(0)
    b = train_classifier(conv(), x, y, CFG)
    torch.manual_seed(0)
    c = train_classifier(conv(), x, y, TrainConfig(epochs=2, batch_size=8, seed=4))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


@pytest.mark.parametrize("fit", [train_classifier, train_head])
def test_mismatched_or_empty_inputs_are_refused_with_the_counts(fit):
    x, y = _data(4)
    with pytest.raises(ValueError, match="got 4 and 3"):
        fit(_Frozen(), x if fit is train_classifier else x.flatten(1)[:, :6], y[:3], CFG)
    with pytest.raises(ValueError, match="got 0 and 0"):
        fit(_Frozen(), x[:0], y[:0], CFG)


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"shift": 0.5}])
def test_config_names_the_bad_value(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(**bad)


def test_explicit_cpu_trains_the_same_weights_as_auto_on_a_cpu_machine():
    if torch.cuda.is_available():
        pytest.skip("auto is the GPU here")
    x, y = torch.randn(24, 1, 4, 4), torch.randint(0, 3, (24,))
    weights = []
    for device in ("auto", "cpu"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        train_classifier(model, x, y, TrainConfig(epochs=2, batch_size=8, seed=3, device=device))
        weights.append(model[1].weight.detach().clone())
    assert torch.equal(*weights)
