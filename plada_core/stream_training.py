"""The training recipe of ``plada_core.training`` fed batch by batch from a stream, for selections too large to hold.

Same recipe as ``train_classifier`` / ``train_head`` (AdamW, one-cycle LR over ``epochs x ceil(n_samples /
batch_size)`` steps, random shifts drawn from a generator seeded with ``cfg.seed``, head-only training for frozen
backbones); only the data path differs: batches come from a stream's ``loader`` (``plada_core.io.payload_stream``),
in the stream's per-epoch shuffled order, instead of a permutation of one tensor. No storage is touched here: the
stream, and the feature cache it creates, do the reading and writing.

A stream here is anything with ``set_epoch(e)``, ``n_expected`` and ``loader(batch_size, num_workers, pin_memory)``
returning an iterable of batches with ``x``, ``y``, ``index`` and, after each pass, ``drops``; frozen-backbone
students with a feature cache also use ``feature_cache(url, model_id)`` and ``only(shards)`` / ``unshuffled()``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from plada_core.devices import model_device, resolve_device
from plada_core.training import TrainConfig, shift_images

__all__ = ["StreamFit", "train_classifier_streaming"]


@dataclass
class StreamFit:
    """The trained model (in eval mode) and, per epoch, how many samples it saw and the stream's drop counts."""

    model: nn.Module
    n_seen: list[int] = field(default_factory=list)
    drops: list = field(default_factory=list)


def train_classifier_streaming(model: nn.Module, dataset, n_samples: int | None, cfg: TrainConfig,
                               num_workers: int = 0, desc: str = "train",
                               feature_cache_url: str | None = None) -> StreamFit:  # fmt: skip
    """Train ``model`` in place on ``dataset`` (a ``PayloadStream``) and return it with per-epoch counts.

    ``n_samples`` (default: ``dataset.n_expected``) sizes the LR schedule; an epoch that yields more is an error,
    one that yields fewer (dropped images) ends its schedule early. Batches are decoded in ``num_workers``
    DataLoader workers and pinned when the model trains on CUDA. A frozen-backbone model (``frozen_backbone``)
    trains only its head: on features cached once under ``feature_cache_url`` (reused by later runs of the same
    model, pool and preprocessing, refused by others; ``plada_core.io.feature_cache``), or, without one, on
    features recomputed each epoch.
    """
    n_samples = dataset.n_expected if n_samples is None else int(n_samples)
    if n_samples < 1:
        raise ValueError(f"nothing to train on: the stream expects {n_samples} samples")
    device = resolve_device(cfg.device)
    model.to(device)
    pin = device.type == "cuda"
    shift = cfg.shift
    if getattr(model, "frozen_backbone", False):  # as train_head: the head alone, on unaugmented features
        shift = 0.0
        if feature_cache_url is not None:
            cache = dataset.feature_cache(feature_cache_url, model_id=_model_id(model))
            _fill_cache(model, dataset, cache, num_workers, pin, desc)
            dataset, forward = cache.stream(), model.forward_head
        else:
            def forward(xb):
                return model.forward_head(model.forward_features(xb))
    else:
        forward = model
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    def augment(xb):
        return shift_images(xb, round(shift * xb.shape[-1]), gen)

    return _fit_stream(model, forward, dataset, n_samples, cfg, augment, num_workers, pin, desc)


def _fit_stream(model: nn.Module, forward, dataset, n_samples: int, cfg: TrainConfig, augment, num_workers: int,
                pin: bool, desc: str) -> StreamFit:  # fmt: skip
    """``training._fit`` over a stream: each batch is augmented in host memory, then copied to the model's device."""
    device = model_device(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(n_samples / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * per_epoch)
    loader = dataset.loader(cfg.batch_size, num_workers=num_workers, pin_memory=pin, prefetch_batches=_ahead(pin))
    fit = StreamFit(model)
    model.train()
    for epoch in tqdm(range(cfg.epochs), desc=desc, unit="epoch", leave=False):
        dataset.set_epoch(epoch)
        seen = steps = 0
        for batch in loader:
            steps += 1
            if steps > per_epoch:
                raise ValueError(f"the stream yielded more than the n_samples={n_samples} it was said to hold in "
                                 f"epoch {epoch}: pass its n_expected")
            xb = augment(batch.x).to(device, non_blocking=True)
            loss = nn.functional.cross_entropy(forward(xb), batch.y.to(device, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(batch)
        if seen == 0:
            raise RuntimeError(f"epoch {epoch} yielded no sample: none of the selected images could be read "
                               f"({loader.drops.as_dict()})")
        fit.n_seen.append(seen)
        fit.drops.append(loader.drops)
    model.eval()
    return fit


def _ahead(pinned: bool) -> int:
    """Batches the reader runs ahead in a background thread when there are no workers: 2 for a CUDA model (batches
    are pinned exactly then), whose step leaves the CPU free; 0 on a CPU, where torch's threads use the cores."""
    return 2 if pinned else 0


def _model_id(model: nn.Module) -> str:
    return f"{type(model).__module__}.{type(model).__qualname__}/{getattr(model, 'num_features', '?')}"


@torch.no_grad()
def _fill_cache(model: nn.Module, stream, cache, num_workers: int, pin: bool, desc: str,
                batch_size: int = 256) -> None:  # fmt: skip
    """Compute the pooled features of the shards ``cache`` lacks, in one unshuffled pass; each shard is written
    as soon as its last sample is through, so at most one shard per worker is held."""
    todo = cache.missing_shards()
    if not todo:
        return
    model.eval()
    device = model_device(model)
    pending: dict[str, list] = defaultdict(list)
    source = stream.only(todo).unshuffled()
    loader = source.loader(batch_size, num_workers=num_workers, pin_memory=pin, prefetch_batches=_ahead(pin))
    owner = _ShardOf(source)
    for chunk in tqdm(loader.chunks(), desc=f"{desc} features", unit="batch", leave=False):
        if len(chunk):
            feats = model.forward_features(chunk.x.to(device, non_blocking=True)).float().cpu().numpy()
            shards = owner(chunk.index.numpy())
            for name in np.unique(shards):
                rows = shards == name
                pending[name].append((chunk.index.numpy()[rows], feats[rows]))
        for name, drops in chunk.done.items():
            parts = pending.pop(name, [])
            indices = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
            width = getattr(model, "num_features", 0)
            feats = np.concatenate([p[1] for p in parts]) if parts else np.empty((0, width), np.float32)
            cache.write_shard(name, indices, feats, drops)


class _ShardOf:
    """Which of the stream's shards each pool index belongs to (shards hold contiguous, sorted index ranges)."""

    def __init__(self, stream) -> None:
        self.names = np.asarray(stream.shards)
        self.firsts = np.array([stream.wanted(s)[0][0] for s in stream.shards], dtype=np.int64)

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        return self.names[np.searchsorted(self.firsts, indices, side="right") - 1]
