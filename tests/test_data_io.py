"""Robust image loading: every awkward file a user may hand us is either read correctly or refused clearly."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from ganinv.data.io import ImageLoadError, fit_image, load_image, read_image


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (valid CRC), followed by a tiny IDAT and IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(
        b"IEND", b"")


def _pixel(tensor: torch.Tensor, y: int, x: int) -> list[int]:
    return [round((v + 1) * 127.5) for v in tensor[0, :, y, x].tolist()]


def test_output_contract_and_sources(tmp_path):
    array = np.random.RandomState(0).randint(0, 256, (24, 24, 3), dtype=np.uint8)
    pil = Image.fromarray(array, mode="RGB")
    path = tmp_path / "a.png"
    pil.save(path)
    from_path = load_image(path, 24, 3)
    assert from_path.shape == (1, 3, 24, 24) and from_path.dtype == torch.float32
    assert from_path.min() >= -1 and from_path.max() <= 1
    # Same size: no resampling, exact values.
    expected = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 127.5 - 1
    assert torch.allclose(from_path, expected, atol=1e-6)
    assert torch.equal(load_image(str(path), 24, 3), from_path)
    assert torch.equal(load_image(path.read_bytes(), 24, 3), from_path)
    assert torch.equal(load_image(pil, 24, 3), from_path)
    assert torch.equal(load_image(io.BytesIO(path.read_bytes()), 24, 3), from_path)


def test_refuses_truncated_png(tmp_path):
    image = Image.fromarray(np.random.RandomState(1).randint(0, 256, (64, 64, 3), dtype=np.uint8))
    data = _png_bytes(image)
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"cut\.png.*(truncated|corrupt)"):
        load_image(path, 32)


def test_refuses_truncated_jpeg(tmp_path):
    image = Image.fromarray(np.random.RandomState(2).randint(0, 256, (64, 64, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match=r"cut\.jpg.*(truncated|corrupt)"):
        load_image(path, 32)


def test_refuses_non_images_and_missing(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    with pytest.raises(ImageLoadError, match=r"notes\.png: not a recognised image"):
        load_image(text, 32)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"empty\.jpg: empty file"):
        load_image(empty, 32)
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "missing.png", 32)
    with pytest.raises(ImageLoadError, match="not a file"):
        load_image(tmp_path, 32)
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(b"", 32)
    assert issubclass(ImageLoadError, ValueError)


@pytest.mark.parametrize("width,height", [(12000, 8000), (30000, 30000)])
def test_refuses_absurd_sizes(tmp_path, width, height):
    # 96 MP exceeds our limit (Pillow would only warn); 900 MP trips Pillow's own bomb error. Both must be
    # refused from the header alone, before any decoding.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(width, height))
    with pytest.raises(ImageLoadError, match=r"bomb\.png: refused.*(decompression bomb|absurd)"):
        load_image(path, 32)


def test_max_pixels_is_configurable(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (100, 100), (10, 20, 30)).save(path)
    with pytest.raises(ImageLoadError, match="10,000 pixels exceeds the limit of 5,000"):
        load_image(path, 16, max_pixels=5000)
    assert load_image(path, 16, max_pixels=10000).shape == (1, 3, 16, 16)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(path, format="JPEG", quality=95)  # pure red
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    red, green, blue = _pixel(load_image(path, 16, 3), 8, 8)
    assert red > 230 and green < 30 and blue < 30


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.full((16, 16), 32768, dtype=np.uint16)  # mid grey in 16 bits
    values[:, 8:] = 65535
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    gray = load_image(path, 16, 1)
    assert gray.shape == (1, 1, 16, 16)
    assert abs(_pixel(gray, 4, 2)[0] - 128) <= 1  # clipping would give 255
    assert _pixel(gray, 4, 12)[0] == 255
    rgb = load_image(path, 16, 3)
    assert rgb.shape == (1, 3, 16, 16) and abs(_pixel(rgb, 4, 2)[0] - 128) <= 1


def test_palette_with_transparency_composites_on_white(tmp_path):
    image = Image.new("P", (16, 16), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 0 black (transparent), 1 red
    for x in range(8, 16):
        for y in range(16):
            image.putpixel((x, y), 1)
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)
    tensor = load_image(path, 16, 3)
    assert _pixel(tensor, 5, 2) == [255, 255, 255]
    assert _pixel(tensor, 5, 12) == [255, 0, 0]
    assert _pixel(load_image(path, 16, 3, background=0), 5, 2) == [0, 0, 0]


def test_rgba_alpha_composites_on_white(tmp_path):
    array = np.zeros((8, 8, 4), dtype=np.uint8)
    array[..., 2] = 255  # blue
    array[..., 3] = 128  # half transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(array, mode="RGBA").save(path)
    red, green, blue = _pixel(load_image(path, 8, 3), 3, 3)
    assert 120 <= red <= 135 and 120 <= green <= 135 and blue == 255


def test_exif_orientation_is_applied(tmp_path):
    # Stored landscape: left half red, right half blue. Orientation 6 means "rotate 90 degrees clockwise
    # to display", so the displayed image is portrait with red on top.
    stored = Image.new("RGB", (64, 32), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 32, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, format="JPEG", quality=95, exif=exif.tobytes())
    shown = read_image(path, 3)
    assert shown.size == (32, 64)
    assert shown.getpixel((16, 8))[0] > 200 and shown.getpixel((16, 8))[2] < 60
    assert shown.getpixel((16, 56))[2] > 200 and shown.getpixel((16, 56))[0] < 60


def test_grayscale_and_color_conversions(tmp_path):
    gray_path = tmp_path / "gray.png"
    Image.new("L", (8, 8), 77).save(gray_path)
    assert _pixel(load_image(gray_path, 8, 3), 1, 1) == [77, 77, 77]
    color_path = tmp_path / "color.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(color_path)
    luma = load_image(color_path, 8, 1)
    assert luma.shape == (1, 1, 8, 8) and _pixel(luma, 1, 1) == [76]  # ITU-R 601: 0.299 * 255
    with pytest.raises(ValueError, match="channels"):
        load_image(color_path, 8, 2)


def test_fit_modes_never_stretch_by_default(tmp_path):
    # 2:1 image: left third black, middle third green, right third black... a centered green square.
    image = Image.new("RGB", (60, 30), (0, 0, 0))
    image.paste((0, 255, 0), (15, 0, 45, 30))
    path = tmp_path / "wide.png"
    image.save(path)
    cropped = load_image(path, 30, 3)  # default: center crop keeps only the green square
    assert cropped.shape == (1, 3, 30, 30)
    assert _pixel(cropped, 15, 1)[1] > 240 and _pixel(cropped, 15, 28)[1] > 240
    padded = load_image(path, 30, 3, fit="pad")  # white bands above and below, full width kept
    assert _pixel(padded, 1, 15) == [255, 255, 255]
    assert _pixel(padded, 15, 1) == [0, 0, 0] and _pixel(padded, 15, 15)[1] > 240
    stretched = load_image(path, 30, 3, fit="stretch")
    assert _pixel(stretched, 15, 1) == [0, 0, 0] and _pixel(stretched, 1, 15)[1] > 240
    with pytest.raises(ValueError, match="unknown fit"):
        load_image(path, 30, 3, fit="squash")


def test_downscaling_is_antialiased():
    # A one-pixel checkerboard shrunk 8x must average to grey, not alias to black or white.
    board = ((np.indices((256, 256)).sum(0) % 2) * 255).astype(np.uint8)
    small = np.asarray(fit_image(Image.fromarray(board, mode="L"), 32))
    assert abs(float(small.mean()) - 127.5) < 3 and small.std() < 6
