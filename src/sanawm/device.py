"""Which torch device to run on: the one place that turns a user's `--device` into a device."""

from __future__ import annotations

import torch

from sanawm.errors import UserInputError


def choose_device(name: str | torch.device | None = None) -> torch.device:
    """The device `name` names ("cpu", "cuda", "cuda:1", ...), or by default CUDA when it is
    available and the CPU otherwise. An unknown name, or CUDA where there is none, is a
    `UserInputError`."""
    if name is None or name == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserInputError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device {str(name)!r} asked for, but CUDA is not available")
    return device


__all__ = ["choose_device"]
