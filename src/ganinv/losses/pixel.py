"""Pixel-wise mean squared error, the basic reconstruction loss of latent-optimization inversion
(e.g. Abdal, Qin & Wonka, "Image2StyleGAN", ICCV 2019, which pairs it with a perceptual loss)."""
from __future__ import annotations

import torch
from torch import nn

from ._reduce import check_pair, check_reduction, reduce_batch


class PixelMSELoss(nn.Module):
    """Mean over C, H, W of the squared difference; `reduction` over the batch ('mean'|'sum'|'none')."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor,
                reduction: str | None = None) -> torch.Tensor:
        check_pair(reconstruction, target, "PixelMSELoss")
        per_image = (reconstruction - target).square().flatten(1).mean(dim=1)
        return reduce_batch(per_image, reduction or self.reduction)
