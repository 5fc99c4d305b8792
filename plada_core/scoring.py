"""Per-image scores from teacher logits, and the streaming scoring loop.

The loop takes an iterator of ``(index, encoded bytes)`` and never holds more than one batch of images or
logits: a shard of any size is scored in bounded memory, and only a handful of floats per image survive.
Images that fail to decode are counted (and their indices kept) rather than skipped silently.

Given a ``TargetBank`` (``plada_core.relevance``), the same forward pass also yields the domain-aware relevance
columns (``RELEVANCE_COLUMNS``: kNN similarity to the target-train embeddings and friends), so relevance-based
selectors stay a pure function of the scores files.

The loop decodes every pool image anyway, so it can also hash each decoded image (``HASH_COLUMNS``, for the leakage
check of ``plada_core.leakage``) and return the model's pooled features (``features``, float16), which a frozen
backbone's proxy students then reuse instead of running the backbone over the pool again.

Two optional columns feed the data-pruning selectors of ``plada_core.pruning`` (``PRUNING_COLUMNS``), each off by
default because it costs something the other selectors do not need: ``density_ratio`` (a target-vs-pool logistic
classifier on the same unit embeddings as the kNN columns, fitted beforehand on a sample of the pool,
``DensityRatio``; one matrix-vector product per batch) and ``label_stable`` (the teacher's label under flipped and
shifted views: one more forward pass per view). ``--selector auto`` measures their selectors exactly when the
columns are there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Callable, Iterable, Iterator, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass
from torch import nn

from plada_core.devices import model_device, resolve_device
from plada_core.images import PreprocessConfig, preprocess
from plada_core.leakage import hash_images
from plada_core.prefetch import prefetch
from plada_core.pruning import (
    DENSITY_RATIO_COLUMN,
    LABEL_STABLE_COLUMN,
    DensityRatio,
    density_ratio_scores,
    fit_density_ratio,
)
from plada_core.pruning import label_stability as stable_share
from plada_core.relevance import RELEVANCE_COLUMNS, TargetBank, knn_scores, pooled_features
from plada_core.training import DeviceName

__all__ = [
    "HASH_COLUMNS",
    "LABEL_VIEWS",
    "RELEVANCE_COLUMNS",
    "SCORE_COLUMNS",
    "ScoringConfig",
    "ShardScores",
    "fit_pool_density_ratio",
    "score_logits",
    "score_stream",
]

SCORE_COLUMNS = ["index", "energy", "pred", "max_softmax", "entropy", "margin"]
HASH_COLUMNS = ["exact_hash", "phash"]  # 16-byte BLAKE2b of the decoded pixels, 64-bit pHash (plada_core.leakage)
# label_stability's views: none, the two diagonal 1-pixel shifts, or those and the horizontal flip
LABEL_VIEWS = {"off": None, "shifts": False, "flip+shifts": True}  # -> the flip argument of pruning.label_stability
LabelViews = Literal[tuple(LABEL_VIEWS)]


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ScoringConfig:
    """``temperature`` is T in ``E(x) = -T·logsumexp(f(x)/T)``; ``max_drop_rate`` is the fraction of the
    pool's images that may be unscorable before a run fails.

    ``device`` runs the model on ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"``,
    ``"cuda:1"`` …; batches are pinned and copied without blocking to a CUDA device. ``prefetch`` reads and
    decodes the next batches in a background thread while the model runs; ``None`` (the default) turns it on
    exactly when the model runs on an accelerator. There the cores are otherwise idle and the thread hides
    the input pipeline behind the forward pass; on CPU-only workers it competes with torch for the same cores
    (benchmarks/scoring.py before the current shard reader: pipeline/ceiling 0.71 with it, 0.81 without,
    on 2 cores)."""

    temperature: Annotated[float, Field(gt=0, le=100, description="Energy temperature T.")] = 1.0
    batch_size: Annotated[int, Field(ge=1, le=65536, description="Images per forward pass when scoring.")] = 256
    max_drop_rate: Annotated[
        float, Field(ge=0, le=1, description="Fail above this fraction of unscorable pool images.")
    ] = 0.01
    prefetch: Annotated[
        bool | None, Field(description="Decode the next batches in a thread; empty: only off the CPU.")
    ] = None
    density_ratio: Annotated[
        bool,
        Field(description="Add the density_ratio column (target-vs-pool classifier on teacher embeddings, fit on a "
                          "pool sample first) for the density_ratio selector; needs the target bank."),
    ] = False
    label_stability: Annotated[
        LabelViews,
        Field(description="Add the label_stable column for the reliable selector: the teacher's label under 1-px "
                          "shifts (and the horizontal flip; only for mirror-symmetric classes); 3-4x the scoring cost."),
    ] = "off"
    device: DeviceName = "auto"

    def torch_device(self) -> torch.device:
        """The device the model runs on (``plada_core.devices.resolve_device``)."""
        return resolve_device(self.device)

    def prefetches(self, device: torch.device) -> bool:
        """Whether batches are prepared in a background thread: as set, or (``None``) off the CPU only."""
        return device.type != "cpu" if self.prefetch is None else self.prefetch


def score_logits(logits: torch.Tensor, temperature: float = 1.0) -> dict[str, np.ndarray]:
    """Energy, argmax label, max softmax, entropy (nats) and top-2 margin for each row of ``logits``."""
    logits = logits.detach().to("cpu", torch.float64)  # one copy back from an accelerator; tiny either way
    energy = -temperature * torch.logsumexp(logits / temperature, dim=1)
    logp = torch.log_softmax(logits, dim=1)
    p = logp.exp()
    top2 = p.topk(min(2, p.shape[1]), dim=1).values
    margin = top2[:, 0] - (top2[:, 1] if top2.shape[1] > 1 else 0.0)
    return {
        "energy": energy.float().numpy(),
        "pred": logits.argmax(dim=1).int().numpy(),
        "max_softmax": top2[:, 0].float().numpy(),
        "entropy": (-(p * logp).sum(dim=1)).float().numpy(),
        "margin": margin.float().numpy(),
    }


@dataclass
class ShardScores:
    """Scores of one shard plus what could not be scored; ``features``: the pooled features of the frame's rows
    (float16, in frame order) when asked for."""

    frame: pd.DataFrame
    n_seen: int = 0
    dropped: list[dict] = field(default_factory=list)
    features: np.ndarray | None = None

    @property
    def n_dropped(self) -> int:
        return len(self.dropped)


def _batched(samples: Iterable, size: int) -> Iterator[list]:
    batch = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def score_stream(
    model: nn.Module,
    samples: Iterable[tuple[int, bytes]],
    decode: Callable[[bytes], np.ndarray],
    preprocess_cfg: PreprocessConfig,
    cfg: ScoringConfig,
    bank: TargetBank | None = None,
    hashes: bool = False,
    features: bool = False,
    ratio: DensityRatio | None = None,
) -> ShardScores:
    """Score ``(index, encoded image)`` pairs with ``model``; undecodable images are recorded in ``dropped``.

    The model is moved to ``cfg.torch_device()`` (a no-op when it is there already) and each batch follows it:
    on CUDA the batch is pinned in the thread that prepared it and copied with ``non_blocking=True``, so with
    prefetch on (the default there) the next batches are read and decoded while the device runs this one.

    With a ``bank`` the frame also holds ``RELEVANCE_COLUMNS`` (the model must expose ``forward_features`` and
    ``forward_head``, as every PLADA and timm model does). ``hashes`` adds ``HASH_COLUMNS``, computed on the
    decoded pixels before preprocessing (as the target images are hashed); ``features`` returns the model's
    pooled ``forward_features`` as float16 (half the bytes; a linear head trained on them loses nothing
    measurable), rows in frame order. ``ratio`` (required when ``cfg.density_ratio`` is on) adds the
    ``density_ratio`` column from the unit embeddings, ``cfg.label_stability`` the ``label_stable`` column."""
    if cfg.density_ratio and ratio is None:
        raise ValueError("density_ratio is on but no DensityRatio was given: fit one on a pool sample first "
                         "(fit_pool_density_ratio)")  # fmt: skip
    flip = LABEL_VIEWS[cfg.label_stability]
    device = cfg.torch_device()
    if model_device(model) != device:
        model.to(device)
    model.eval()
    bank_embeddings = torch.from_numpy(bank.embeddings).to(device) if bank is not None else None
    parts, dropped, n_seen, pooled = [], [], 0, []
    batches = _prepared_batches(
        samples, decode, preprocess_cfg, cfg.batch_size, pin=device.type == "cuda", hashes=hashes
    )
    for n_batch, indices, x, batch_dropped, batch_hashes in prefetch(batches) if cfg.prefetches(device) else batches:
        n_seen += n_batch
        dropped += batch_dropped
        if x is None:
            continue
        x = x.to(device, non_blocking=True)
        if bank is None and not features and not cfg.density_ratio:
            scores = score_logits(model(x), cfg.temperature)
        else:
            feats, logits = pooled_features(model, x)
            scores = score_logits(logits, cfg.temperature)
            if features:
                pooled.append(feats.to("cpu", torch.float16).numpy())
            emb = nn.functional.normalize(feats.float(), dim=1)
            if bank is not None:
                scores.update(knn_scores(emb, scores["pred"], scores["energy"], bank, cfg.temperature,
                                         bank_embeddings))  # fmt: skip
            if cfg.density_ratio:
                scores[DENSITY_RATIO_COLUMN] = density_ratio_scores(ratio, emb)
        if flip is not None:
            scores[LABEL_STABLE_COLUMN] = stable_share(model, x, scores["pred"], flip=flip)
        parts.append(pd.DataFrame({"index": np.asarray(indices, np.int64), **scores, **batch_hashes}))
    columns = (SCORE_COLUMNS + (RELEVANCE_COLUMNS if bank is not None else []) + (HASH_COLUMNS if hashes else [])
               + ([DENSITY_RATIO_COLUMN] if cfg.density_ratio else [])
               + ([LABEL_STABLE_COLUMN] if flip is not None else []))  # fmt: skip
    frame = pd.concat(parts, ignore_index=True) if parts else _empty_frame()
    feats = (np.concatenate(pooled) if pooled else np.empty((0, 0), np.float16)) if features else None
    return ShardScores(frame=frame[columns], n_seen=n_seen, dropped=dropped, features=feats)


def fit_pool_density_ratio(
    model: nn.Module,
    samples: Iterable[tuple[int, bytes]],
    decode: Callable[[bytes], np.ndarray],
    preprocess_cfg: PreprocessConfig,
    cfg: ScoringConfig,
    bank: TargetBank,
    seed: int = 0,
) -> tuple[DensityRatio, dict]:
    """The classifier behind the ``density_ratio`` column, and what it was fit on (``n_target``, ``n_pool``,
    ``n_dropped``): the bank's target-train embeddings against the same unit embeddings of ``samples``, a sample
    of the pool spread over all of it (every m-th image: pools are often stored source after source).
    ``fit_density_ratio`` caps each side at 20,000 rows."""
    if bank is None:
        raise ValueError("the density_ratio column needs the teacher's target bank (its target-train embeddings): "
                         "train the teacher with plada (a given checkpoint has none), or turn density_ratio off")
    plain = dataclasses.replace(cfg, density_ratio=False, label_stability="off")
    sample = score_stream(model, samples, decode, preprocess_cfg, plain, features=True)
    if not len(sample.frame):
        raise ValueError("no pool image of the sample could be scored: the density ratio has nothing to fit on")
    emb = nn.functional.normalize(torch.from_numpy(sample.features.astype(np.float32)), dim=1).numpy()
    ratio = fit_density_ratio(bank.embeddings, emb, seed=seed)
    return ratio, {"n_target": len(bank.embeddings), "n_pool": len(emb), "n_dropped": sample.n_dropped}


def _prepared_batches(
    samples, decode, preprocess_cfg: PreprocessConfig, batch_size: int, pin: bool = False, hashes: bool = False
):
    """Read, decode and preprocess one batch at a time: (n read, indices, tensor or None, dropped, hash columns).

    ``pin``: page-locked host memory, so that the copy to a CUDA device can run asynchronously. ``hashes``:
    the ``HASH_COLUMNS`` of the decoded images (else an empty dict)."""
    for batch in _batched(samples, batch_size):
        indices, arrays, dropped, decoded = [], [], [], []
        for index, data in batch:
            try:
                image = decode(data)
                arrays.append(preprocess(image, preprocess_cfg))
                indices.append(index)
                if hashes:
                    decoded.append(image)
            except Exception as exc:  # noqa: BLE001 - any decode failure is a counted drop
                dropped.append({"index": int(index), "reason": f"{type(exc).__name__}: {exc}"[:200]})
        x = torch.from_numpy(np.stack(arrays)) if arrays else None
        yield len(batch), indices, x.pin_memory() if pin and x is not None else x, dropped, _hash_columns(decoded)


def _hash_columns(images: list[np.ndarray]) -> dict[str, object]:
    if not images:
        return {}
    same_shape = all(img.shape == images[0].shape for img in images)
    found = hash_images(np.stack(images) if same_shape else images)  # a stack hashes vectorised
    return {"exact_hash": list(found.exact), "phash": found.perceptual}


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "knn_sim": np.empty(0, np.float32),
            "knn_agree": np.empty(0, np.float32),
            "knn_nn": np.empty(0, np.int32),
            "energy_cdf": np.empty(0, np.float32),
            "index": np.empty(0, np.int64),
            "energy": np.empty(0, np.float32),
            "pred": np.empty(0, np.int32),
            "max_softmax": np.empty(0, np.float32),
            "entropy": np.empty(0, np.float32),
            "margin": np.empty(0, np.float32),
            "exact_hash": np.empty(0, object),
            "phash": np.empty(0, np.uint64),
            DENSITY_RATIO_COLUMN: np.empty(0, np.float32),
            LABEL_STABLE_COLUMN: np.empty(0, np.float32),
        }
    )
