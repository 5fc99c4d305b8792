"""Domain-aware relevance: how close each reference image is to the target data, in the teacher's own features.

The paper ranks the pool by energy alone. A small teacher without outlier exposure can give far-OOD images
(clothes, silhouettes) *lower* energy than the target-like ones (research/data.md: AUROC 0.29–0.44 on the digits
pair), so energy says little about relevance there. The target training images themselves say more: a pool image
whose teacher embedding lies close to many target embeddings looks like the task.

- ``TargetBank``: L2-normalised teacher embeddings of the target training split (capped at ``max_size`` rows,
  seeded subsample), their labels, and the teacher's logits on them (energies at any temperature). Built once at teacher time, stored next to
  the checkpoint (``to_bytes``/``from_bytes``; storage stays in ``plada_core.io``/tasks).
- ``knn_scores``: for a batch of pool embeddings, the mean cosine similarity to the ``k`` nearest bank rows
  (``knn_sim``), the share of those neighbours whose label equals the teacher's prediction (``knn_agree``), the
  nearest bank row (``knn_nn``, for coverage-style selection) and where the image's energy falls in the bank's
  energy distribution (``energy_cdf``: the fraction of target energies at or below it).

Everything is a pure function of tensors and arrays; the bank subsample is seeded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from plada_core.devices import model_device

__all__ = [
    "RELEVANCE_COLUMNS",
    "TargetBank",
    "build_bank",
    "embed",
    "features_and_logits",
    "knn_scores",
    "pooled_features",
]

RELEVANCE_COLUMNS = ["knn_sim", "knn_agree", "knn_nn", "energy_cdf"]
BANK_FORMAT = "plada-target-bank/1"


@dataclass(frozen=True, eq=False)
class TargetBank:
    """Target-train embeddings (unit rows, float32), their int64 labels and the teacher's logits on them."""

    embeddings: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    k: int = 5

    def __post_init__(self) -> None:
        n = len(self.embeddings)
        if self.embeddings.ndim != 2 or n == 0:
            raise ValueError(f"bank embeddings must be a non-empty 2-D array, got shape {self.embeddings.shape}")
        if len(self.labels) != n or len(self.logits) != n:
            raise ValueError(f"bank rows differ: {n} embeddings, {len(self.labels)} labels, {len(self.logits)} logits")
        if not 1 <= self.k:
            raise ValueError(f"k must be >= 1, got {self.k!r}")

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def energies(self, temperature: float = 1.0) -> np.ndarray:
        """``-T·logsumexp(logits/T)`` of every bank row, as ``score_logits`` computes it for the pool."""
        logits = torch.from_numpy(self.logits).double()
        return (-temperature * torch.logsumexp(logits / temperature, dim=1)).float().numpy()

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            format=np.array(BANK_FORMAT),
            embeddings=self.embeddings.astype(np.float16),  # half the bytes; cosine ranks do not move
            labels=self.labels.astype(np.int64),
            logits=self.logits.astype(np.float32),
            k=np.array(self.k),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "TargetBank":
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                if str(z["format"]) != BANK_FORMAT:
                    raise ValueError(f"format {str(z['format'])!r}, expected {BANK_FORMAT!r}")
                return cls(
                    embeddings=z["embeddings"].astype(np.float32),
                    labels=z["labels"].astype(np.int64),
                    logits=z["logits"].astype(np.float32),
                    k=int(z["k"]),
                )
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"not a PLADA target bank: {exc}") from exc


def _pool(feats: torch.Tensor) -> torch.Tensor:
    """timm models may return unpooled maps from ``forward_features``; PLADA's own return vectors."""
    return feats.mean(dim=tuple(range(2, feats.ndim))) if feats.ndim > 2 else feats


def pooled_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled ``forward_features``, logits) of one batch in one forward pass."""
    feats = model.forward_features(x)
    return _pool(feats), model.forward_head(feats)


def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled, L2-normalised embedding, logits) of one batch in one forward pass."""
    feats, logits = pooled_features(model, x)
    return nn.functional.normalize(feats.float(), dim=1), logits


@torch.no_grad()
def embed(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> tuple[np.ndarray, torch.Tensor]:
    """Normalised embeddings (float32 numpy) and logits (CPU tensor) of ``x``, batched on the model's device,
    in eval mode."""
    model.eval()
    device = model_device(model)
    embs, logits = [], []
    for i in range(0, len(x), batch_size):
        e, lg = features_and_logits(model, x[i : i + batch_size].to(device))
        embs.append(e.cpu())
        logits.append(lg.cpu())
    return torch.cat(embs).numpy(), torch.cat(logits)


def build_bank(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    k: int = 5,
    max_size: int = 20_000,
    seed: int = 0,
) -> TargetBank:
    """The target bank of ``model`` on the target training images ``(x, y)``.

    At most ``max_size`` rows (a seeded uniform subsample, kept in original order) so that scoring stays
    cheap on a large target; ``k`` is capped by the bank size.
    """
    if len(x) > max_size:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), max_size, replace=False))
        x, y = x[torch.from_numpy(keep)], y[torch.from_numpy(keep)]
    embeddings, logits = embed(model, x)
    return TargetBank(embeddings, np.asarray(y, np.int64), logits.float().numpy(), k=min(k, len(x)))


def knn_scores(
    emb: torch.Tensor,
    pred: np.ndarray,
    energy: np.ndarray,
    bank: TargetBank,
    temperature: float = 1.0,
    bank_embeddings: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """Relevance columns for a batch: ``emb`` (n×d, unit rows), the teacher's ``pred`` and ``energy`` (at
    ``temperature``) per row. ``bank_embeddings``: ``bank.embeddings`` already on ``emb``'s device (score_stream
    moves them once per shard, not once per batch); the similarities are computed there."""
    if emb.shape[1] != bank.dim:
        raise ValueError(f"embedding dim {emb.shape[1]} does not match the bank's {bank.dim}: another teacher?")
    if bank_embeddings is None:
        bank_embeddings = torch.from_numpy(bank.embeddings).to(emb.device)
    sims = emb.float() @ bank_embeddings.T
    top = sims.topk(bank.k, dim=1)
    values, indices = top.values.cpu(), top.indices.cpu()
    neighbour_labels = bank.labels[indices.numpy()]
    sorted_energies = np.sort(bank.energies(temperature))
    return {
        "knn_sim": values.mean(dim=1).numpy().astype(np.float32),
        "knn_agree": (neighbour_labels == np.asarray(pred)[:, None]).mean(axis=1).astype(np.float32),
        "knn_nn": indices[:, 0].numpy().astype(np.int32),
        "energy_cdf": (np.searchsorted(sorted_energies, energy, side="right") / len(sorted_energies)).astype(
            np.float32
        ),
    }
