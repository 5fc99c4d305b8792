"""One training recipe for teachers and students, and batched inference.

Tensors in, model out: no storage here. The recipe is deliberately plain (AdamW, one-cycle LR, random
shifts) and fully seeded, so that a student trained on a PLADA selection and one trained on a random
selection of the same size differ only in their data.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import AfterValidator, ConfigDict, Field
from pydantic.dataclasses import dataclass
from torch import nn
from tqdm.auto import tqdm

from plada_core.devices import check_device, model_device, resolve_device

__all__ = [
    "DeviceName",
    "TrainConfig",
    "accuracy",
    "configure_torch",
    "features",
    "predict",
    "shift_images",
    "train_classifier",
    "train_head",
]


def _checked_device(name: str) -> str:
    check_device(name)  # only the spelling: "auto" is decided by the process that does the work
    return name


DeviceName = Annotated[
    str,
    AfterValidator(_checked_device),
    Field(description="Where models train and score: auto (a GPU when there is one), cpu, cuda, cuda:1, …"),
]
"""A device as a plain string (``plada_core.devices``), checked when a config is made: one spelling everywhere."""


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TrainConfig:
    """Recipe for one classifier. Each field's bounds and help live in its annotation (the CLI flags and the
    Prefect forms are generated from them, see ``flows/params.py``).

    ``device`` is where the model trains (``"auto"``: CUDA when the process sees a GPU). Inputs stay in host
    memory and batches are copied over one at a time, augmented on the host first, so that the shuffling and
    shifting draw from the same seeded CPU generator everywhere: on the CPU a run is bit-for-bit reproducible;
    on a GPU its cuDNN kernels are not guaranteed to be.
    """

    model: Annotated[
        str,
        Field(min_length=1, description="timm model name. Where a target train split is given, auto picks one from "
                                        "its images: colour plada_effnet_lite0_ml, grey plada_cnn (the student: "
                                        "the teacher's)."),
    ] = "plada_cnn"
    epochs: Annotated[int, Field(ge=1, le=1000, description="Training epochs.")] = 30
    batch_size: Annotated[int, Field(ge=1, le=4096, description="Batch size.")] = 64
    lr: Annotated[float, Field(gt=0, le=1, description="Peak learning rate (AdamW, one-cycle).")] = 3e-3
    weight_decay: Annotated[float, Field(ge=0, le=1, description="AdamW weight decay.")] = 5e-4
    shift: Annotated[
        float, Field(ge=0, lt=0.5, description="Max random translation, as a fraction of the image side.")
    ] = 0.125
    seed: Annotated[int, Field(description="Seed of the shuffling, the shifts and the model's initial weights.")] = 0
    device: DeviceName = "auto"
    finetune: Annotated[
        int,
        Field(ge=0, le=7, description="Frozen-backbone models: last backbone stages trained with the head "
                                      "(0: the head alone, on features computed once; see README for the cost)."),
    ] = 0


def configure_torch(threads: int | None = None) -> None:
    """Pin intra-op threads and flush denormals: without both, small CPU ops ran 5–70x slower here."""
    torch.set_num_threads(threads or max(1, torch.get_num_threads()))
    torch.set_flush_denormal(True)


def _batches(n: int, batch_size: int, gen: torch.Generator | None):
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


@torch.no_grad()
def features(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``model.forward_features`` of ``x`` in eval mode, in batches on the model's device; returned on the CPU."""
    model.eval()
    device = model_device(model)
    return torch.cat(
        [model.forward_features(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    )


def train_classifier(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, desc: str = "train"
) -> nn.Module:
    """Train ``model`` on ``x`` (NxCxHxW float) and ``y`` (N int64) in place and return it.

    Models with ``frozen_backbone`` train only their head, on features computed once (``train_head``). The
    model is moved to ``cfg.device`` and stays there.
    """
    _check_pairs(x, y)
    model.to(resolve_device(cfg.device))
    if getattr(model, "frozen_backbone", False):
        return train_head(model, features(model, x), y, cfg, desc=desc)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    max_shift = round(cfg.shift * x.shape[-1])
    _fit(model, model, x, y, cfg, gen, lambda xb: shift_images(xb, max_shift, gen), desc)
    return model.eval()


def train_head(
    model: nn.Module, feats: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, desc: str = "train"
) -> nn.Module:
    """Train only ``model.forward_head`` on precomputed ``feats`` (N x num_features, from ``features``), no
    augmentation.

    Exactly what ``train_classifier`` does for a frozen-backbone model, minus computing the features: a caller
    that scores many selections of one pool can compute every pool image's features once.
    """
    _check_pairs(feats, y)
    model.to(resolve_device(cfg.device))
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    _fit(model, model.forward_head, feats, y, cfg, gen, lambda xb: xb, desc)
    return model.eval()


def _check_pairs(x: torch.Tensor, y: torch.Tensor) -> None:
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need the same non-zero number of images and labels, got {len(x)} and {len(y)}")


def _fit(model: nn.Module, forward, inputs: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
         gen: torch.Generator, augment, desc: str) -> None:  # fmt: skip
    """AdamW + one-cycle over ``cfg.epochs`` shuffled passes, updating the parameters that require grad. Each
    batch is augmented in host memory, then copied to the model's device."""
    device = model_device(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * ((len(inputs) + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    model.train()
    for _ in tqdm(range(cfg.epochs), desc=desc, unit="epoch", leave=False):
        for idx in _batches(len(inputs), cfg.batch_size, gen):
            xb = augment(inputs[idx]).to(device, non_blocking=True)
            loss = nn.functional.cross_entropy(forward(xb), y[idx].to(device, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


def shift_images(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by a random offset in [-max_shift, max_shift] px, zero-filling the border."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen).tolist()
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits for ``x``, in batches on the model's device, in eval mode; returned on the CPU."""
    model.eval()
    device = model_device(model)
    return torch.cat([model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x).argmax(1) == y).float().mean())
