"""Image files <-> tensors. Tensors are float32 NCHW in [-1, 1]; files are 8-bit PNG."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..utils import atomic_path


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C] (C = 1 or 3)."""
    if images.ndim == 3:
        images = images.unsqueeze(0)
    x = (images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def to_pil(image: torch.Tensor) -> Image.Image:
    arr = to_uint8(image)[0]
    if arr.shape[2] == 1:
        return Image.fromarray(arr[:, :, 0], mode="L")
    if arr.shape[2] == 3:
        return Image.fromarray(arr, mode="RGB")
    if arr.shape[2] == 4:
        return Image.fromarray(arr, mode="RGBA")
    raise ValueError(f"cannot write an image with {arr.shape[2]} channels")


def save_image(image: torch.Tensor, path: str | os.PathLike, upscale: int = 1) -> Path:
    """Write one image (CHW or 1CHW tensor in [-1, 1]) atomically as PNG."""
    pil = to_pil(image)
    if upscale > 1:
        pil = pil.resize((pil.width * upscale, pil.height * upscale), Image.NEAREST)
    path = Path(path)
    with atomic_path(path) as tmp:
        pil.save(tmp, format="PNG")
    return path


def make_grid(images: torch.Tensor, ncols: int | None = None, padding: int = 2,
              pad_value: float = 1.0) -> torch.Tensor:
    """[N, C, H, W] -> [1, C, rows*H, cols*W] with padding between cells."""
    n, c, h, w = images.shape
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    grid = torch.full([c, nrows * (h + padding) + padding, ncols * (w + padding) + padding], pad_value)
    for i in range(n):
        r, col = divmod(i, ncols)
        top = padding + r * (h + padding)
        left = padding + col * (w + padding)
        grid[:, top:top + h, left:left + w] = images[i].detach().float().cpu().clamp(-1, 1)
    return grid.unsqueeze(0)


def save_grid(images: torch.Tensor | Sequence[torch.Tensor], path: str | os.PathLike,
              ncols: int | None = None, upscale: int = 1) -> Path:
    if not isinstance(images, torch.Tensor):
        images = torch.cat([im if im.ndim == 4 else im.unsqueeze(0) for im in images])
    return save_image(make_grid(images, ncols), path, upscale=upscale)
