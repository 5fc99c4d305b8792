"""The model factory: the multi-level frozen backbone, its memory format, and the input each model expects."""

from __future__ import annotations

import pytest
import torch

from plada_core.images import PreprocessConfig
from plada_core.models import create_model, model_input


@pytest.fixture(scope="module")
def images():
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_multi_level_features_hold_the_final_ones_after_three_inner_stages(images):
    single = create_model("plada_effnet_lite0", num_classes=4, in_chans=3)
    multi = create_model("plada_effnet_lite0_ml", num_classes=4, in_chans=3)
    f1, fm = single.forward_features(images), multi.forward_features(images)
    assert f1.shape == (6, 1280) and fm.shape == (6, 1752) and multi.num_features == 1752
    torch.testing.assert_close(fm[:, -1280:], f1, rtol=1e-4, atol=1e-4)  # the head's features come last
    assert not fm.is_inference() and fm.requires_grad is False  # cacheable, trainable-on
    assert multi(images).shape == (6, 4)


def test_the_backbone_stays_frozen_and_only_the_head_trains(images):
    model = create_model("plada_effnet_lite0_ml_mlp", num_classes=3, in_chans=3)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("head.") for n in trainable)
    model.train()
    assert not model.backbone.training  # ImageNet BatchNorm statistics are kept


def test_channels_last_gives_the_same_features_as_contiguous(images):
    model = create_model("plada_effnet_lite0_ml", num_classes=2, in_chans=3)
    fast = model.forward_features(images)
    model.set_memory_format(torch.contiguous_format)
    plain = model.forward_features(images)
    torch.testing.assert_close(fast, plain, rtol=1e-3, atol=1e-4)


def test_grayscale_input_is_repeated_to_rgb():
    model = create_model("plada_effnet_lite0_ml", num_classes=2, in_chans=1)
    gray = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(model.forward_features(gray), model.forward_features(gray.expand(-1, 3, -1, -1)))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("plada_effnet_lite0_ml", PreprocessConfig(image_size=32, channels=3, crop="none")),
        ("plada_effnet_lite0", PreprocessConfig(image_size=32, channels=3, crop="none")),
        ("resnet18", PreprocessConfig(image_size=224, channels=3, crop="none")),  # timm's pretrained config
        ("plada_cnn", PreprocessConfig()),  # no natural size: the config's defaults
    ],
)
def test_model_input_is_derived_from_the_model(name, expected):
    assert model_input(name) == expected


def test_unknown_model_names_the_registered_ones():
    with pytest.raises(ValueError, match="plada_effnet_lite0_ml"):
        create_model("no_such_net", num_classes=2, in_chans=3)


def test_finetune_trains_the_last_stages_and_nothing_before_them():
    from plada_core.classifier import fit_classifier
    from plada_core.training import TrainConfig

    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 2
    before = create_model("plada_effnet_lite0_ml", num_classes=2, in_chans=3).backbone.state_dict()
    cfg = TrainConfig(model="plada_effnet_lite0_ml", epochs=1, batch_size=4, finetune=1, device="cpu")
    after = fit_classifier(x, y, 2, cfg).backbone.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("_blocks.15.") for k in changed) and any(k.startswith("_conv_head") for k in changed)
    assert not any(k.startswith(("_blocks.14.", "_blocks.0.", "_conv_stem")) for k in changed)
    assert not any("running_" in k for k in changed)  # BatchNorm statistics stay ImageNet's


def test_finetune_of_a_model_without_a_frozen_backbone_names_the_fix():
    from plada_core.classifier import fresh_model
    from plada_core.training import TrainConfig

    with pytest.raises(ValueError, match="finetune 0"):
        fresh_model(TrainConfig(model="plada_cnn", finetune=1), 2, 1)
    with pytest.raises(ValueError, match="0 to 7 stages"):
        create_model("plada_effnet_lite0", 2, 3).unfreeze(8)
