"""Laplacian-pyramid L1 loss, the reconstruction loss L_recon of Clone (Feng et al., "Near Perfect
GAN Inversion", Sec. 3.3), built on the Laplacian pyramid of Burt & Adelson (1983) as used for
image losses by Bojanowski et al. ("Optimizing the Latent Space of Generative Networks", 2018).

Definition used here: a separable 5-tap binomial kernel
[1, 4, 6, 4, 1] / 16 with reflect padding; each level blurs and subsamples by 2, the band-pass
level is the image minus the upsampled (zero-insert, blur with gain 4) low-pass; log2(res) - 2
band-pass levels (the last low-pass is 4x4 for a power-of-two image) plus the low-pass residual.
The loss is the sum over levels of each level's mean absolute difference.

`laplacian_band_mse` is a second use of the same pyramid: squared error per band, weighted finest first.
A network fitted to one image learns its low frequencies first and its finest detail last (the spectral
bias: Rahaman et al., "On the Spectral Bias of Neural Networks", ICML 2019; Ulyanov et al., "Deep Image
Prior", CVPR 2018), so weighting the fine bands of the residual above plain MSE counteracts it, in the
spirit of the focal frequency loss (Jiang et al., ICCV 2021) but with fixed weights. Clone uses it
(benchmarks/clone_sweep.py measures the gain).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._reduce import check_pair, check_reduction, reduce_batch

_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


def default_levels(height: int, width: int) -> int:
    """log2(min side) - 2 band-pass levels (at least 0)."""
    return max(0, int(math.floor(math.log2(min(height, width)))) - 2)


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Separable binomial blur of [N, C, H, W] with reflect padding, scaled by `gain` (per 2-D filter).

    Written as weighted sums of shifted slices: on the small images of a pyramid this is about twice as
    fast on CPU as a depthwise convolution (grouped conv2d), and it is the same filter."""
    height, width = x.shape[-2:]
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    a, b, c = (w / 16.0 for w in _BINOMIAL[:3])
    x = a * (x[..., 0:width] + x[..., 4:width + 4]) + b * (x[..., 1:width + 1] + x[..., 3:width + 3]) \
        + c * x[..., 2:width + 2]
    x = a * (x[..., 0:height, :] + x[..., 4:height + 4, :]) + b * (x[..., 1:height + 1, :] + x[..., 3:height + 3, :]) \
        + c * x[..., 2:height + 2, :]
    return x * gain if gain != 1.0 else x


def _downsample(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[:, :, ::2, ::2]


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-insert to 2x, crop to `size`, blur with gain 4 (restores the mean level)."""
    n, channels, height, width = x.shape
    up = x.new_zeros(n, channels, height * 2, width * 2)
    up[:, :, ::2, ::2] = x
    return _blur(up[:, :, :size[0], :size[1]], gain=4.0)


def laplacian_pyramid(img: torch.Tensor, levels: int | None = None) -> list[torch.Tensor]:
    """Laplacian pyramid of [N, C, H, W]: `levels` band-pass images (finest first) + the low-pass residual.

    `levels` defaults to log2(min(H, W)) - 2. `collapse_laplacian_pyramid` inverts it exactly (up
    to float rounding). Differentiable.
    """
    if img.ndim != 4:
        raise ValueError(f"laplacian_pyramid: expected [N, C, H, W], got {tuple(img.shape)}")
    if levels is None:
        levels = default_levels(*img.shape[-2:])
    if levels < 0:
        raise ValueError(f"laplacian_pyramid: levels must be >= 0, got {levels}")
    pyramid = []
    current = img
    for level in range(levels):
        if min(current.shape[-2:]) < 3:
            raise ValueError(f"laplacian_pyramid: {levels} levels is too many for a "
                             f"{img.shape[-2]}x{img.shape[-1]} image (level {level} is "
                             f"{current.shape[-2]}x{current.shape[-1]})")
        low = _downsample(current)
        pyramid.append(current - _upsample(low, current.shape[-2:]))
        current = low
    pyramid.append(current)
    return pyramid


def collapse_laplacian_pyramid(pyramid: list[torch.Tensor]) -> torch.Tensor:
    """Rebuild the image from `laplacian_pyramid`'s output."""
    img = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        img = band + _upsample(img, band.shape[-2:])
    return img


def laplacian_pyramid_loss(reconstruction: torch.Tensor, target: torch.Tensor, levels: int | None = None,
                           reduction: str = "mean") -> torch.Tensor:
    """Sum over pyramid levels of the mean absolute difference per image; reduced over the batch. The
    pyramid is linear, so the levels' differences are the pyramid of the difference: one pyramid, not two."""
    return _residual_terms(reconstruction, target, (), levels, reduction, "laplacian_pyramid_loss")[0]


def laplacian_band_mse(reconstruction: torch.Tensor, target: torch.Tensor, weights, levels: int | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    """sum_k weights[k] * mean((band_k of reconstruction - target)^2), bands finest first (the last level
    is the low-pass residual); levels without a weight count 0. The pyramid is linear, so it is taken once,
    of the difference."""
    return _residual_terms(reconstruction, target, weights, levels, reduction, "laplacian_band_mse")[1]


def laplacian_residual_terms(reconstruction: torch.Tensor, target: torch.Tensor, weights=(),
                             levels: int | None = None, reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """(laplacian_pyramid_loss, laplacian_band_mse) of one pair from a single pyramid of the difference:
    Clone needs both every step (L_recon for its epsilon stop, the band MSE in its objective)."""
    return _residual_terms(reconstruction, target, weights, levels, reduction, "laplacian_residual_terms")


def _residual_terms(reconstruction: torch.Tensor, target: torch.Tensor, weights, levels: int | None,
                    reduction: str, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The three functions above: per-level L1 sum and weighted band MSE of the residual's pyramid."""
    check_pair(reconstruction, target, name)
    if levels is None:
        levels = default_levels(*reconstruction.shape[-2:])
    weights = [float(w) for w in weights]
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"{name}: weights must be finite and >= 0, got {weights}")
    if len(weights) > levels + 1:
        raise ValueError(f"{name}: {len(weights)} weights for a pyramid of {levels + 1} levels "
                         f"({reconstruction.shape[-2]}x{reconstruction.shape[-1]} images)")
    l1 = reconstruction.new_zeros(reconstruction.shape[0])
    band_mse = reconstruction.new_zeros(reconstruction.shape[0])
    for k, band in enumerate(laplacian_pyramid(reconstruction - target, levels)):
        l1 = l1 + band.abs().flatten(1).mean(dim=1)
        if k < len(weights) and weights[k]:
            band_mse = band_mse + weights[k] * band.square().flatten(1).mean(dim=1)
    return reduce_batch(l1, reduction), reduce_batch(band_mse, reduction)


class LaplacianPyramidLoss(nn.Module):
    """`laplacian_pyramid_loss` as a module (Clone's L_recon)."""

    def __init__(self, levels: int | None = None, reduction: str = "mean"):
        super().__init__()
        check_reduction(reduction)
        self.levels = levels
        self.reduction = reduction

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor,
                reduction: str | None = None) -> torch.Tensor:
        return laplacian_pyramid_loss(reconstruction, target, self.levels, reduction or self.reduction)
