"""Where models run: the GPU when there is one, else the CPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def default_device() -> torch.device:
    """The device models are loaded on and trained on."""
    import torch  # on first use: importing fslm_core does not import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
