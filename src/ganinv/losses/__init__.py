"""Losses for inversion: one per file, each an nn.Module built only when its weight is non-zero.

`build_reconstruction_loss(weights, D=None, lpips_dir=None)` sums the terms named in `weights`:

    "mse"                     pixel MSE                                 (pixel.py)
    "laplacian"               Laplacian-pyramid L1, Clone's L_recon      (laplacian.py)
    "lpips"                   LPIPS with a genuine VGG16 backbone        (lpips.py)
    "discriminator_features"  perceptual loss in D's feature space       (discriminator_features.py)
    "noise_regularization"    StyleGAN2 projector noise penalty          (noise_regularization.py)
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..metrics.lpips import WeightsUnavailable
from ._reduce import check_reduction
from .discriminator_features import DiscriminatorFeatureLoss, frozen_parameters
from .laplacian import (LaplacianPyramidLoss, collapse_laplacian_pyramid, default_levels, laplacian_band_mse,
                        laplacian_pyramid, laplacian_pyramid_loss, laplacian_residual_terms)
from .lpips import LPIPSLoss
from .noise_regularization import NoiseRegularization, noise_autocorrelation_penalty, normalize_noise_
from .pixel import PixelMSELoss


def _build_discriminator_features(D: nn.Module | None, lpips_dir: str | os.PathLike | None) -> nn.Module:
    if D is None:
        raise ValueError("the 'discriminator_features' loss needs the model's discriminator: pass D")
    return DiscriminatorFeatureLoss(D)


# name -> factory(D, lpips_dir) (explicit registry; image losses take (reconstruction, target)).
LOSSES: dict[str, Callable[[nn.Module | None, str | os.PathLike | None], nn.Module]] = {
    "mse": lambda D, lpips_dir: PixelMSELoss(),
    "laplacian": lambda D, lpips_dir: LaplacianPyramidLoss(),
    "lpips": lambda D, lpips_dir: LPIPSLoss("vgg", weights_dir=lpips_dir),
    "discriminator_features": _build_discriminator_features,
    "noise_regularization": lambda D, lpips_dir: NoiseRegularization(),
}


class ReconstructionLoss(nn.Module):
    """Weighted sum of loss terms.

    `forward(reconstruction, target, noise=None, c=None, reduction="mean")` returns
    `(total, terms)`: `total` is the weighted sum (a scalar, or [N] with reduction="none") to
    backpropagate; `terms` maps each term's name to its unweighted value, detached, for logging.
    `noise` (the dict passed to G.synthesis) is required when "noise_regularization" is on; `c` is
    the label for a conditional D.
    """

    def __init__(self, terms: Mapping[str, nn.Module], weights: Mapping[str, float]):
        super().__init__()
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = {name: float(weights[name]) for name in terms}

    @property
    def needs_noise(self) -> bool:
        return "noise_regularization" in self.terms

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor,
                noise: Mapping[str, torch.Tensor] | None = None, c: torch.Tensor | None = None,
                reduction: str = "mean") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        check_reduction(reduction)
        total = None
        values: dict[str, torch.Tensor] = {}
        for name, term in self.terms.items():
            if name == "noise_regularization":
                if noise is None:
                    raise ValueError("noise_regularization is on: pass the optimized noise dict as noise=")
                value = term(noise, reduction=reduction)
            elif name == "discriminator_features":
                value = term(reconstruction, target, c=c, reduction=reduction)
            else:
                value = term(reconstruction, target, reduction=reduction)
            values[name] = value.detach()
            weighted = self.weights[name] * value
            total = weighted if total is None else total + weighted
        if total is None:
            total = reconstruction.new_zeros(() if reduction != "none" else reconstruction.shape[:1])
        return total, values


def build_reconstruction_loss(weights: Mapping[str, float], D: nn.Module | None = None,
                              lpips_dir: str | os.PathLike | None = None) -> ReconstructionLoss:
    """A `ReconstructionLoss` with the terms whose weight is non-zero.

    Args:
        weights: {term name: weight}, names from `LOSSES`; zero weights build nothing (so an absent
            LPIPS backbone only matters when "lpips" is asked for).
        D: the discriminator, needed for "discriminator_features".
        lpips_dir: an extra folder searched for the LPIPS weights.

    Raises:
        ValueError for an unknown name, a negative or non-finite weight, or no non-zero weight;
        WeightsUnavailable when "lpips" is asked for and its pretrained weights are absent.
    """
    unknown = sorted(set(weights) - set(LOSSES))
    if unknown:
        raise ValueError(f"unknown loss term(s) {unknown}; choose from {sorted(LOSSES)}")
    terms: dict[str, nn.Module] = {}
    for name, weight in weights.items():
        weight = float(weight)
        if not torch.isfinite(torch.tensor(weight)) or weight < 0:
            raise ValueError(f"loss weight {name}={weight} must be finite and >= 0")
        if weight != 0:
            terms[name] = LOSSES[name](D, lpips_dir)
    if not terms:
        raise ValueError(f"all loss weights are zero: {dict(weights)}")
    return ReconstructionLoss(terms, weights)


__all__ = ["LOSSES", "DiscriminatorFeatureLoss", "LPIPSLoss", "LaplacianPyramidLoss", "NoiseRegularization",
           "PixelMSELoss", "ReconstructionLoss", "WeightsUnavailable", "build_reconstruction_loss",
           "collapse_laplacian_pyramid", "default_levels", "frozen_parameters", "laplacian_band_mse",
           "laplacian_pyramid", "laplacian_pyramid_loss", "laplacian_residual_terms",
           "noise_autocorrelation_penalty", "normalize_noise_"]
