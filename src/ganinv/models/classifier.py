"""A small multi-head CNN classifier for a dataset's labels, shipped beside the embedded models.

It serves three purposes: its penultimate features define the Fréchet distance between generated and
real images (the construction of Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge
to a Local Nash Equilibrium", NeurIPS 2017, with this classifier in place of Inception, so the number
is named for what it is), it labels generated images for InterFaceGAN (Shen et al., CVPR 2020), and
it measures how far an edit moves an attribute.

Architecture: per resolution halving, two 3x3 conv + batch norm + leaky ReLU and a 2x2 average pool
(widths doubling up to a cap; batch norm uses its running statistics in eval mode, which is how the
classifier is always used after training) down to 4x4, then one fully connected feature layer on the
flattened 4x4 map (keeping where things are, which global pooling would lose), then one linear head
per label field. Stored as `model.safetensors` + `card.json` through `models.storage` (heads, class
names, held-out accuracy, training settings). Training is `ganinv.train.classifier`.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .storage import load_module, save_module

CARD_FORMAT = "ganinv-classifier"
CARD_VERSION = 1


class Classifier(nn.Module):
    """img [N, C, R, R] in [-1, 1] -> {head: logits [N, num_classes]}; `features` -> [N, feature_dim]."""

    def __init__(self, in_channels: int, resolution: int, heads: dict[str, Sequence[str]],
                 base_width: int = 16, max_width: int = 128, feature_dim: int = 128):
        super().__init__()
        if resolution < 8 or 2 ** int(round(math.log2(resolution))) != resolution:
            raise ValueError(f"classifier resolution must be a power of two >= 8, got {resolution}")
        if not heads:
            raise ValueError("a classifier needs at least one head")
        self.in_channels = in_channels
        self.resolution = resolution
        self.head_classes = {name: [str(c) for c in classes] for name, classes in heads.items()}
        self.init_kwargs = dict(in_channels=in_channels, resolution=resolution, heads=self.head_classes,
                                base_width=base_width, max_width=max_width, feature_dim=feature_dim)
        layers: list[nn.Module] = []
        channels = in_channels
        width = base_width
        res = resolution
        while res > 4:
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.LeakyReLU(0.2),
                       nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.LeakyReLU(0.2), nn.AvgPool2d(2)]
            channels = width
            width = min(width * 2, max_width)
            res //= 2
        self.body = nn.Sequential(*layers)
        self.feature = nn.Linear(channels * 4 * 4, feature_dim)
        self.feature_dim = feature_dim
        self.heads = nn.ModuleDict({name: nn.Linear(feature_dim, len(classes))
                                    for name, classes in self.head_classes.items()})

    def _check(self, img: torch.Tensor) -> None:
        if img.ndim != 4 or img.shape[1] != self.in_channels or img.shape[2] != self.resolution \
                or img.shape[3] != self.resolution:
            raise ValueError(f"classifier input must have shape [N, {self.in_channels}, {self.resolution}, "
                             f"{self.resolution}] in [-1, 1], got {tuple(img.shape)}")

    def features(self, img: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, feature_dim] (after the leaky ReLU of the feature layer)."""
        self._check(img)
        x = self.body(img.to(torch.float32)).flatten(1)
        return F.leaky_relu(self.feature(x), 0.2)

    def forward(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.features(img)
        return {name: head(x) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, img: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Class indices per head for a batch of images (eval mode, batched)."""
        was_training = self.training
        self.eval()
        outs: dict[str, list[torch.Tensor]] = {name: [] for name in self.heads}
        for start in range(0, len(img), batch_size):
            logits = self(img[start:start + batch_size])
            for name, value in logits.items():
                outs[name].append(value.argmax(dim=1).cpu())
        self.train(was_training)
        return {name: torch.cat(values) for name, values in outs.items()}


# ---------------------------------------------------------------------------------------------
# Storage


def save_classifier(directory: str | os.PathLike, model: Classifier, card: dict | None = None) -> Path:
    """Write `model.safetensors` + `card.json` (atomically) into `directory`."""
    full = {**(card or {}), "architecture": "ganinv-small-cnn", "init_kwargs": model.init_kwargs,
            "heads": model.head_classes, "feature_dim": model.feature_dim}
    return save_module(directory, model, full, CARD_FORMAT, CARD_VERSION)


def load_classifier(directory: str | os.PathLike, device: str | torch.device = "cpu") -> Classifier:
    """A classifier saved by `save_classifier`, in eval mode; its card is `model.card`."""
    model, card = load_module(directory, CARD_FORMAT, CARD_VERSION, "classifier",
                              lambda card: Classifier(**card["init_kwargs"]))
    model.card = card
    return model.eval().to(device)


__all__ = ["CARD_FORMAT", "CARD_VERSION", "Classifier", "load_classifier", "save_classifier"]
