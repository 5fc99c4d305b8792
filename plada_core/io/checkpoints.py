"""Model checkpoints on any URL: ``{"state_dict", "meta"}`` saved with torch, loaded with ``weights_only=True``."""

from __future__ import annotations

import io

import torch
from torch import nn

from plada_core.io import storage

__all__ = ["card_url", "export_url", "load_checkpoint", "save_checkpoint"]

_EXPORT_SUFFIXES = {"torchscript": ".torchscript.pt", "onnx": ".onnx"}


def _stem(checkpoint_url: str) -> str:
    return checkpoint_url.removesuffix(".pt")


def export_url(checkpoint_url: str, fmt: str) -> str:
    """Where the ``fmt`` export of a checkpoint lives, beside it: ``student.pt`` → ``student.torchscript.pt`` or
    ``student.onnx``."""
    if fmt not in _EXPORT_SUFFIXES:
        raise ValueError(f"unknown export format {fmt!r}: choose one of {', '.join(_EXPORT_SUFFIXES)}")
    return _stem(checkpoint_url) + _EXPORT_SUFFIXES[fmt]


def card_url(checkpoint_url: str) -> str:
    """The JSON beside a checkpoint's exports (``student.pt`` → ``student.json``): input contract, preprocessing,
    class names (``plada_core.inference.model_card``)."""
    return _stem(checkpoint_url) + ".json"


def save_checkpoint(model: nn.Module, meta: dict, url: str) -> str:
    """``meta`` must be plain JSON-like data (it is read back under ``weights_only=True``)."""
    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "meta": meta}, buf)
    return storage.write_bytes(url, buf.getvalue())


def load_checkpoint(url: str) -> tuple[dict, dict]:
    """(state_dict, meta). A bare state dict (no ``meta``) is accepted and returns empty meta."""
    data = storage.read_bytes(url)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign files
        raise ValueError(f"{url} is not a loadable torch checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict) and "state_dict" in obj:
        return obj["state_dict"], dict(obj.get("meta") or {})
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    raise ValueError(f"{url} holds neither a state dict nor a PLADA checkpoint")
