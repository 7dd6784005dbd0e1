"""The published pSp, e4e and ReStyle encoders, read from the checkpoints their training code saves.

- pSp: Richardson et al., "Encoding in Style: a StyleGAN Encoder for Image-to-Image Translation"
  (CVPR 2021). `GradualStyleEncoder`: an IR-SE50 backbone (the improved residual units of Deng et al.,
  "ArcFace", CVPR 2019, with the squeeze-and-excitation of Hu et al., CVPR 2018), a feature pyramid over
  its 16x16, 32x32 and 64x64 maps, and one map2style head per ws index (coarse indices 0-2 read 16x16,
  middle 3-6 read 32x32, fine 7+ read 64x64).
- e4e: Tov et al., "Designing an Encoder for StyleGAN Image Manipulation" (SIGGRAPH 2021).
  `Encoder4Editing`: the same network predicting one base w (head 0) plus a delta per further index;
  here every delta is active (the last progressive stage, as at inference).
- ReStyle: Alaluf et al., "ReStyle: A Residual-Based StyleGAN Encoder via Iterative Refinement"
  (ICCV 2021). The input is the image and the previous reconstruction on channels (6 channels) and the
  output is a residual added to the previous ws. `BackboneEncoder` / `ResNetBackboneEncoder` (pSp
  variant: every head reads the last 16x16 map), `ProgressiveBackboneEncoder` /
  `ResNetProgressiveBackboneEncoder` (e4e variant: base + deltas), `GradualStyleEncoder` /
  `ResNetGradualStyleEncoder` (the pSp pyramid); IR-SE50 or ResNet34 (He et al., CVPR 2016; the
  ResNet variants replace the stem by a 7x7 stride-2 conv and a PReLU and drop the max-pool).
- pSp's `BackboneEncoderUsingLastLayerIntoW` (also e4e's `SingleStyleCodeEncoder`: one w from the pooled
  last map, used at every index) and `BackboneEncoderUsingLastLayerIntoWPlus`.

A checkpoint is `{'state_dict': {'encoder.*', 'decoder.*' (a rosinality StyleGAN2)}, 'opts', 'latent_avg'}`
(their coaches save `opts` as a dict; older files as an `argparse.Namespace`). It is read with
`torch.load(weights_only=True)`; the networks here are plain PyTorch (no torchvision) with the
checkpoints' key names, loaded strictly.

`load_encoder(path)` returns a `PSPEncoder` (pSp, e4e: `enc(x)` -> ws) or a `ReStyleEncoder`
(`enc(x, y_prev, ws_prev=None)` -> ws), ws `[N, n_styles, 512]` as the official `pSp.forward` /
`e4e.forward` compute them before their decoder. `for_generator(G)` adapts either to the interface of
ganinv's own encoder (`ganinv.models.encoder.Encoder`: a residual on (target, current image), `start_ws`,
`avg_image`, `w_scale`), so the `encoder`, `hybrid`, `pti` and `clone` methods run them unchanged.
"""
from __future__ import annotations

import argparse
import math
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import storage
from .encoder import load_encoder as load_native_encoder
from .prior import w_stats
from .storage import CheckpointError

#: The image size every official encoder reads (their transforms resize to 256x256).
INPUT_SIZE = 256
W_DIM = 512
#: `source_format` on the card of a generator read from such a checkpoint's `decoder.*` tensors.
CHECKPOINT_FORMAT = "psp-e4e-restyle"

# encoder_type -> (backbone, head). Heads: "gradual" (pSp pyramid), "e4e" (pyramid, base + deltas),
# "backbone" (every head on the last map), "progressive" (last map, base + deltas).
ENCODER_TYPES = {
    "GradualStyleEncoder": ("ir_se50", "gradual"),
    "Encoder4Editing": ("ir_se50", "e4e"),
    "BackboneEncoder": ("ir_se50", "backbone"),
    "ProgressiveBackboneEncoder": ("ir_se50", "progressive"),
    "ResNetGradualStyleEncoder": ("resnet34", "gradual"),
    "ResNetBackboneEncoder": ("resnet34", "backbone"),
    "ResNetProgressiveBackboneEncoder": ("resnet34", "progressive"),
    # pSp's and e4e's single-code encoders: one w from the pooled last map; pSp's W+ variant.
    "BackboneEncoderUsingLastLayerIntoW": ("ir_se50", "w"),
    "SingleStyleCodeEncoder": ("ir_se50", "w"),
    "BackboneEncoderUsingLastLayerIntoWPlus": ("ir_se50", "w_plus"),
}
# The pyramid: ws indices below COARSE read the 16x16 level, below MIDDLE the 32x32 one, the rest 64x64.
COARSE, MIDDLE = 3, 7
# IR-SE50: units per stage (each stage halves the resolution in its first unit); ResNet34 likewise.
_IR_SE50_STAGES = ((64, 3), (128, 4), (256, 14), (512, 3))
_RESNET34_STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))


class _EqualLinear(nn.Module):
    """StyleGAN2's equalized-learning-rate linear layer (weight scaled by 1/sqrt(fan_in) at run time)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = 1 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class _IRSEUnit(nn.Module):
    """Improved residual unit: BN-conv-PReLU-conv(stride)-BN-SE, plus a (projected) shortcut."""

    def __init__(self, in_channels: int, depth: int, stride: int):
        super().__init__()
        self.stride = stride
        self.shortcut_layer = None if in_channels == depth else nn.Sequential(
            nn.Conv2d(in_channels, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth), _SqueezeExcite(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # An identity shortcut with stride s keeps every s-th pixel (a 1x1 max-pool).
        shortcut = x[:, :, ::self.stride, ::self.stride] if self.shortcut_layer is None else self.shortcut_layer(x)
        return self.res_layer(x) + shortcut


class _BasicBlock(nn.Module):
    """ResNet34's basic block (two 3x3 convs with BN, ReLU after the sum), with its state-dict names."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class _Map2Style(nn.Module):
    """pSp's map2style: stride-2 3x3 convs (LeakyReLU 0.01) from `spatial` down to 1x1, then a linear layer."""

    def __init__(self, spatial: int, channels: int = W_DIM):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(channels, channels, 3, 2, 1), nn.LeakyReLU(0.01)]
        self.convs = nn.Sequential(*layers)
        self.linear = _EqualLinear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).flatten(1))


def _upsample_add(top: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    return F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class StyleEncoderNetwork(nn.Module):
    """The official encoder networks, module names as in their checkpoints (after `encoder.`).

    Args:
        backbone: "ir_se50" or "resnet34".
        head: "gradual", "e4e", "backbone", "progressive", "w" or "w_plus" (see ENCODER_TYPES).
        n_styles: number of ws indices predicted.
        in_channels: 3 (pSp, e4e) or 6 (ReStyle: image and previous reconstruction).
    forward: x [N, in_channels, 256, 256] -> codes [N, n_styles, 512].
    """

    def __init__(self, backbone: str, head: str, n_styles: int, in_channels: int):
        super().__init__()
        self.backbone, self.head, self.n_styles = backbone, head, n_styles
        units: list[nn.Module] = []
        channels = 64
        if backbone == "ir_se50":
            self.input_layer = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                             nn.PReLU(64))
            for depth, count in _IR_SE50_STAGES:
                for i in range(count):
                    units.append(_IRSEUnit(channels, depth, 2 if i == 0 else 1))
                    channels = depth
        elif backbone == "resnet34":
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.PReLU(64)
            for index, (depth, count) in enumerate(_RESNET34_STAGES):
                for i in range(count):
                    units.append(_BasicBlock(channels, depth, 2 if i == 0 and index > 0 else 1))
                    channels = depth
        else:
            raise ValueError(f"unknown backbone {backbone!r}")
        self.body = nn.Sequential(*units)
        # The pyramid taps: the last unit of the 128-, 256- and 512-channel stages.
        ends = []
        total = 0
        for _, count in (_IR_SE50_STAGES if backbone == "ir_se50" else _RESNET34_STAGES):
            total += count
            ends.append(total - 1)
        self.taps = tuple(ends[1:])
        pyramid = head in ("gradual", "e4e")
        if head not in ("gradual", "e4e", "backbone", "progressive", "w", "w_plus"):
            raise ValueError(f"unknown encoder head {head!r}")
        if head == "w":
            self.linear = _EqualLinear(512, W_DIM)
        elif head == "w_plus":
            self.output_layer_2 = nn.Sequential(nn.BatchNorm2d(512), nn.AdaptiveAvgPool2d((7, 7)), nn.Flatten(),
                                                nn.Linear(512 * 7 * 7, 512))
            self.linear = _EqualLinear(512, W_DIM * n_styles)
        else:
            spatial = [16 if not pyramid or i < COARSE else 32 if i < MIDDLE else 64 for i in range(n_styles)]
            self.styles = nn.ModuleList(_Map2Style(s) for s in spatial)
        if pyramid:
            self.latlayer1 = nn.Conv2d(256, 512, 1)
            self.latlayer2 = nn.Conv2d(128, 512, 1)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The 64x64 (128 ch), 32x32 (256 ch) and 16x16 (512 ch) maps for a 256x256 input."""
        if self.backbone == "ir_se50":
            x = self.input_layer(x)
        else:
            x = self.relu(self.bn1(self.conv1(x)))
        out = []
        for index, unit in enumerate(self.body):
            x = unit(x)
            if index in self.taps:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine_map, middle_map, coarse_map = self.features(x)
        if self.head == "w":
            w = self.linear(coarse_map.mean(dim=(2, 3)))
            return w[:, None].expand(-1, self.n_styles, -1)
        if self.head == "w_plus":
            return self.linear(self.output_layer_2(coarse_map)).reshape(-1, self.n_styles, W_DIM)
        if self.head in ("backbone", "progressive"):
            levels = [coarse_map] * self.n_styles
        else:
            middle = _upsample_add(coarse_map, self.latlayer1(middle_map))
            fine = _upsample_add(middle, self.latlayer2(fine_map))
            levels = [coarse_map if i < COARSE else middle if i < MIDDLE else fine for i in range(self.n_styles)]
        codes = [style(level) for style, level in zip(self.styles, levels)]
        if self.head in ("e4e", "progressive"):
            # base w for every index, plus each index's delta (all progressive stages active)
            base = codes[0]
            codes = [base] + [base + delta for delta in codes[1:]]
        return torch.stack(codes, dim=1)


def resize_image(x: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """An input image at `size` x `size`, as the official transforms make it (`Resize((256, 256))` on a
    PIL image: bilinear, with PIL's antialiasing when shrinking). On tensors this is bilinear
    interpolation with `antialias=True` (PyTorch's PIL-compatible filter); it differs from PIL only by
    PIL's rounding to 8 bits. Images already at `size` (default INPUT_SIZE) are returned as they are."""
    size = size or INPUT_SIZE
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def pool_reconstruction(y: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """A generator's image at `size` (default INPUT_SIZE), as ReStyle's inference does (`face_pool`, an
    adaptive average pool)."""
    size = size or INPUT_SIZE
    if tuple(y.shape[-2:]) == (size, size):
        return y
    return F.adaptive_avg_pool2d(y, (size, size))


class OfficialEncoder(nn.Module):
    """What pSp, e4e and ReStyle encoders share: the network (`encoder`, state-dict names as in the
    checkpoint), `latent_avg` [n_styles, 512], the checkpoint's `opts`, and `kind`
    ("psp", "e4e", "restyle_psp" or "restyle_e4e")."""

    #: passes of the encoder that refine one another (ReStyle); pSp and e4e predict ws in one pass.
    max_iterations: int | None = None

    def __init__(self, encoder_type: str, n_styles: int, in_channels: int, latent_avg: torch.Tensor,
                 opts: dict | None = None, kind: str = "psp"):
        super().__init__()
        backbone, head = ENCODER_TYPES[encoder_type]
        self.encoder_type, self.kind, self.n_styles = encoder_type, kind, n_styles
        self.num_ws, self.w_dim = n_styles, W_DIM
        self.in_channels = in_channels
        self.opts = dict(opts or {})
        self.encoder = StyleEncoderNetwork(backbone, head, n_styles, in_channels)
        self.register_buffer("latent_avg", latent_avg.reshape(-1, W_DIM).expand(n_styles, W_DIM).float().clone())

    def _check(self, name: str, image: torch.Tensor, channels: int) -> None:
        if image.ndim != 4 or image.shape[1] != channels:
            raise ValueError(f"{self.kind} encoder {name} must have shape [N, {channels}, H, W] in [-1, 1], "
                             f"got {tuple(image.shape)}")

    def for_generator(self, G: nn.Module) -> "EncoderForGenerator":
        """This encoder with the interface of ganinv's own encoder, for generator G."""
        return EncoderForGenerator(self, G)

    def extra_repr(self) -> str:
        return f"encoder_type={self.encoder_type}, kind={self.kind}, n_styles={self.n_styles}"


class PSPEncoder(OfficialEncoder):
    """pSp / e4e: `enc(x)` with x [N, 3, H, W] in [-1, 1] (resized to 256 as their transforms do) returns
    ws [N, n_styles, 512] = the encoder's codes + `latent_avg` (`pSp.forward` with start_from_latent_avg;
    a checkpoint trained without it stores codes that are ws already, and `latent_avg` is then zero)."""

    max_iterations = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check("input", x, self.in_channels)
        codes = self.encoder(resize_image(x))
        return codes + self.latent_avg.to(codes.dtype)


class ReStyleEncoder(OfficialEncoder):
    """ReStyle: `enc(x, y_prev, ws_prev=None)` returns `ws_prev` + the encoder's output on
    `cat([x, y_prev], 1)`: one ReStyle iteration. x is resized to 256 as the official transforms do,
    y_prev (a generator's image) as ReStyle's inference does (`face_pool`); `ws_prev` defaults to
    `latent_avg` (the first iteration, where y_prev is the image of latent_avg)."""

    def forward(self, x: torch.Tensor, y_prev: torch.Tensor, ws_prev: torch.Tensor | None = None) -> torch.Tensor:
        channels = self.in_channels // 2
        self._check("input x", x, channels)
        self._check("input y_prev", y_prev, channels)
        x, y_prev = resize_image(x), pool_reconstruction(y_prev)
        if y_prev.shape[0] != x.shape[0]:
            y_prev = y_prev.expand(x.shape[0], -1, -1, -1)
        codes = self.encoder(torch.cat([x, y_prev], dim=1))
        if ws_prev is None:
            return codes + self.latent_avg.to(codes.dtype)
        if ws_prev.ndim != 3 or tuple(ws_prev.shape[1:]) != (self.n_styles, W_DIM):
            raise ValueError(f"ws_prev must have shape [N, {self.n_styles}, {W_DIM}], got {tuple(ws_prev.shape)}")
        return codes + ws_prev.to(codes.dtype)


class EncoderForGenerator(nn.Module):
    """An official encoder seen through the interface of ganinv's own encoder (models.encoder.Encoder), for
    one generator G: `forward(target, current)` is the residual to add to the ws whose image is
    `current`; `start_ws(n)` is latent_avg; `avg_image` is G's image of latent_avg (constant noise);
    `w_scale` the RMS spread of G's prior w per coordinate. For pSp / e4e, which predict ws in a single
    pass from the target alone, the residual is the codes (relative to latent_avg) and `max_iterations`
    is 1."""

    def __init__(self, official: OfficialEncoder, G: nn.Module):
        super().__init__()
        self.check_generator(G, official)
        self.official = official
        self.max_iterations = official.max_iterations
        self.num_ws, self.w_dim = official.num_ws, official.w_dim
        self.img_resolution, self.img_channels = int(G.img_resolution), int(G.img_channels)
        with torch.no_grad():
            avg_image = G.synthesis(official.latent_avg[None].to(next(G.parameters()).device), noise_mode="const")
        self.register_buffer("avg_image", avg_image.float().to(official.latent_avg.device))
        # Only the hybrid method needs the prior's spread; sampling it costs thousands of mapping passes.
        self._prior_w_std = lambda: w_stats(G, num_samples=4096)[1]
        self._w_scale: float | None = None
        self.eval()  # (a module in training mode would be copied by the inversion methods before use)

    @property
    def w_avg(self) -> torch.Tensor:
        return self.official.latent_avg[0]

    @property
    def w_scale(self) -> torch.Tensor:
        if self._w_scale is None:
            with torch.no_grad():
                self._w_scale = max(float(self._prior_w_std()), 1e-6) / math.sqrt(self.w_dim)
        return torch.tensor(self._w_scale, device=self.avg_image.device)

    def start_ws(self, batch: int) -> torch.Tensor:
        return self.official.latent_avg[None].repeat(batch, 1, 1)

    def forward(self, target: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        if isinstance(self.official, ReStyleEncoder):
            return self.official(target, current, torch.zeros_like(self.start_ws(target.shape[0])))
        return self.official(target) - self.official.latent_avg

    def check_generator(self, G: nn.Module, official: OfficialEncoder | None = None) -> None:
        """Raise ValueError unless G reads as many ws of width 512, and has RGB images, as the encoder."""
        official = official if official is not None else self.official
        channels = official.in_channels // (2 if isinstance(official, ReStyleEncoder) else 1)
        wanted = {"num_ws": official.num_ws, "w_dim": W_DIM, "img_channels": channels}
        for key, value in wanted.items():
            if int(getattr(G, key)) != value:
                raise ValueError(f"the {official.kind} encoder ({official.encoder_type}) predicts ws for a generator "
                                 f"with {key}={value}; this generator has {key}={getattr(G, key)}")


# ---------------------------------------------------------------------------------------------
# Reading checkpoints


def _safe_globals() -> list:
    # Only what their coaches' `opts` holds besides plain values: an argparse.Namespace in older files.
    return [argparse.Namespace]


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint's dict, read weights-only (one-line CheckpointError for anything else)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such encoder checkpoint file")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused by the weights-only loader "
                              f"({(str(e).splitlines() or [''])[0][:200]})") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, TypeError,
            AttributeError, IndexError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                              f"{(str(e).splitlines() or [''])[0][:200]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("state_dict"), dict):
        found = sorted(map(str, data))[:8] if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: expected a pSp/e4e/ReStyle checkpoint with 'state_dict' and 'opts', "
                              f"found {found}")
    return data


def _opts_of(data: dict, path: Path) -> dict:
    opts = data.get("opts")
    if isinstance(opts, argparse.Namespace):
        opts = vars(opts)
    if not isinstance(opts, dict):
        raise CheckpointError(f"{path}: the checkpoint's 'opts' is missing or not a dict")
    return opts


def _prefixed(state_dict: dict, prefix: str, path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        if isinstance(key, str) and key.startswith(prefix):
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{path}: state_dict entry {key} is not a tensor")
            out[key[len(prefix):]] = value
    return out


def _n_styles(tensors: dict[str, torch.Tensor], path: Path, head: str = "gradual", opts: dict | None = None) -> int:
    if head == "w_plus" and isinstance(tensors.get("linear.weight"), torch.Tensor):
        return max(1, int(tensors["linear.weight"].shape[0]) // W_DIM)
    if head == "w":
        # one w for every index: as many as the decoder reads (pSp: output_size, e4e: stylegan_size)
        size = (opts or {}).get("output_size", (opts or {}).get("stylegan_size"))
        if not isinstance(size, int) or size < 4 or size & (size - 1):
            raise CheckpointError(f"{path}: opts has no valid output_size / stylegan_size ({size!r}) to tell "
                                  "how many ws the single-code encoder feeds")
        return 2 * int(math.log2(size)) - 2
    indices = {int(k.split(".")[1]) for k in tensors if k.startswith("styles.") and k.split(".")[1].isdigit()}
    if not indices or indices != set(range(len(indices))):
        raise CheckpointError(f"{path}: the encoder's styles.* heads are missing or not numbered 0..n-1")
    return len(indices)


def _latent_avg(data: dict, opts: dict, kind: str, n_styles: int, path: Path) -> torch.Tensor:
    value = data.get("latent_avg")
    restyle = kind.startswith("restyle")
    # pSp/e4e add latent_avg only when trained with start_from_latent_avg; ReStyle always starts there.
    used = restyle or bool(opts.get("start_from_latent_avg", value is not None))
    if not used:
        return torch.zeros(n_styles, W_DIM)
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"{path}: the checkpoint has no 'latent_avg' tensor, which this {kind} encoder adds "
                              "to its codes")
    value = value.detach().float()
    if value.shape[-1:] != (W_DIM,) or value.ndim > 2 or (value.ndim == 2 and value.shape[0] not in (1, n_styles)):
        raise CheckpointError(f"{path}: 'latent_avg' has shape {tuple(value.shape)}; expected [512], [1, 512] or "
                              f"[{n_styles}, 512]")
    if not torch.isfinite(value).all():
        raise CheckpointError(f"{path}: 'latent_avg' contains NaN or inf")
    return value.reshape(-1, W_DIM).expand(n_styles, W_DIM).clone()


def encoder_from_checkpoint(data: dict, path: str | os.PathLike) -> OfficialEncoder:
    """A PSPEncoder or ReStyleEncoder from a checkpoint dict read by `read_checkpoint`."""
    path = Path(path)
    opts = _opts_of(data, path)
    tensors = _prefixed(data["state_dict"], "encoder.", path)
    if not tensors:
        raise CheckpointError(f"{path}: the checkpoint's state_dict has no encoder.* tensors")
    encoder_type = opts.get("encoder_type")
    if encoder_type not in ENCODER_TYPES:
        raise CheckpointError(f"{path}: encoder_type {encoder_type!r} is not supported; supported: "
                              f"{', '.join(ENCODER_TYPES)}")
    backbone, head = ENCODER_TYPES[encoder_type]
    first = tensors.get("input_layer.0.weight" if backbone == "ir_se50" else "conv1.weight")
    if first is None or first.ndim != 4:
        raise CheckpointError(f"{path}: {encoder_type} lacks its first convolution's weight")
    in_channels = int(first.shape[1])
    if in_channels == 6:
        kind = "restyle_e4e" if head in ("e4e", "progressive") else "restyle_psp"
        cls: type[OfficialEncoder] = ReStyleEncoder
    elif in_channels == 3:
        kind = "e4e" if head in ("e4e", "progressive") or encoder_type == "SingleStyleCodeEncoder" else "psp"
        cls = PSPEncoder
    else:
        raise CheckpointError(f"{path}: the encoder reads {in_channels}-channel inputs; only RGB encoders (3 channels; "
                              "6 for ReStyle) can invert images")
    n_styles = _n_styles(tensors, path, head, opts)
    latent_avg = _latent_avg(data, opts, kind, n_styles, path)
    plain_opts = {k: v for k, v in opts.items() if isinstance(v, (str, int, float, bool, type(None), list))}
    encoder = cls(encoder_type, n_styles, in_channels, latent_avg, plain_opts, kind)
    storage.load_state(encoder.encoder, tensors, path, what=f"{encoder_type} encoder", error=CheckpointError,
                       dtype=torch.float32)
    encoder.source = str(path)
    encoder.requires_grad_(False)
    return encoder.eval()


def load_official_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> OfficialEncoder:
    """The pSp / e4e / ReStyle encoder of a checkpoint file as their training code saves it."""
    return encoder_from_checkpoint(read_checkpoint(path), path).to(device)


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Any encoder ganinv reads: a folder written by `ganinv export-encoder` / `save_encoder` (ganinv's own
    encoder), or a pSp / e4e / ReStyle checkpoint file (see `PSPEncoder`, `ReStyleEncoder`)."""
    path = Path(path)
    if path.is_dir():
        return load_native_encoder(path, device)
    return load_official_encoder(path, device)


def has_decoder(data: Any) -> bool:
    """Whether a checkpoint dict is a pSp / e4e / ReStyle one that carries its decoder (`decoder.*`)."""
    return (isinstance(data, dict) and isinstance(data.get("state_dict"), dict) and "opts" in data
            and any(isinstance(k, str) and k.startswith("decoder.") for k in data["state_dict"]))


__all__ = ["CHECKPOINT_FORMAT", "ENCODER_TYPES", "INPUT_SIZE", "EncoderForGenerator", "OfficialEncoder", "PSPEncoder",
           "ReStyleEncoder", "StyleEncoderNetwork", "encoder_from_checkpoint", "has_decoder", "load_encoder",
           "load_official_encoder", "pool_reconstruction", "read_checkpoint", "resize_image"]
