"""Backbone networks in plain PyTorch whose state-dict keys match torchvision's, so genuine
ImageNet weights (e.g. torchvision's `alexnet-owt-7be5be79.pth`, `vgg16-397923af.pth`) load without
torchvision installed. Used by the LPIPS metric and loss.
"""
from __future__ import annotations

from .alexnet import AlexNet
from .common import WeightsMismatch, load_torchvision_state_dict
from .vgg16 import VGG16

# name -> backbone class (explicit registry).
BACKBONES = {"alex": AlexNet, "vgg": VGG16}

__all__ = ["AlexNet", "VGG16", "BACKBONES", "WeightsMismatch", "load_torchvision_state_dict"]
