"""Shape checks shared by the metrics."""
from __future__ import annotations

import torch


def check_image_pair(a: torch.Tensor, b: torch.Tensor, name: str = "metric") -> None:
    """Both tensors must be NCHW images of the same shape."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError(f"{name}: expected two torch tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.ndim != 4 or b.ndim != 4:
        raise ValueError(f"{name}: expected images of shape [N, C, H, W], got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"{name}: images must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
