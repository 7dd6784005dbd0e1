"""Image files <-> tensors. Tensors are float32 NCHW in [-1, 1]; files are 8-bit PNG.

User images are untrusted: every failure (missing, empty, not an image, truncated, absurd size, a float
image holding NaN or infinity) is an `ImageLoadError` naming the source, and a file this module opens
is closed again whether loading succeeds or fails."""
from __future__ import annotations

import io
import math
import os
import struct
import warnings
from pathlib import Path
from typing import BinaryIO, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from ..utils import atomic_path
from ..errors import GanInvError


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


# ---------------------------------------------------------------------------------------------------------
# Robust loading of user images (files, bytes, PIL images) into generator-ready tensors.
# ---------------------------------------------------------------------------------------------------------

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image]

#: Refuse images with more pixels than this (about 80 megapixels, e.g. 10000 x 8000). Pillow's own hard
#: limit (2 x Image.MAX_IMAGE_PIXELS) still applies above it.
DEFAULT_MAX_PIXELS = 80_000_000

#: How a non-square image becomes square. "stretch" distorts and is never the default.
FITS = ("crop", "pad", "stretch")


class ImageLoadError(GanInvError):
    """A file or buffer that cannot be used as an image: names the source and the problem."""


def _source_name(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Image.Image):
        return getattr(source, "filename", None) or "<PIL image>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<image bytes>"
    return getattr(source, "name", None) or "<image stream>"


def _open_image(source: ImageSource, name: str, max_pixels: int) -> Image.Image:
    """Open lazily (header only), check the size, then decode fully."""
    if isinstance(source, Image.Image):
        image = source
    else:
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.exists():
                raise ImageLoadError(f"{name}: no such file")
            if not path.is_file():
                raise ImageLoadError(f"{name}: not a file")
            if path.stat().st_size == 0:
                raise ImageLoadError(f"{name}: empty file (0 bytes)")
            stream: BinaryIO | str | os.PathLike = source
        elif isinstance(source, (bytes, bytearray, memoryview)):
            if len(source) == 0:
                raise ImageLoadError(f"{name}: empty (0 bytes)")
            stream = io.BytesIO(bytes(source))
        else:
            stream = source
        with warnings.catch_warnings():
            # Our own max_pixels check below replaces Pillow's warning; its hard error is translated.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                image = Image.open(stream)
            except Image.DecompressionBombError as e:
                raise ImageLoadError(f"{name}: refused, absurd image size ({e})") from None
            except (Image.UnidentifiedImageError, SyntaxError) as e:
                raise ImageLoadError(f"{name}: not a recognised image file ({type(e).__name__})") from None
            except (OSError, ValueError, EOFError, struct.error) as e:
                raise ImageLoadError(f"{name}: cannot read image header ({e})") from None
        try:
            _check_and_decode(image, name, max_pixels)
        except BaseException:
            if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
                image.close()  # the file or buffer opened here; a caller's own stream stays open
            raise
        return image
    _check_and_decode(image, name, max_pixels)
    return image


def _check_and_decode(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"{name}: zero-size image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageLoadError(f"{name}: refused, {width}x{height} = {width * height:,} pixels exceeds the "
                             f"limit of {max_pixels:,} (possible decompression bomb)")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError) as e:
        problem = "truncated or corrupt image data" if "truncat" in str(e).lower() or isinstance(
            e, (EOFError, SyntaxError)) else "corrupt image data"
        raise ImageLoadError(f"{name}: {problem} ({e})") from None


def _high_depth_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer and float single-channel modes -> 'L' without clipping at 255."""
    array = np.asarray(image)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ImageLoadError("float image contains NaN or infinite values")
    if image.mode.startswith("I;16"):
        scaled = array.astype(np.float64) / 257.0
    else:
        values = array.astype(np.float64)
        peak = float(values.max()) if values.size else 0.0
        if image.mode == "F" and peak <= 1.0:
            scaled = values * 255.0
        elif peak <= 255.0:
            scaled = values
        elif peak <= 65535.0:
            scaled = values / 257.0
        else:
            scaled = values * (255.0 / peak)
    return Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8), mode="L")


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """Use the embedded ICC profile when there is one (colour-managed), else Pillow's plain formula."""
    icc = image.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms
            return ImageCms.profileToProfile(image, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                             ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:  # a broken profile must not make a readable image unreadable
            pass
    return image.convert("RGB")


def normalize_image_mode(image: Image.Image, channels: int, background: int = 255) -> Image.Image:
    """Any Pillow mode -> 'RGB' (channels=3) or 'L' (channels=1).

    Transparency (alpha, palette or tRNS transparency) is composited on a flat `background` grey level
    (255 = white); 16-bit and float images are scaled, not clipped; CMYK uses its ICC profile if present.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    mode = image.mode
    if mode == "P" or mode == "PA":
        image = image.convert("RGBA")
    elif mode in ("I", "F") or mode.startswith("I;16"):
        image = _high_depth_to_8bit(image)
    elif mode == "1":
        image = image.convert("L")
    elif mode == "CMYK":
        image = _cmyk_to_rgb(image)
    elif mode in ("La", "LA") or (mode == "L" and "transparency" in image.info):
        image = image.convert("LA")
    elif mode in ("RGBa", "RGBA") or (mode == "RGB" and "transparency" in image.info):
        image = image.convert("RGBA")
    elif mode not in ("L", "RGB"):
        image = image.convert("RGB")  # YCbCr, LAB, HSV, ...
    if image.mode in ("RGBA", "LA"):
        base_mode = image.mode[:-1]
        flat = Image.new(base_mode, image.size, background if base_mode == "L" else (background,) * 3)
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    if channels == 3 and image.mode != "RGB":
        image = image.convert("RGB")
    elif channels == 1 and image.mode != "L":
        image = image.convert("L")  # ITU-R 601-2 luma
    return image


def fit_image(image: Image.Image, resolution: int, fit: str = "crop", background: int = 255) -> Image.Image:
    """Make a square `resolution` image: 'crop' (center square), 'pad' (letterbox on `background`),
    or 'stretch' (explicit only). Resampling is Lanczos, which low-pass filters when shrinking."""
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    width, height = image.size
    target = (resolution, resolution)
    if fit == "stretch":
        return image.resize(target, Image.LANCZOS, reducing_gap=3.0)
    if fit == "crop":
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        return image.resize(target, Image.LANCZOS, box=(left, top, left + side, top + side), reducing_gap=3.0)
    side = max(width, height)
    scale = resolution / side
    inner = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = image.resize(inner, Image.LANCZOS, reducing_gap=3.0)
    fill = background if image.mode == "L" else (background,) * len(image.getbands())
    canvas = Image.new(image.mode, target, fill)
    canvas.paste(resized, ((resolution - inner[0]) // 2, (resolution - inner[1]) // 2))
    return canvas


def read_image(source: ImageSource, channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS,
               background: int = 255) -> Image.Image:
    """Decode and normalize an image at its own size: EXIF orientation applied, mode 'RGB' or 'L'.

    Raises ImageLoadError for missing, empty, non-image, truncated or oversized inputs.
    """
    name = _source_name(source)
    opened = _open_image(source, name, max_pixels)
    # A file or buffer opened here is closed before returning; a caller's image or stream stays open.
    owned = isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview))
    try:
        image = opened
        try:
            image.seek(0)  # first frame of animations
        except (EOFError, AttributeError, ValueError):
            pass
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:  # malformed EXIF: keep the pixels as stored rather than refuse the photo
            pass
        if image.mode == "F" and not np.isfinite(np.asarray(image)).all():
            raise ImageLoadError(f"{name}: float image contains NaN or infinite values")
        try:
            normalized = normalize_image_mode(image, channels, background)
        except ImageLoadError as e:
            raise ImageLoadError(f"{name}: {e}") from None
        except (OSError, ValueError, MemoryError) as e:
            raise ImageLoadError(f"{name}: cannot convert mode {image.mode} ({e})") from None
        if normalized is opened and owned:
            normalized = normalized.copy()  # independent of the file, which is closed below
        return normalized
    finally:
        if owned:
            opened.close()


def load_image(source: ImageSource, resolution: int, channels: int = 3, fit: str = "crop",
               max_pixels: int = DEFAULT_MAX_PIXELS, background: int = 255) -> torch.Tensor:
    """Load a photo for a generator: float32 [1, channels, resolution, resolution] in [-1, 1].

    Args:
        source: a path, bytes, a binary stream or a PIL image.
        resolution: the generator's img_resolution.
        channels: the generator's img_channels (1 or 3); colour <-> grayscale is converted.
        fit: 'crop' (default: center square, then resize), 'pad' (letterbox), or 'stretch'.
        max_pixels: larger images are refused (decompression bombs).
        background: grey level (0-255) under transparent pixels and around 'pad'.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if not 0 <= background <= 255:
        raise ValueError(f"background must be a grey level 0-255, got {background}")
    image = fit_image(read_image(source, channels, max_pixels, background), resolution, fit, background)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float()
    return tensor / 127.5 - 1
