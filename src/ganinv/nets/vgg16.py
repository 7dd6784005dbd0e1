"""VGG16 (Simonyan & Zisserman, 2015, configuration D), laid out exactly like torchvision's `vgg16`
so its ImageNet state dict loads by key name.

LPIPS (Zhang et al., 2018) reads relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3.
"""
from __future__ import annotations

import torch
from torch import nn

from .common import tap_activations

# Configuration D: output channels of each 3x3 conv, "M" for a 2x2 max pool.
_CONFIG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    """`features` (+ optional `avgpool`/`classifier`) with torchvision's module indices."""

    # Indices in `features` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
    RELU_TAPS: tuple[int, ...] = (3, 8, 15, 22, 29)
    TAP_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)

    def __init__(self, with_classifier: bool = False, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for entry in _CONFIG_D:
            if entry == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                # Not in-place, so tapped activations survive later layers.
                layers += [nn.Conv2d(in_channels, entry, kernel_size=3, padding=1), nn.ReLU()]
                in_channels = entry
        self.features = nn.Sequential(*layers)
        self.with_classifier = with_classifier
        if with_classifier:
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(p=0.5),
                nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(p=0.5),
                nn.Linear(4096, num_classes),
            )

    def relu_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations of the five LPIPS taps for an ImageNet-normalized input [N, 3, H, W]."""
        return tap_activations(self.features, x, self.RELU_TAPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.with_classifier:
            raise RuntimeError("VGG16 was built without its classifier; use relu_features()")
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
