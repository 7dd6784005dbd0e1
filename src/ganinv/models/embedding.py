"""A small self-supervised image embedding whose feature space sees shape and texture.

The dataset classifier (`classifier.py`) is trained to name a few labels, so its features keep what the
labels need (colour, layout) and little else; a Fréchet distance in that space barely separates
misshapen samples from real images. This network is trained instead by contrastive instance
discrimination (SimCLR: Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning
of Visual Representations", ICML 2020) on the training split only: two random views of each image must
map to nearby points and away from the other images of the batch. The views differ by crops, flips,
small rotations and colour changes but never by blur or scrambling, so the features must keep outlines,
parts and texture to tell images apart, and they do change when those are damaged. The training code is
`ganinv.train.embedding`; the metrics computed in this space are `ganinv.metrics.quality`.

Architecture: a 3x3 convolution (stride 2 from 64 px up, which keeps training affordable on a CPU), then per resolution halving a strided 3x3 convolution
and a 3x3 convolution (batch norm in eval mode, ReLU) down to 4x4, then global average pooling to
`feature_dim` features (the embedding). A two-layer projection head (used only by the training loss, as in
SimCLR) maps the features to the space where the contrastive loss is computed. Stored as
`model.safetensors` + `card.json` through `models.storage`.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .storage import load_module, save_module

CARD_FORMAT = "ganinv-embedding"
CARD_VERSION = 1


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class ShapeEmbedding(nn.Module):
    """img [N, C, R, R] in [-1, 1] -> features [N, feature_dim] (`features`); `forward` adds the projection."""

    def __init__(self, in_channels: int, resolution: int, base_width: int = 16, max_width: int = 128,
                 projection_dim: int = 64, stem_stride: int | None = None):
        super().__init__()
        if resolution < 8 or 2 ** int(round(math.log2(resolution))) != resolution:
            raise ValueError(f"embedding resolution must be a power of two >= 8, got {resolution}")
        self.in_channels = in_channels
        self.resolution = resolution
        if stem_stride is None:
            stem_stride = 2 if resolution >= 64 else 1
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        self.init_kwargs = dict(in_channels=in_channels, resolution=resolution, base_width=base_width,
                                max_width=max_width, projection_dim=projection_dim, stem_stride=stem_stride)
        layers: list[nn.Module] = _conv(in_channels, base_width, stride=stem_stride)
        width, res = base_width, resolution // stem_stride
        while res > 4:
            out = min(width * 2, max_width)
            layers += _conv(width, out, stride=2) + _conv(out, out)
            width, res = out, res // 2
        self.body = nn.Sequential(*layers)
        self.feature_dim = width
        self.projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True),
                                        nn.Linear(width, projection_dim))

    def _check(self, img: torch.Tensor) -> None:
        if img.ndim != 4 or img.shape[1] != self.in_channels or img.shape[2] != self.resolution \
                or img.shape[3] != self.resolution:
            raise ValueError(f"embedding input must have shape [N, {self.in_channels}, {self.resolution}, "
                             f"{self.resolution}] in [-1, 1], got {tuple(img.shape)}")

    def features(self, img: torch.Tensor) -> torch.Tensor:
        """The embedding [N, feature_dim]: globally pooled features of the last convolution."""
        self._check(img)
        return self.body(img.to(torch.float32)).mean(dim=(2, 3))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Unit-length projections [N, projection_dim] (what the contrastive loss compares)."""
        return F.normalize(self.projection(self.features(img)), dim=1)


def save_embedding(directory: str | os.PathLike, model: ShapeEmbedding, card: dict | None = None) -> Path:
    """Write `model.safetensors` + `card.json` (atomically) into `directory`."""
    full = {**(card or {}), "architecture": "ganinv-simclr-cnn", "init_kwargs": model.init_kwargs,
            "feature_dim": model.feature_dim}
    return save_module(directory, model, full, CARD_FORMAT, CARD_VERSION)


def load_embedding(directory: str | os.PathLike, device: str | torch.device = "cpu") -> ShapeEmbedding:
    """An embedding saved by `save_embedding`, in eval mode; its card is `model.card`."""
    model, card = load_module(directory, CARD_FORMAT, CARD_VERSION, "embedding",
                              lambda card: ShapeEmbedding(**card["init_kwargs"]))
    model.card = card
    return model.eval().to(device)


__all__ = ["CARD_FORMAT", "CARD_VERSION", "ShapeEmbedding", "load_embedding", "save_embedding"]
