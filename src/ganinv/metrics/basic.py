"""Pixel metrics on images in [-1, 1]: mean squared error and PSNR.

PSNR uses the peak-to-peak range of [-1, 1], which is 2, so PSNR = 10 log10(2^2 / MSE); the same
image compared on [0, 255] gives the same number. 35 dB means MSE <= 0.00126 on [-1, 1].
"""
from __future__ import annotations

import torch

from ._checks import check_image_pair

PEAK_TO_PEAK = 2.0


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image over channels and pixels: [N, C, H, W] x2 -> [N] (float32)."""
    check_image_pair(a, b, "mse")
    difference = a.detach().float() - b.detach().float()
    return difference.square().flatten(1).mean(dim=1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image for images in [-1, 1] -> [N] (inf where identical)."""
    error = mse(a, b).double()
    return (10.0 * torch.log10(PEAK_TO_PEAK ** 2 / error)).float()


def mse_from_psnr(decibels: float) -> float:
    """The MSE on [-1, 1] that a PSNR corresponds to (for thresholds such as Clone's target_psnr)."""
    return PEAK_TO_PEAK ** 2 / 10.0 ** (decibels / 10.0)
