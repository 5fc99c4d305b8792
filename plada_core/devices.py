"""Where torch work runs: one spelling of device names for every stage config.

A config stores a device as a string (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, …) so that it stays a plain,
serialisable value in flow parameters and checkpoints; ``resolve_device`` turns it into a ``torch.device`` in the
process that does the work, which is where "auto" has to be decided (a Prefect worker with a GPU and the laptop
that scheduled the run see different hardware).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["check_device", "model_device", "resolve_device"]


def check_device(name: str) -> None:
    """Raise ValueError naming ``name`` unless it is ``"auto"`` or a torch device string. Needs no GPU."""
    if name == "auto":
        return
    try:
        torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto' or a torch device such as 'cpu' or 'cuda:0', got {name!r}") from exc


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when this process sees a GPU, else the CPU. A bare ``cuda`` gets the current index, as
    parameters report it (``cuda:0``), so that comparing a model's device with the resolved one works."""
    check_device(name)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s parameters (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))
