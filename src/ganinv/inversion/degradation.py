"""Restoration through inversion: degradation operators for inpainting, colorization and super-resolution.

Abdal, Qin and Wonka, "Image2StyleGAN++: How to Edit the Embedded Images?" (CVPR 2020) and Gu, Shen and
Zhou, "Image Processing Using Multi-Code GAN Prior" (CVPR 2020): the generator renders a full,
clean image, and the loss compares the *degraded* rendering with the degraded observation, so the
GAN's prior fills in what the observation lacks. A `Degradation` is that operator:

- `Inpaint(mask)`: mask [H, W] (or [1 or N, 1, H, W]) with 1 = known pixel, 0 = to fill; the loss sees
  image * mask, so the masked pixels get no gradient and the rendering fills the hole.
- `Colorize()`: the loss compares luminance (ITU-R BT.601 weights, repeated over the colour channels),
  so a grayscale target fixes brightness and the colour comes from the prior.
- `SuperResolution(factor)`: the loss compares the rendering averaged over factor x factor pixels (a box
  filter) with a low-resolution target [N, C, R/factor, R/factor].

Every inversion method that accepts one (`MethodSpec.accepts_degradation`) takes it as
`degradation=`: `ganinv.invert(model, target, method="optimize", degradation=Inpaint(mask))`. The
target may be the observation (a grayscale or low-resolution image, a photo with anything in its
hole) or a clean full-resolution image, which is degraded first (`observe` is idempotent). The
result's reconstruction is the full restored rendering; its metrics compare the degraded rendering
with the observation (the only ground truth there is), and its report records the degradation.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import GanInvError
from .base import check_target

#: ITU-R BT.601 luma weights (R, G, B).
LUMA = (0.299, 0.587, 0.114)


class Degradation:
    """The operator a restoring inversion compares through (module doc). Subclasses define `__call__`
    (image [N, C, R, R] -> what the loss compares), `observe` and `describe`."""

    name = "none"

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image

    def observe(self, target: torch.Tensor, G) -> torch.Tensor:
        """The observation the loss compares with, from a target [N, C, H, W] (checked against G)."""
        return self(check_target(G, target, self.name))

    def display(self, observation: torch.Tensor, resolution: int) -> torch.Tensor:
        """The observation as an image of the generator's size (stored as the result's target)."""
        return observation

    def describe(self) -> dict:
        return {"kind": self.name}


class Inpaint(Degradation):
    """Known pixels where mask is 1, a hole to fill where it is 0 (soft values in between weigh the loss)."""

    name = "inpaint"

    def __init__(self, mask: torch.Tensor) -> None:
        mask = torch.as_tensor(mask).float()
        if mask.ndim == 2:
            mask = mask[None, None]
        elif mask.ndim == 3:
            mask = mask[None]
        if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[-1] != mask.shape[-2]:
            raise GanInvError(f"inpainting mask must have shape [H, W] or [N, 1, H, W] (square), got "
                              f"{tuple(torch.as_tensor(mask).shape)}")
        if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
            raise GanInvError("inpainting mask values must lie in [0, 1] (1 = known, 0 = fill)")
        if not (mask.flatten(1).sum(1) > 0).all():
            raise GanInvError("inpainting mask has no known pixel (all black): nothing to invert")
        self.mask = mask

    def _mask_for(self, image: torch.Tensor) -> torch.Tensor:
        if self.mask.shape[-1] != image.shape[-1]:
            raise GanInvError(f"inpainting mask is {self.mask.shape[-1]}x{self.mask.shape[-2]}, the images are "
                              f"{image.shape[-1]}x{image.shape[-2]}")
        if self.mask.shape[0] not in (1, image.shape[0]):
            raise GanInvError(f"inpainting mask holds {self.mask.shape[0]} masks for {image.shape[0]} images")
        return self.mask.to(image.device, image.dtype)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image * self._mask_for(image)

    def describe(self) -> dict:
        return {"kind": self.name, "known_fraction": float(self.mask.mean())}


class Colorize(Degradation):
    """Luminance only: a colour rendering is compared with a grayscale target (module doc)."""

    name = "colorize"

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[1] != 3:
            raise GanInvError(f"colorization needs a colour (3-channel) generator, got {image.shape[1]} channel(s)")
        weights = torch.tensor(LUMA, device=image.device, dtype=image.dtype).reshape(1, 3, 1, 1)
        return (image * weights).sum(dim=1, keepdim=True).expand(-1, 3, -1, -1)


class SuperResolution(Degradation):
    """Box downsampling by an integer `factor`: a low-resolution target [N, C, R/factor, R/factor]."""

    name = "super_resolution"

    def __init__(self, factor: int) -> None:
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 2:
            raise GanInvError(f"super-resolution factor must be an integer >= 2, got {factor!r}")
        self.factor = int(factor)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-1] % self.factor or image.shape[-2] % self.factor:
            raise GanInvError(f"super-resolution factor {self.factor} does not divide the image size "
                              f"{image.shape[-1]}x{image.shape[-2]}")
        return F.avg_pool2d(image, self.factor)

    def observe(self, target: torch.Tensor, G) -> torch.Tensor:
        if G.img_resolution % self.factor:
            raise GanInvError(f"super-resolution factor {self.factor} does not divide the model's resolution "
                              f"{G.img_resolution}")
        low = G.img_resolution // self.factor
        if isinstance(target, torch.Tensor) and target.ndim in (3, 4) and target.shape[-1] == low:
            target = target if target.ndim == 4 else target.unsqueeze(0)
            if tuple(target.shape[1:]) != (G.img_channels, low, low):
                raise GanInvError(f"super_resolution: a low-resolution target must have shape "
                                  f"[N, {G.img_channels}, {low}, {low}], got {tuple(target.shape)}")
            if not torch.isfinite(target).all():
                raise GanInvError("super_resolution: target contains NaN or inf")
            return target.float()
        return self(check_target(G, target, f"{self.name} (or [N, {G.img_channels}, {low}, {low}])"))

    def display(self, observation: torch.Tensor, resolution: int) -> torch.Tensor:
        return F.interpolate(observation, size=(resolution, resolution), mode="nearest")

    def describe(self) -> dict:
        return {"kind": self.name, "factor": self.factor}


def load_mask(path: str | os.PathLike, resolution: int, image_size: tuple[int, int] | None = None,
              fit: str = "crop") -> torch.Tensor:
    """An inpainting mask file (white = known, black = fill) -> [1, 1, R, R] of 0/1 (threshold at mid-grey).

    The mask must be the size of the image it goes with (`image_size`, (width, height); it is then
    cropped or padded like that image) or of the model's images (R x R). Raises GanInvError (one line
    naming the file) for a missing, unreadable or wrongly sized file or a mask with no known pixel."""
    from ..data.io import fit_image, read_image

    image = read_image(path, channels=1)
    sizes = {(resolution, resolution)} | ({tuple(image_size)} if image_size is not None else set())
    if image.size not in sizes:
        wanted = " or ".join(f"{w}x{h}" for w, h in sorted(sizes))
        raise GanInvError(f"{path}: mask is {image.size[0]}x{image.size[1]}, expected {wanted} "
                          "(the size of the image or of the model)")
    if image.size != (resolution, resolution):
        # Padding (fit='pad') surrounds the photo with pixels nobody knows: they count as holes.
        image = fit_image(image, resolution, fit, background=0)
    array = np.asarray(image, dtype=np.uint8)
    mask = torch.from_numpy((array >= 128).astype(np.float32))[None, None]
    if mask.sum() == 0:
        raise GanInvError(f"{path}: the mask is all black (no known pixel); white marks the known pixels")
    return mask


#: The degradations by name (CLI, benchmark): name -> class.
DEGRADATIONS = {"inpaint": Inpaint, "colorize": Colorize, "super_resolution": SuperResolution}

__all__ = ["Degradation", "Inpaint", "Colorize", "SuperResolution", "load_mask", "DEGRADATIONS", "LUMA"]
