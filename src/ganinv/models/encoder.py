"""The inversion encoder network: e4e-style w+ prediction from a pSp-style feature pyramid, with
ReStyle's iterative input.

- Feature pyramid and "map2style" heads: Richardson et al., "Encoding in Style: a StyleGAN Encoder
  for Image-to-Image Translation" (pSp, CVPR 2021). A residual backbone halves the resolution down to
  4x4; a top-down pathway (Lin et al., feature pyramid networks, CVPR 2017) merges three levels
  (coarse = 4x4, middle = R/4, fine = R/2). Each level feeds one head that reduces its map with
  strided convolutions to 4x4 and predicts the styles of its group of ws indices: coarse for the
  layers below R/2, middle for R/2, fine for R (the index -> resolution rule of StyleGAN2's synthesis).
- One base latent plus per-index offsets: Tov et al., "Designing an Encoder for StyleGAN Image
  Manipulation" (e4e, SIGGRAPH 2021). ws[:, 0] = base, ws[:, i] = base + offset_i, and only the first
  `active_offsets` offsets are used (progressive training unlocks them one by one).
- Iterative refinement: Alaluf et al., "ReStyle: A Residual-Based StyleGAN Encoder via Iterative
  Refinement" (ICCV 2021). The input is the target concatenated with the current reconstruction and
  the output is a residual added to the current ws; iteration 0 starts from w_avg and its image.

The predicted quantity is scaled by the generator's w spread (`w_scale`), so the network works in
normalized units whatever the generator. The encoder stores the generator's `w_avg` and its image as
buffers: they make iteration 0 free and let `check_generator` refuse a generator it was not trained for.
Stored as `model.safetensors` + `card.json` through `models.storage` (`save_encoder` / `load_encoder`).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .prior import w_stats
from .storage import load_module, save_module

CARD_FORMAT = "ganinv-encoder"
CARD_VERSION = 1
GROUPS = ("coarse", "middle", "fine")
# A generator whose w_avg differs from the stored one by more than this (relative L2) is another model.
W_AVG_TOLERANCE = 2e-2


def ws_index_resolution(index: int, img_resolution: int) -> int:
    """The lowest synthesis resolution that reads ws[:, index] (StyleGAN2: b4 reads 0-1, b8 1-3, ...)."""
    return min(img_resolution, 4 * 2 ** (index // 2))


def style_groups(num_ws: int, img_resolution: int) -> dict[str, list[int]]:
    """ws indices per pyramid level: fine = layers at R, middle = layers at R/2, coarse = the rest."""
    groups: dict[str, list[int]] = {name: [] for name in GROUPS}
    for index in range(num_ws):
        res = ws_index_resolution(index, img_resolution)
        name = "fine" if res >= img_resolution else "middle" if res * 2 >= img_resolution else "coarse"
        groups[name].append(index)
    return groups


def _width(resolution: int, base_width: int, min_width: int, max_width: int) -> int:
    return int(min(max_width, max(min_width, base_width // resolution)))


class _ResidualDown(nn.Module):
    """Two 3x3 convs (the second with stride 2) plus an average-pool + 1x1 skip, scaled by 1/sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.conv0(x), 0.2)
        y = F.leaky_relu(self.conv1(y), 0.2)
        return (y + self.skip(F.avg_pool2d(x, 2))) * (1 / math.sqrt(2))


class _Map2Style(nn.Module):
    """pSp's map2style: strided 3x3 convs down to 4x4, then a linear layer per ws index of the group
    (stacked into one matrix). The 4x4 map is flattened, not pooled, so positions stay informative."""

    def __init__(self, channels: int, resolution: int, num_outputs: int, w_dim: int):
        super().__init__()
        convs = []
        while resolution > 4:
            convs.append(nn.Conv2d(channels, channels, 3, stride=2, padding=1))
            resolution //= 2
        self.convs = nn.ModuleList(convs)
        self.num_outputs = num_outputs
        self.w_dim = w_dim
        self.linear = nn.Linear(channels * 16, num_outputs * w_dim)
        with torch.no_grad():
            # Start near a zero residual: iteration 0 then begins at w_avg's image.
            self.linear.weight.mul_(0.1)
            self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        return self.linear(x.flatten(1)).reshape(x.shape[0], self.num_outputs, self.w_dim)


class Encoder(nn.Module):
    """(target, current reconstruction) -> residual ws [N, num_ws, w_dim] for one generator shape.

    Args:
        img_resolution, img_channels, num_ws, w_dim: the generator's (power-of-two resolution >= 16).
        base_width, min_width, max_width: backbone width at resolution r is base_width / r, clamped.
        pyramid_width: width of the pyramid levels and of the map2style heads.
    Buffers (set from the generator by `for_generator`): `w_avg` [w_dim], `avg_image` [1, C, R, R]
    (G(w_avg), constant noise), `w_scale` (the RMS distance of prior w from w_avg), `active_offsets`.
    """

    def __init__(self, img_resolution: int, img_channels: int, num_ws: int, w_dim: int, *,
                 base_width: int = 512, min_width: int = 16, max_width: int = 128, pyramid_width: int = 48):
        super().__init__()
        log2 = int(round(math.log2(img_resolution))) if img_resolution > 0 else 0
        if img_resolution < 16 or 2 ** log2 != img_resolution:
            raise ValueError(f"encoder img_resolution must be a power of two >= 16, got {img_resolution}")
        if img_channels < 1 or num_ws < 1 or w_dim < 1:
            raise ValueError(f"bad encoder shape: img_channels={img_channels}, num_ws={num_ws}, w_dim={w_dim}")
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_ws = num_ws
        self.w_dim = w_dim
        self.init_kwargs = dict(img_resolution=img_resolution, img_channels=img_channels, num_ws=num_ws,
                                w_dim=w_dim, base_width=base_width, min_width=min_width, max_width=max_width,
                                pyramid_width=pyramid_width)
        width = lambda r: _width(r, base_width, min_width, max_width)  # noqa: E731
        self.stem = nn.Conv2d(2 * img_channels, width(img_resolution), 3, padding=1)
        stages = []
        res = img_resolution
        while res > 4:
            stages.append(_ResidualDown(width(res), width(res // 2)))
            res //= 2
        self.stages = nn.ModuleList(stages)
        # Pyramid levels: backbone outputs at R/2 (fine), R/4 (middle) and 4x4 (coarse, the deepest).
        self.level_resolution = {"fine": img_resolution // 2, "middle": img_resolution // 4, "coarse": 4}
        self.lateral = nn.ModuleDict({name: nn.Conv2d(width(r), pyramid_width, 1)
                                      for name, r in self.level_resolution.items()})
        self.groups = style_groups(num_ws, img_resolution)
        self.heads = nn.ModuleDict({name: _Map2Style(pyramid_width, self.level_resolution[name], len(indices), w_dim)
                                    for name, indices in self.groups.items() if indices})
        order = [i for name in GROUPS for i in self.groups[name]]
        self.register_buffer("ws_order", torch.tensor([order.index(i) for i in range(num_ws)], dtype=torch.long),
                             persistent=False)
        self.register_buffer("w_avg", torch.zeros([w_dim]))
        self.register_buffer("avg_image", torch.zeros([1, img_channels, img_resolution, img_resolution]))
        self.register_buffer("w_scale", torch.ones([]))
        self.register_buffer("active_offsets", torch.tensor(num_ws - 1, dtype=torch.long))

    @classmethod
    @torch.no_grad()
    def for_generator(cls, G: nn.Module, **architecture: Any) -> "Encoder":
        """A fresh encoder shaped for G, with G's w_avg, its image and its w spread stored."""
        encoder = cls(G.img_resolution, G.img_channels, G.num_ws, G.w_dim, **architecture)
        device = next(G.parameters()).device
        encoder.to(device)
        w_avg = G.mapping.w_avg.detach().float()
        _, w_std = w_stats(G, num_samples=4096)
        encoder.w_avg.copy_(w_avg)
        encoder.w_scale.fill_(max(float(w_std), 1e-6) / math.sqrt(G.w_dim))
        encoder.avg_image.copy_(average_image(G))
        return encoder

    def set_active_offsets(self, count: int) -> None:
        """Use only the first `count` offsets (e4e progressive training); num_ws - 1 uses all."""
        self.active_offsets.fill_(int(min(max(count, 0), self.num_ws - 1)))

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three pyramid levels for an input [N, 2C, R, R]."""
        x = F.leaky_relu(self.stem(x), 0.2)
        by_resolution = {}
        for stage in self.stages:
            x = stage(x)
            by_resolution[x.shape[-1]] = x
        coarse = self.lateral["coarse"](by_resolution[4])
        middle = self.lateral["middle"](by_resolution[self.level_resolution["middle"]])
        middle = middle + F.interpolate(coarse, size=middle.shape[-2:], mode="nearest")
        fine = self.lateral["fine"](by_resolution[self.level_resolution["fine"]])
        fine = fine + F.interpolate(middle, size=fine.shape[-2:], mode="nearest")
        return {"coarse": coarse, "middle": middle, "fine": fine}

    def forward(self, target: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """Residual ws [N, num_ws, w_dim] (in w units) that moves `current`'s latent toward `target`."""
        expected = (self.img_channels, self.img_resolution, self.img_resolution)
        for name, image in (("target", target), ("current", current)):
            if image.ndim != 4 or tuple(image.shape[1:]) != expected:
                raise ValueError(f"encoder {name} must have shape [N, {expected[0]}, {expected[1]}, {expected[2]}], "
                                 f"got {tuple(image.shape)}")
        if current.shape[0] != target.shape[0]:
            current = current.expand(target.shape[0], -1, -1, -1)
        levels = self.features(torch.cat([target, current], dim=1))
        raw = torch.cat([self.heads[name](levels[name]) for name in GROUPS if name in self.heads], dim=1)
        raw = raw.index_select(1, self.ws_order)
        base = raw[:, :1]
        offsets = raw[:, 1:]
        active = (torch.arange(self.num_ws - 1, device=raw.device) < self.active_offsets).to(raw.dtype)
        offsets = offsets * active.reshape(1, -1, 1)
        return torch.cat([base, base + offsets], dim=1) * self.w_scale

    def start_ws(self, batch: int) -> torch.Tensor:
        return self.w_avg.reshape(1, 1, -1).repeat(batch, self.num_ws, 1)

    def check_generator(self, G: nn.Module) -> None:
        """Raise ValueError unless G has this encoder's shape and (nearly) its w_avg."""
        for key in ("img_resolution", "img_channels", "num_ws", "w_dim"):
            if int(getattr(G, key)) != int(getattr(self, key)):
                raise ValueError(f"the encoder was built for a generator with {key}={getattr(self, key)}, "
                                 f"this generator has {getattr(G, key)}")
        w_avg = G.mapping.w_avg.detach().float().to(self.w_avg.device)
        difference = float((w_avg - self.w_avg).norm() / self.w_avg.norm().clamp_min(1e-8))
        if difference > W_AVG_TOLERANCE:
            raise ValueError(f"the encoder was trained for another generator (w_avg differs by "
                             f"{difference:.1%}); train one for this model with `ganinv train-encoder`")


@torch.no_grad()
def average_image(G: nn.Module) -> torch.Tensor:
    """G(w_avg) with constant noise, [1, C, R, R]."""
    ws = G.mapping.w_avg.detach().float().reshape(1, 1, -1).repeat(1, G.num_ws, 1)
    return G.synthesis(ws, noise_mode="const").float()


def restyle(G: nn.Module, encoder: Encoder, target: torch.Tensor, iterations: int,
            start_ws: torch.Tensor | None = None, keep_images: bool = False
            ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """ReStyle inference: `iterations` passes, each adding the encoder's residual to ws.

    Args:
        start_ws: where to start (default w_avg, whose image is cached in the encoder).
        keep_images: also return the reconstruction after each pass but the last (they are computed
            anyway as the next pass's input) -- the last one costs an extra synthesis, so it is not made.
    Returns:
        (ws [N, num_ws, w_dim], images seen by each pass: index 0 is the starting image).
    Gradients flow when called outside no_grad (the trainer uses it with no_grad for the earlier passes).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    n = target.shape[0]
    if start_ws is None:
        ws = encoder.start_ws(n).to(target.device)
        current = encoder.avg_image.to(target.device).expand(n, -1, -1, -1)
    else:
        ws = start_ws.to(target.device).float()
        current = G.synthesis(ws, noise_mode="const")
    images = [current] if keep_images else []
    for iteration in range(iterations):
        ws = ws + encoder(target, current)
        if iteration + 1 < iterations:
            current = G.synthesis(ws, noise_mode="const")
            if keep_images:
                images.append(current)
    return ws, images


# ---------------------------------------------------------------------------------------------
# Storage


def save_encoder(directory: str | os.PathLike, encoder: Encoder, card: dict | None = None) -> Path:
    """Write `model.safetensors` + `card.json` (each atomically) into `directory`."""
    full = {**(card or {}), "architecture": "ganinv-e4e-restyle", "init_kwargs": encoder.init_kwargs,
            "style_groups": encoder.groups, "active_offsets": int(encoder.active_offsets),
            "parameters": sum(p.numel() for p in encoder.parameters())}
    return save_module(directory, encoder, full, CARD_FORMAT, CARD_VERSION)


def load_encoder(directory: str | os.PathLike, device: str | torch.device = "cpu") -> Encoder:
    """An encoder saved by `save_encoder`, in eval mode with frozen weights; its card is `encoder.card`.

    Raises MissingFileError (a FileNotFoundError) when the folder has no card, CheckpointError (a
    ValueError) naming the file when the card or the weights are wrong."""
    encoder, card = load_module(directory, CARD_FORMAT, CARD_VERSION, "encoder",
                                lambda card: Encoder(**card["init_kwargs"]))
    encoder.card = card
    encoder.requires_grad_(False)
    return encoder.eval().to(device)


__all__ = ["CARD_FORMAT", "CARD_VERSION", "Encoder", "average_image", "load_encoder", "restyle", "save_encoder", "style_groups",
           "ws_index_resolution"]
