"""Differentiable augmentation applied to both real and generated images before the discriminator.

Zhao, Liu, Lin, Zhu, Han, "Differentiable Augmentation for Data-Efficient GAN Training" (NeurIPS 2020).
Three policies: `color` (random brightness, saturation and contrast), `translation` (integer shift of up
to 1/8 of the image, zero fill) and `cutout` (a zeroed square of half the image side at a random place).
Every operation is differentiable with respect to the image, so the generator learns through it, and
the same distribution is applied to reals and fakes, so the discriminator cannot tell them apart by it.
Randomness comes from the given `torch.Generator` (or torch's global generator), so runs are
reproducible and resumable.
"""
from __future__ import annotations

from typing import Callable

import torch

AugmentFunction = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


def _rand(shape, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # Drawn on the CPU generator and moved, so results do not depend on the device's RNG.
    return torch.rand(shape, generator=generator).to(device=x.device, dtype=x.dtype)


def _randint(low: int, high: int, shape, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randint(low, high, shape, generator=generator).to(x.device)


def augment_brightness(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return x + (_rand([x.shape[0], 1, 1, 1], x, generator) - 0.5)


def augment_saturation(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand([x.shape[0], 1, 1, 1], x, generator) * 2) + mean


def augment_contrast(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand([x.shape[0], 1, 1, 1], x, generator) + 0.5) + mean


def augment_translation(x: torch.Tensor, generator: torch.Generator | None = None,
                        ratio: float = 0.125) -> torch.Tensor:
    n, c, h, w = x.shape
    shift_y, shift_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = _randint(-shift_y, shift_y + 1, [n, 1, 1], x, generator)
    tx = _randint(-shift_x, shift_x + 1, [n, 1, 1], x, generator)
    # Read pixel (y - ty, x - tx) from a zero-padded copy: one gather, differentiable in x.
    padded = torch.nn.functional.pad(x, [shift_x, shift_x, shift_y, shift_y])
    rows = torch.arange(h, device=x.device).view(1, h, 1) + shift_y - ty
    cols = torch.arange(w, device=x.device).view(1, 1, w) + shift_x - tx
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols]  # [N, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


def augment_cutout(x: torch.Tensor, generator: torch.Generator | None = None,
                   ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # Centre of the square anywhere in the image; the square may hang over the border.
    cy = _randint(0, h + (1 - size_y % 2), [n, 1, 1], x, generator)
    cx = _randint(0, w + (1 - size_x % 2), [n, 1, 1], x, generator)
    top, left = cy - size_y // 2, cx - size_x // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    mask = (~inside).to(x.dtype).unsqueeze(1)
    return x * mask


# policy name -> operations applied in order
AUGMENT_POLICIES: dict[str, list[AugmentFunction]] = {
    "color": [augment_brightness, augment_saturation, augment_contrast],
    "translation": [augment_translation],
    "cutout": [augment_cutout],
}


def parse_policy(policy: str | None) -> list[str]:
    """'color,translation,cutout' -> names, checked against AUGMENT_POLICIES ('' or 'none': no aug)."""
    if policy is None or policy.strip().lower() in ("", "none"):
        return []
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in names if p not in AUGMENT_POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown}; choose from {', '.join(AUGMENT_POLICIES)}")
    return names


def diff_augment(x: torch.Tensor, policy: str | list[str] | None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the DiffAugment policy (comma-separated names or a list) to a batch [N, C, H, W]."""
    names = parse_policy(policy) if isinstance(policy, str) or policy is None else list(policy)
    for name in names:
        for function in AUGMENT_POLICIES[name]:
            x = function(x, generator)
    return x
