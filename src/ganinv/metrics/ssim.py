"""Structural similarity (Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error
visibility to structural similarity", IEEE TIP 2004).

As the paper sets it: an 11x11 Gaussian window with sigma 1.5,
K1 = 0.01, K2 = 0.03, images mapped from [-1, 1] to [0, 1] (data range 1), local statistics with the
population (not sample) covariance, the SSIM map averaged over the valid region (no padding: only
positions where the whole window fits) and over channels. This matches scikit-image's
`structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=1)`, which is checked in tests.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._checks import check_image_pair

WINDOW_SIZE = 11
SIGMA = 1.5
K1 = 0.01
K2 = 0.03
DATA_RANGE = 1.0


def gaussian_window(size: int = WINDOW_SIZE, sigma: float = SIGMA, dtype=torch.float64) -> torch.Tensor:
    """1-D Gaussian of `size` taps, normalized to sum 1."""
    center = (size - 1) / 2
    taps = torch.tensor([math.exp(-((i - center) ** 2) / (2 * sigma ** 2)) for i in range(size)], dtype=dtype)
    return taps / taps.sum()


def _filter_valid(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of [B, 1, H, W] with no padding (valid region only)."""
    size = window.numel()
    x = F.conv2d(x, window.view(1, 1, 1, size))
    return F.conv2d(x, window.view(1, 1, size, 1))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM per image for images in [-1, 1]: [N, C, H, W] x2 -> [N] (float32); needs H, W >= 11."""
    check_image_pair(a, b, "ssim")
    n, channels, height, width = a.shape
    if height < WINDOW_SIZE or width < WINDOW_SIZE:
        raise ValueError(f"ssim: images must be at least {WINDOW_SIZE}x{WINDOW_SIZE}, got {height}x{width}")
    # float64 keeps the local variances (differences of small moments) accurate.
    x = ((a.detach().double() + 1) / 2).reshape(n * channels, 1, height, width)
    y = ((b.detach().double() + 1) / 2).reshape(n * channels, 1, height, width)
    window = gaussian_window().to(x.device)
    mean_x = _filter_valid(x, window)
    mean_y = _filter_valid(y, window)
    variance_x = _filter_valid(x * x, window) - mean_x ** 2
    variance_y = _filter_valid(y * y, window) - mean_y ** 2
    covariance = _filter_valid(x * y, window) - mean_x * mean_y
    c1 = (K1 * DATA_RANGE) ** 2
    c2 = (K2 * DATA_RANGE) ** 2
    ssim_map = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / (
        (mean_x ** 2 + mean_y ** 2 + c1) * (variance_x + variance_y + c2))
    return ssim_map.reshape(n, channels, -1).mean(dim=2).mean(dim=1).float()
