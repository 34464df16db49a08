"""Device choice: the first visible GPU, else the CPU — no config needed."""

from __future__ import annotations

import torch


def pick_device() -> torch.device:
    """``cuda`` when a GPU is visible to this process, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def gpu_visible() -> bool:
    """Whether this process sees a GPU."""
    return torch.cuda.is_available()
