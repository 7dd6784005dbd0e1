"""Noise regularization of the StyleGAN2 projector (Karras et al., "Analyzing and Improving the Image
Quality of StyleGAN", CVPR 2020, appendix D): keeps optimized per-layer noise maps from encoding the
image's content by penalizing their spatial autocorrelation at every scale.

For each noise map n the penalty sums, over a pyramid n_0 = n, n_{i+1} = 2x2 average pool of n_i
(until 8x8), the squared mean of n_i times itself shifted by one pixel in x and, separately, in y
(with wrap-around). The projector also renormalizes the maps to zero mean and unit variance after
every step: `normalize_noise_`.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ._reduce import check_reduction, reduce_batch

MIN_SIZE = 8


def _as_batch(noise: torch.Tensor, name: str) -> torch.Tensor:
    """[H, W] or [N, 1, H, W] (or [N, C, H, W]) -> [N, C, H, W]."""
    if noise.ndim == 2:
        return noise[None, None]
    if noise.ndim == 4:
        return noise
    raise ValueError(f"noise map {name!r}: expected [H, W] or [N, 1, H, W], got {tuple(noise.shape)}")


def noise_autocorrelation_penalty(noise: torch.Tensor) -> torch.Tensor:
    """Multi-scale autocorrelation penalty of one noise map batch [N, C, H, W] -> [N]."""
    penalty = noise.new_zeros(noise.shape[0])
    while True:
        shifted_x = torch.roll(noise, shifts=1, dims=3)
        shifted_y = torch.roll(noise, shifts=1, dims=2)
        penalty = penalty + (noise * shifted_x).flatten(1).mean(dim=1).square()
        penalty = penalty + (noise * shifted_y).flatten(1).mean(dim=1).square()
        if min(noise.shape[-2:]) <= MIN_SIZE:
            break
        noise = F.avg_pool2d(noise, kernel_size=2)
    return penalty


class NoiseRegularization(nn.Module):
    """Sum over noise maps of `noise_autocorrelation_penalty`.

    `forward(noise)` takes the dict {buffer name: [H, W] or [N, 1, H, W]} passed to G.synthesis.
    With 'none' reduction it returns [N] (maps shared by the batch count for every image).
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction

    def forward(self, noise: Mapping[str, torch.Tensor], reduction: str | None = None) -> torch.Tensor:
        if not noise:
            raise ValueError("NoiseRegularization: no noise maps given")
        batch = max(_as_batch(v, k).shape[0] for k, v in noise.items())
        total = None
        for name, value in noise.items():
            penalty = noise_autocorrelation_penalty(_as_batch(value, name))
            if penalty.shape[0] not in (1, batch):
                raise ValueError(f"noise map {name!r} has batch {penalty.shape[0]}, others have {batch}")
            penalty = penalty.expand(batch)
            total = penalty if total is None else total + penalty
        return reduce_batch(total, reduction or self.reduction)


def normalize_noise_(noise: Mapping[str, torch.Tensor]) -> None:
    """In place: each map to zero mean and unit standard deviation (per image for [N, 1, H, W])."""
    with torch.no_grad():
        for name, value in noise.items():
            batch = _as_batch(value, name)
            centered = batch.flatten(1) - batch.flatten(1).mean(dim=1, keepdim=True)
            # Population standard deviation, as the projector (unit mean square after centering).
            std = centered.square().mean(dim=1, keepdim=True).sqrt().clamp_min(1e-8)
            value.copy_((centered / std).view_as(batch).view_as(value))
