"""Discriminator-feature perceptual loss: compare the target and the reconstruction in the feature
space of the GAN's own discriminator, a perceptual loss that needs no external weights (the
"feature matching" idea of Salimans et al., 2016, used as an image-similarity measure as in
Larsen et al., "Autoencoding beyond pixels using a learned similarity metric", ICML 2016).

For each block activation f of `D.features(img, c)` the loss is the mean |f_rec - f_target|^p
divided by the mean |f_target|^p (p = 1 or 2), so every layer counts on the same relative scale
whatever its width and magnitude; the loss is the mean over the selected layers. D is frozen while
the features are computed: no gradient reaches its parameters, only the reconstruction receives one.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ._reduce import check_pair, check_reduction, reduce_batch

_EPS = 1e-8


@contextmanager
def frozen_parameters(module: nn.Module) -> Iterator[None]:
    """Temporarily set requires_grad=False on every parameter, restoring the flags afterwards.

    The autograd graph records which tensors require grad when it is built, so a graph built inside
    this context never reaches the module's parameters, even if backward runs after the flags are
    restored.
    """
    parameters = list(module.parameters())
    flags = [p.requires_grad for p in parameters]
    try:
        for p in parameters:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(parameters, flags):
            p.requires_grad_(flag)


class DiscriminatorFeatureLoss(nn.Module):
    """Perceptual loss in D's feature space.

    Args:
        D: a discriminator with `features(img, c) -> list[Tensor]` (ganinv's StyleGAN2 Discriminator).
            It is held by reference, not registered as a submodule: the loss never moves, trains or
            saves it, and it stays the caller's object (Clone may keep training it).
        distance: "l1" or "l2".
        layers: indices into D.features()'s list (default: all blocks).
    """

    def __init__(self, D: nn.Module, distance: str = "l1", layers: Sequence[int] | None = None,
                 reduction: str = "mean"):
        super().__init__()
        if not hasattr(D, "features"):
            raise TypeError("DiscriminatorFeatureLoss needs a discriminator with a features(img, c) method")
        if distance not in ("l1", "l2"):
            raise ValueError(f"distance must be 'l1' or 'l2', got {distance!r}")
        check_reduction(reduction)
        # object.__setattr__ keeps D out of this module's submodules (see the class docstring).
        object.__setattr__(self, "discriminator", D)
        self.distance = distance
        self.layers = None if layers is None else tuple(layers)
        self.reduction = reduction

    def _select(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.layers is None:
            return features
        try:
            return [features[i] for i in self.layers]
        except IndexError:
            raise ValueError(f"layers {self.layers} out of range: D has {len(features)} feature blocks") from None

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor, c: torch.Tensor | None = None,
                reduction: str | None = None) -> torch.Tensor:
        check_pair(reconstruction, target, "DiscriminatorFeatureLoss")
        D = self.discriminator
        with frozen_parameters(D):
            with torch.no_grad():
                target_features = self._select(D.features(target.detach(), c))
            reconstruction_features = self._select(D.features(reconstruction, c))
        power = 1 if self.distance == "l1" else 2
        per_image = None
        for fr, ft in zip(reconstruction_features, target_features):
            difference = (fr - ft).abs().pow(power).flatten(1).mean(dim=1)
            scale = ft.abs().pow(power).flatten(1).mean(dim=1) + _EPS
            layer = difference / scale
            per_image = layer if per_image is None else per_image + layer
        per_image = per_image / len(reconstruction_features)
        return reduce_batch(per_image, reduction or self.reduction)
