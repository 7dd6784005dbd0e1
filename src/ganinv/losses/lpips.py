"""LPIPS perceptual loss (Zhang et al., CVPR 2018) with a genuine VGG16 backbone, as in the
StyleGAN2 projector (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", 2020).

Built only when asked for; raises `WeightsUnavailable` naming the missing files and the folders
searched when the pretrained weights are not on this machine (never falls back to random weights).
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ..metrics.lpips import LPIPS, WeightsUnavailable, load_lpips
from ._reduce import check_pair, check_reduction, reduce_batch

__all__ = ["LPIPSLoss", "WeightsUnavailable"]


class LPIPSLoss(nn.Module):
    """LPIPS distance as a loss; gradients flow to the images, the network stays frozen.

    Args:
        net: "vgg" (default, as in the StyleGAN2 projector) or "alex".
        weights_dir: an extra folder to search for the weights (see `ganinv.metrics.load_lpips`).
        model: an already-loaded `LPIPS` (skips the search).
    """

    def __init__(self, net: str = "vgg", weights_dir: str | os.PathLike | None = None,
                 model: LPIPS | None = None, reduction: str = "mean"):
        super().__init__()
        check_reduction(reduction)
        self.model = model if model is not None else load_lpips(net, weights_dir)
        self.model.requires_grad_(False)
        self.reduction = reduction

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor,
                reduction: str | None = None) -> torch.Tensor:
        check_pair(reconstruction, target, "LPIPSLoss")
        per_image = self.model(reconstruction, target.detach())
        return reduce_batch(per_image, reduction or self.reduction)
