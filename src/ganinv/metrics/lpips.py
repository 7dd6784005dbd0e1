"""LPIPS, the Learned Perceptual Image Patch Similarity (Zhang, Isola, Efros, Shechtman & Wang,
"The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018), version 0.1.

Distance between two images: run an ImageNet backbone (AlexNet or VGG16) on both, take five ReLU
activations, normalize each feature vector to unit length along channels, square the difference,
weight channels with the learned non-negative linear head of that layer, average over space and
sum over layers.

Weights are never made up: the backbone must be torchvision's genuine ImageNet state dict
(`alexnet-owt-7be5be79.pth`, `vgg16-397923af.pth`) and the heads the lpips package's v0.1 files
(`alex.pth`/`vgg.pth`, keys `lin0.model.1.weight` .. `lin4.model.1.weight`, each [1, C, 1, 1]).
`load_lpips` looks for them in an explicit folder, `$GANINV_LPIPS_DIR`, the torch hub cache
(`~/.cache/torch/hub/checkpoints`, or `$TORCH_HOME/hub/checkpoints`) and, for the heads, an installed
`lpips` package; when they are absent it raises `WeightsUnavailable` naming the files and folders,
and the metric reports "n/a" rather than a number from random weights.

Input handling (ours, documented): images are in [-1, 1]; a single-channel image is repeated to three
channels; images smaller than 64 px on a side are bilinearly upsampled so the shorter side is 64
before the backbone (AlexNet's stride-4 first layer leaves almost nothing of a 32 px image), so LPIPS
numbers on 32 px models are at 64 px.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..nets import BACKBONES, load_torchvision_state_dict
from ..nets.common import WeightsMismatch
from ._checks import check_image_pair
from ..errors import GanInvError

# ImageNet channel statistics on [0, 1] (the torchvision backbones' training normalization).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# The same normalization for input on [-1, 1]: x01 = (x + 1) / 2, so (x01 - mean) / std
# = (x - (2 mean - 1)) / (2 std).
INPUT_SHIFT = tuple(2 * m - 1 for m in _IMAGENET_MEAN)   # (-0.030, -0.088, -0.188)
INPUT_SCALE = tuple(2 * s for s in _IMAGENET_STD)        # (0.458, 0.448, 0.450)

MIN_SIZE = 64
_NORMALIZE_EPS = 1e-10

# Accepted file names, first match wins. Older torchvision AlexNet files carry another hash.
BACKBONE_FILES: dict[str, tuple[str, ...]] = {
    "alex": ("alexnet-owt-7be5be79.pth", "alexnet-owt-4df8aa71.pth"),
    "vgg": ("vgg16-397923af.pth",),
}
HEAD_FILES: dict[str, tuple[str, ...]] = {
    "alex": ("lpips_v0.1_alex.pth", "v0.1/alex.pth", "weights/v0.1/alex.pth", "alex.pth"),
    "vgg": ("lpips_v0.1_vgg.pth", "v0.1/vgg.pth", "weights/v0.1/vgg.pth", "vgg.pth"),
}
ENV_VAR = "GANINV_LPIPS_DIR"


class WeightsUnavailable(GanInvError, FileNotFoundError):
    """Genuine pretrained weights needed for LPIPS are not on this machine."""


def _hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _installed_lpips_package_dir() -> Path | None:
    """Folder of an installed `lpips` package (which ships the v0.1 heads), found without importing it."""
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def lpips_search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for LPIPS weights, in order."""
    dirs: list[Path] = []
    if weights_dir is not None:
        dirs.append(Path(weights_dir).expanduser())
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]).expanduser())
    dirs.append(_hub_checkpoint_dir())
    package = _installed_lpips_package_dir()
    if package is not None:
        dirs.append(package)
    return dirs


def _find(names: tuple[str, ...], dirs: list[Path]) -> Path | None:
    for folder in dirs:
        for name in names:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def find_lpips_weights(net: str = "alex", weights_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Paths of (backbone, linear heads) for `net`; raises `WeightsUnavailable` when either is absent."""
    if net not in BACKBONES:
        raise ValueError(f"unknown LPIPS network {net!r}; choose one of {sorted(BACKBONES)}")
    dirs = lpips_search_dirs(weights_dir)
    backbone = _find(BACKBONE_FILES[net], dirs)
    heads = _find(HEAD_FILES[net], dirs)
    if backbone is None or heads is None:
        wanted = []
        if backbone is None:
            wanted.append(f"backbone {' or '.join(BACKBONE_FILES[net])} (torchvision ImageNet weights)")
        if heads is None:
            wanted.append(f"linear heads {HEAD_FILES[net][-1]} (lpips package, v0.1)")
        raise WeightsUnavailable(
            f"LPIPS-{net} needs genuine pretrained weights: missing {'; '.join(wanted)}. "
            f"Looked in: {', '.join(str(d) for d in dirs)}. Put the files in one of these folders, "
            f"pass weights_dir, or set {ENV_VAR}.")
    return backbone, heads


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsMismatch(f"{path} is not a state dict of tensors")
    return state


class LPIPS(nn.Module):
    """LPIPS v0.1 distance: `model(a, b) -> [N]` for images [N, C, H, W] in [-1, 1].

    Parameters are frozen (requires_grad False); gradients flow to the images, so the same module
    serves as a loss. Build it with `load_lpips`; constructing it directly gives untrained weights
    that must be filled with `load_weights` before any number is reported.
    """

    def __init__(self, net: str = "alex", min_size: int = MIN_SIZE):
        super().__init__()
        if net not in BACKBONES:
            raise ValueError(f"unknown LPIPS network {net!r}; choose one of {sorted(BACKBONES)}")
        self.net = net
        self.min_size = min_size
        self.backbone = BACKBONES[net](with_classifier=False)
        channels = self.backbone.TAP_CHANNELS
        self.heads = nn.ParameterList([nn.Parameter(torch.zeros(1, c, 1, 1)) for c in channels])
        self.register_buffer("shift", torch.tensor(INPUT_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(INPUT_SCALE).view(1, 3, 1, 1), persistent=False)
        self.weights_source: tuple[str, str] | None = None
        self.requires_grad_(False)
        self.eval()

    def load_weights(self, backbone_state: dict[str, torch.Tensor], head_state: dict[str, torch.Tensor],
                     source: tuple[str, str] = ("backbone", "heads")) -> None:
        """Fill the backbone (torchvision keys) and heads (lpips v0.1 keys), checking every shape."""
        load_torchvision_state_dict(self.backbone, backbone_state, source=source[0])
        expected = {f"lin{i}.model.1.weight": tuple(h.shape) for i, h in enumerate(self.heads)}
        if set(head_state) != set(expected):
            raise WeightsMismatch(f"{source[1]}: expected keys {sorted(expected)}, got {sorted(head_state)}")
        for i, head in enumerate(self.heads):
            value = head_state[f"lin{i}.model.1.weight"]
            if tuple(value.shape) != expected[f"lin{i}.model.1.weight"]:
                raise WeightsMismatch(f"{source[1]}: lin{i}.model.1.weight has shape {tuple(value.shape)}, "
                                      f"expected {expected[f'lin{i}.model.1.weight']}")
            with torch.no_grad():
                head.copy_(value.float())
        self.weights_source = (str(source[0]), str(source[1]))

    def train(self, mode: bool = True) -> "LPIPS":
        # Always in eval mode: nothing in it behaves differently in training, and it is never trained.
        return super().train(False)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"LPIPS: expected 1 or 3 channels, got {x.shape[1]}")
        height, width = x.shape[-2:]
        if min(height, width) < self.min_size:
            factor = self.min_size / min(height, width)
            size = (max(self.min_size, round(height * factor)), max(self.min_size, round(width * factor)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return (x - self.shift) / self.scale

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        check_image_pair(a, b, "LPIPS")
        dtype = self.heads[0].dtype
        features_a = self.backbone.relu_features(self._prepare(a.to(dtype)))
        features_b = self.backbone.relu_features(self._prepare(b.to(dtype)))
        total = None
        for head, fa, fb in zip(self.heads, features_a, features_b):
            fa = fa / (fa.square().sum(dim=1, keepdim=True).sqrt() + _NORMALIZE_EPS)
            fb = fb / (fb.square().sum(dim=1, keepdim=True).sqrt() + _NORMALIZE_EPS)
            layer = F.conv2d((fa - fb).square(), head).mean(dim=(1, 2, 3))
            total = layer if total is None else total + layer
        return total


def load_lpips(net: str = "alex", weights_dir: str | os.PathLike | None = None,
               device: str | torch.device = "cpu") -> LPIPS:
    """An LPIPS model with genuine weights found by `find_lpips_weights` (raises `WeightsUnavailable`)."""
    backbone_path, heads_path = find_lpips_weights(net, weights_dir)
    model = LPIPS(net)
    model.load_weights(_load_state_dict(backbone_path), _load_state_dict(heads_path),
                       source=(str(backbone_path), str(heads_path)))
    return model.to(device)


_CACHE: dict[tuple[str, str], LPIPS | None] = {}


def try_load_lpips(net: str = "alex", weights_dir: str | os.PathLike | None = None) -> LPIPS | None:
    """`load_lpips` on CPU, cached per (net, weights_dir), or None when the weights are unavailable."""
    key = (net, str(weights_dir))
    if key not in _CACHE:
        try:
            _CACHE[key] = load_lpips(net, weights_dir)
        except WeightsUnavailable:
            _CACHE[key] = None
    return _CACHE[key]


def lpips_distance(a: torch.Tensor, b: torch.Tensor, model: LPIPS | None) -> torch.Tensor | None:
    """LPIPS per image [N] (no gradients), or None when `model` is None (weights unavailable)."""
    if model is None:
        return None
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(a.detach().to(device), b.detach().to(device)).float().cpu()
