"""Classifiers, teachers and students alike: trained from a recipe, or rebuilt from a checkpoint's metadata."""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from plada_core.images import PreprocessConfig
from plada_core.models import create_model
from plada_core.stream_training import StreamFit, train_classifier_streaming
from plada_core.training import TrainConfig, train_classifier

__all__ = ["checkpoint_meta", "class_names_for", "fit_classifier", "fit_classifier_streaming", "fresh_model",
           "model_from_checkpoint"]


def fit_classifier(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, cfg: TrainConfig, desc: str = "train"
) -> nn.Module:
    """A fresh ``cfg.model`` trained on (x, y)."""
    return train_classifier(fresh_model(cfg, n_classes, x.shape[1]), x, y, cfg, desc=desc)


def fresh_model(cfg: TrainConfig, n_classes: int, in_chans: int) -> nn.Module:
    """``cfg.model`` initialised from ``cfg.seed`` (model init is part of the recipe), its last ``cfg.finetune``
    backbone stages opened for training."""
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=n_classes, in_chans=in_chans)
    if cfg.finetune:
        if not hasattr(model, "unfreeze"):
            raise ValueError(f"finetune={cfg.finetune} needs a frozen-backbone model such as "
                             f"'plada_effnet_lite0_ml'; {cfg.model!r} trains all its layers already: set finetune 0")  # fmt: skip
        model.unfreeze(cfg.finetune)
    return model


def fit_classifier_streaming(stream, n_classes: int, in_chans: int, cfg: TrainConfig, num_workers: int = 0,
                             desc: str = "train", feature_cache_url: str | None = None) -> StreamFit:  # fmt: skip
    """A fresh ``cfg.model`` trained on a stream of (image, label) batches (``plada_core.io.payload_stream``);
    the same recipe as :func:`fit_classifier`, model initialisation included."""
    model = fresh_model(cfg, n_classes, in_chans)
    return train_classifier_streaming(model, stream, None, cfg, num_workers=num_workers, desc=desc,
                                      feature_cache_url=feature_cache_url)


def class_names_for(n_classes: int, *candidates) -> tuple[list[str], int | None]:
    """The first of ``candidates`` (name lists, None where unknown) with exactly ``n_classes`` names, and its
    position; ``class_0 .. class_{C-1}`` and None when none fits (a format-1 payload and no evaluation split)."""
    for position, names in enumerate(candidates):
        if names is not None and len(names) == n_classes:
            return [str(n) for n in names], position
    return [f"class_{i}" for i in range(n_classes)], None


def checkpoint_meta(
    model_name: str, n_classes: int, preprocess: PreprocessConfig, class_names: list[str], **extra
) -> dict:
    """Everything needed to rebuild the model and its exact preprocessing from the checkpoint alone; ``extra``
    adds provenance (a student's: payload fingerprint and sha256, task, version, test accuracy)."""
    return {
        "model": model_name,
        "num_classes": n_classes,
        "preprocess": asdict(preprocess),
        "class_names": list(class_names),
        **extra,
    }


def model_from_checkpoint(state_dict: dict, meta: dict) -> tuple[nn.Module, PreprocessConfig]:
    """Rebuild (model, preprocessing) from a PLADA checkpoint; meta names the model and its input."""
    missing = [k for k in ("model", "num_classes", "preprocess") if k not in meta]
    if missing:
        raise ValueError(
            f"checkpoint metadata lacks {missing}: a bare state dict needs --teacher-model, image size and classes"
        )
    preprocess = PreprocessConfig(**meta["preprocess"])
    model = create_model(meta["model"], num_classes=int(meta["num_classes"]), in_chans=preprocess.channels)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint does not fit model {meta['model']!r}: {str(exc)[:300]}") from exc
    return model.eval(), preprocess

