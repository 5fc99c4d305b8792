"""Teacher (and student) construction from a recipe or a checkpoint's metadata."""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from plada_core.images import PreprocessConfig
from plada_core.models import create_model
from plada_core.training import TrainConfig, train_classifier

__all__ = ["checkpoint_meta", "fit_classifier", "model_from_checkpoint"]


def fit_classifier(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, cfg: TrainConfig, desc: str = "train"
) -> nn.Module:
    """A fresh ``cfg.model`` trained on (x, y)."""
    torch.manual_seed(cfg.seed)  # model init is part of the recipe
    model = create_model(cfg.model, num_classes=n_classes, in_chans=x.shape[1])
    return train_classifier(model, x, y, cfg, desc=desc)


def checkpoint_meta(
    model_name: str, n_classes: int, preprocess: PreprocessConfig, class_names: list[str], **extra
) -> dict:
    """Everything needed to rebuild the model and its exact preprocessing from the checkpoint alone."""
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

