"""Using a trained classifier: top-k class names per image, and the model exported for runtimes without PLADA.

A PLADA checkpoint carries its model, class names and preprocessing (``plada_core.classifier.checkpoint_meta``),
so prediction needs nothing else: each image is decoded, preprocessed exactly as in training
(``plada_core.images.preprocess``) and classified. No storage is touched here; ``plada_core.io`` reads the files.

Exported models (TorchScript, ONNX) contain the network only. Their input is the *preprocessed* image batch, a
float32 ``N x C x S x S`` tensor in [0, 1] (``C`` channels, ``S`` pixels a side, made as ``preprocess`` makes
it), and their output is the ``N x num_classes`` logits (softmax for probabilities; column ``i`` is
``class_names[i]``). :func:`model_card` is that contract as JSON, written beside the export (``student.json``),
so another runtime can reproduce the preprocessing.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict
from typing import Sequence

import numpy as np
import torch
from torch import nn

from plada_core.images import PreprocessConfig, preprocess_batch

__all__ = ["EXPORT_FORMATS", "check_export", "export_model", "model_card", "predict_top_k", "top_k"]

EXPORT_FORMATS = ("torchscript", "onnx")
CARD_FORMAT = "plada-model-card/1"


def top_k(probabilities: np.ndarray, class_names: Sequence[str], k: int) -> list[list[dict]]:
    """Per row of ``probabilities`` (N x C), its ``k`` most probable classes as ``{"class", "label", "p"}``,
    most probable first (ties: lower label first)."""
    if k < 1:
        raise ValueError(f"top-k needs k >= 1, got {k}")
    if probabilities.shape[1] != len(class_names):
        raise ValueError(f"the model has {probabilities.shape[1]} outputs but {len(class_names)} class names")
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [[{"class": class_names[c], "label": int(c), "p": round(float(row[c]), 6)} for c in best]
            for row, best in zip(probabilities, order)]  # fmt: skip


@torch.no_grad()
def predict_top_k(model: nn.Module, preprocess: PreprocessConfig, images: Sequence[np.ndarray],
                  class_names: Sequence[str], k: int = 3, batch_size: int = 256) -> list[list[dict]]:  # fmt: skip
    """Top-``k`` classes (:func:`top_k`) of each decoded uint8 image, preprocessed as the model was trained."""
    model.eval()
    device = next(model.parameters()).device
    out: list[list[dict]] = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(preprocess_batch(images[start : start + batch_size], preprocess))
        probs = torch.softmax(model(x.to(device)).float(), dim=1).cpu().numpy()
        out.extend(top_k(probs, class_names, k))
    return out


def _example(preprocess: PreprocessConfig) -> torch.Tensor:
    return torch.zeros(1, preprocess.channels, preprocess.image_size, preprocess.image_size)


def check_export(fmt: str) -> None:
    """Raise unless this machine can export ``fmt``: a known format, and for ``onnx`` the ``onnx`` package."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401 - torch's ONNX exporter needs it
        except ImportError:
            raise ImportError("ONNX export needs the 'onnx' package, which is not installed: `pip install onnx` "
                              "(or export with --export torchscript)") from None


def export_model(model: nn.Module, preprocess: PreprocessConfig, fmt: str) -> bytes:
    """The bytes of ``model`` (moved to the CPU, eval mode) as ``fmt``: ``torchscript`` (``torch.jit.load``) or
    ``onnx`` (needs the ``onnx`` package); batch size is free in both."""
    check_export(fmt)
    model = model.cpu().eval()
    buf = io.BytesIO()
    if fmt == "torchscript":
        # Traced at the model's one input size (shape-dependent branches become constants: expected, since the
        # preprocessing fixes the size); torch's deprecation notices for TorchScript concern its future, not this.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(model, _example(preprocess), check_trace=False)
            torch.jit.save(traced, buf)
        return buf.getvalue()
    torch.onnx.export(model, (_example(preprocess),), buf, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return buf.getvalue()


def model_card(meta: dict, files: dict[str, str]) -> dict:
    """The JSON that travels beside exported models (``files``: export format → file name): their input and output
    contract, the preprocessing that makes their input, the class names, and the checkpoint's provenance."""
    pre = PreprocessConfig(**meta["preprocess"])
    return {
        "format": CARD_FORMAT,
        "files": dict(files),
        "input": {"name": "image", "dtype": "float32", "shape": ["N", pre.channels, pre.image_size, pre.image_size],
                  "range": [0.0, 1.0]},
        "output": {"name": "logits", "shape": ["N", int(meta["num_classes"])],
                   "meaning": "logits; softmax gives probabilities; column i is class_names[i]"},
        "preprocess": asdict(pre),
        "preprocess_steps": [
            "decode to uint8 (grayscale stays HxW, anything else RGB HxWx3, alpha dropped)",
            "crop 'content': crop to the bounding box of pixels brighter than 25% of the image maximum, then pad "
            "to a square (crop 'none': keep the frame)",
            "resize to image_size x image_size (box filter when shrinking, bilinear when enlarging)",
            "scale to [0, 1] (divide by 255); channels 1 from RGB: 0.299 R + 0.587 G + 0.114 B",
            "layout CHW, add the batch dimension",
        ],
        "class_names": list(meta.get("class_names") or []),
        "meta": {k: v for k, v in meta.items() if k not in ("preprocess", "class_names")},
    }
