"""AlexNet (Krizhevsky et al., 2012; the "one weird trick" single-tower variant, Krizhevsky 2014),
laid out exactly like torchvision's `alexnet` so its ImageNet state dict loads by key name.

LPIPS (Zhang et al., 2018) reads the five ReLU outputs `relu1..relu5`.
"""
from __future__ import annotations

import torch
from torch import nn

from .common import tap_activations


class AlexNet(nn.Module):
    """`features` (+ optional `avgpool`/`classifier`) with torchvision's module indices.

    Args:
        with_classifier: also build the 1000-way ImageNet head (not needed for LPIPS; a full
            torchvision file still loads into the headless network via `load_torchvision_state_dict`).
    """

    # Indices in `features` of the ReLUs after conv1..conv5.
    RELU_TAPS: tuple[int, ...] = (1, 4, 7, 9, 11)
    TAP_CHANNELS: tuple[int, ...] = (64, 192, 384, 256, 256)

    def __init__(self, with_classifier: bool = False, num_classes: int = 1000):
        super().__init__()
        # ReLUs are not in-place so tapped activations are not overwritten by later layers.
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.with_classifier = with_classifier
        if with_classifier:
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(p=0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(),
                nn.Dropout(p=0.5), nn.Linear(4096, 4096), nn.ReLU(),
                nn.Linear(4096, num_classes),
            )

    def relu_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations of relu1..relu5 for an ImageNet-normalized input [N, 3, H, W]."""
        return tap_activations(self.features, x, self.RELU_TAPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.with_classifier:
            raise RuntimeError("AlexNet was built without its classifier; use relu_features()")
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
