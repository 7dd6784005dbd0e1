"""Reduction over the batch shared by the losses."""
from __future__ import annotations

import torch

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def reduce_batch(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    """[N] per-image values -> scalar ('mean', 'sum') or unchanged ('none')."""
    check_reduction(reduction)
    if reduction == "mean":
        return per_image.mean()
    if reduction == "sum":
        return per_image.sum()
    return per_image


def check_pair(reconstruction: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if reconstruction.ndim != 4 or reconstruction.shape != target.shape:
        raise ValueError(f"{name}: expected reconstruction and target of the same shape [N, C, H, W], "
                         f"got {tuple(reconstruction.shape)} and {tuple(target.shape)}")
