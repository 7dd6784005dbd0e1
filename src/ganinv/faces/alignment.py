"""Face alignment by the FFHQ recipe (Karras et al., "A Style-Based Generator Architecture for Generative
Adversarial Networks", CVPR 2019, the dataset's alignment step).

From the 68 landmarks: the eye centres and mouth corners give an oriented square (the quad) around the
face, slightly above the eye-mouth midpoint and about four eye distances wide; the photo is shrunk by an
integer factor when the quad is much larger than the output, cropped to the quad plus a border, padded
by reflection where the quad leaves the photo (the padding blurred and faded to the median colour so
the generator sees no hard mirrored edges), and the quad is resampled to an N x N image.

The quad is kept in the photo's pixel coordinates (a pixel's centre is its integer index; the corners in
FFHQ's order: top-left, bottom-left, bottom-right, top-right of the aligned image), so an aligned or
edited crop can be mapped back (`ganinv.faces.paste`). A crop pixel centre (i + 0.5, j + 0.5) of an M x M
crop lies at quad[0] + 0.5 + (i + 0.5) / M * (quad[3] - quad[0]) + (j + 0.5) / M * (quad[1] - quad[0]) in
the photo's continuous coordinates (where pixel k spans [k, k + 1)).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..utils import write_json
from .detection import Face, as_rgb_uint8, detect
from .weights import FaceError, NoFaceError

#: Largest output side; larger requests are refused (the FFHQ recipe's own transform size).
MAX_SIZE = 4096
ALIGNMENT_FORMAT = "ganinv.alignment"


def photo_sha256(image: np.ndarray) -> str:
    """sha256 of a photo's decoded pixels (uint8 RGB, row-major), so PNG/JPEG re-encodes of other
    pixels never match and a re-saved identical image does."""
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).hexdigest()


def face_quad(landmarks) -> np.ndarray:
    """The FFHQ quad [4, 2] (top-left, bottom-left, bottom-right, top-right) for 68 landmarks."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2) or not np.isfinite(points).all():
        raise FaceError(f"landmarks must be 68 finite (x, y) points, got shape {points.shape}")
    eye_left, eye_right = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    eyes = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth = (points[48] + points[54]) / 2
    eye_to_mouth = mouth - eyes
    # The horizontal axis averages the eye line with the normal of the eye-mouth line, so a tilted
    # head with asymmetric landmarks still gets a stable orientation.
    horizontal = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    length = math.hypot(*horizontal)
    if length < 1e-6:
        raise FaceError("landmarks are degenerate (eyes and mouth coincide)")
    half_side = max(math.hypot(*eye_to_eye) * 2.0, math.hypot(*eye_to_mouth) * 1.8)
    horizontal = horizontal / length * half_side
    vertical = np.array([-horizontal[1], horizontal[0]])
    centre = eyes + eye_to_mouth * 0.1
    return np.stack([centre - horizontal - vertical, centre - horizontal + vertical,
                     centre + horizontal + vertical, centre + horizontal - vertical])


@dataclass
class Alignment:
    """Where an aligned crop came from: the quad (photo pixels, FFHQ order), the crop size, the photo's
    width, height and pixel sha256, and optionally the face's landmarks (photo pixels), the photo's
    path and the face's index in it."""
    quad: np.ndarray
    size: int
    width: int
    height: int
    sha256: str
    landmarks: np.ndarray | None = None
    source: str | None = None
    face_index: int | None = None

    def to_json(self) -> dict:
        return {"format": ALIGNMENT_FORMAT, "version": 1, "quad": np.asarray(self.quad, float).tolist(),
                "size": int(self.size), "width": int(self.width), "height": int(self.height),
                "sha256": self.sha256, "source": self.source, "face_index": self.face_index,
                "landmarks": None if self.landmarks is None else np.asarray(self.landmarks, float).tolist()}

    @classmethod
    def from_json(cls, data, where: str = "alignment") -> "Alignment":
        """Validate and read an alignment record; any problem is a one-line FaceError naming `where`."""
        if not isinstance(data, dict):
            raise FaceError(f"{where}: expected a JSON object")

        def points(key, count, required):
            value = data.get(key)
            if value is None and not required:
                return None
            try:
                array = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                array = np.zeros(0)
            if array.shape != (count, 2) or not np.isfinite(array).all():
                raise FaceError(f"{where}: {key!r} must be {count} finite [x, y] points")
            return array

        def integer(key, low, high):
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise FaceError(f"{where}: {key!r} must be an integer in [{low}, {high}], got {value!r}")
            return value

        sha = data.get("sha256")
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise FaceError(f"{where}: 'sha256' must be 64 lowercase hex digits")
        source, index = data.get("source"), data.get("face_index")
        if source is not None and not isinstance(source, str):
            raise FaceError(f"{where}: 'source' must be a string or null")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
            raise FaceError(f"{where}: 'face_index' must be a non-negative integer or null")
        return cls(quad=points("quad", 4, True), size=integer("size", 1, MAX_SIZE),
                   width=integer("width", 1, 1_000_000), height=integer("height", 1, 1_000_000), sha256=sha,
                   landmarks=points("landmarks", 68, False), source=source, face_index=index)

    def save(self, path: str | os.PathLike) -> Path:
        """Write `path` (a file, or a folder that gets alignment.json) atomically."""
        path = Path(path)
        if path.is_dir():
            path = path / "alignment.json"
        write_json(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Alignment":
        """Read alignment.json (or a folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / "alignment.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FaceError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FaceError(f"{path}: not a readable alignment file ({e})") from None
        return cls.from_json(data, str(path))

    def side(self) -> float:
        """The quad's side length in photo pixels."""
        return float(np.hypot(*(np.asarray(self.quad)[3] - np.asarray(self.quad)[0])))


def _padded_region(image: np.ndarray, quad: np.ndarray, shrink: int, side: float):
    """The part of the photo around the quad, shrunk by `shrink`, reflected (and blurred, faded to the
    median) where it leaves the photo. Returns (float32 image, origin) with origin the photo continuous
    coordinate of the region's (0, 0)."""
    height, width = image.shape[:2]
    corners = quad + 0.5
    border = max(int(round(side * 0.1)), 3)
    x0 = math.floor((math.floor(corners[:, 0].min()) - border) / shrink) * shrink
    y0 = math.floor((math.floor(corners[:, 1].min()) - border) / shrink) * shrink
    x1 = math.ceil((math.ceil(corners[:, 0].max()) + border) / shrink) * shrink
    y1 = math.ceil((math.ceil(corners[:, 1].max()) + border) / shrink) * shrink
    inside_x0, inside_y0 = max(x0, 0), max(y0, 0)
    inside_x1 = inside_x0 + max(0, (min(x1, width) - inside_x0) // shrink * shrink)
    inside_y1 = inside_y0 + max(0, (min(y1, height) - inside_y0) // shrink * shrink)
    if inside_x1 <= inside_x0 or inside_y1 <= inside_y0:
        raise FaceError("the face's quad lies outside the photo")
    region = image[inside_y0:inside_y1, inside_x0:inside_x1]
    if shrink > 1:
        region = np.asarray(Image.fromarray(region).reduce(shrink))
    pads = [(inside_x0 - x0) // shrink, (inside_y0 - y0) // shrink,
            (x1 - inside_x1) // shrink, (y1 - inside_y1) // shrink]  # left, top, right, bottom
    region = region.astype(np.float32)
    if max(pads) == 0:
        return region, (float(inside_x0), float(inside_y0))
    # The recipe pads generously once it pads at all, so the fade is gentle.
    minimum = int(round(side / shrink * 0.3))
    pads = [max(p, minimum) if p > 0 else 0 for p in pads]
    left, top, right, bottom = pads
    region = np.pad(region, ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, w = region.shape[:2]
    xs, ys = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]
    # Distance into the padding, as a fraction of the pad width: 1 at the outer edge, 0 at the photo's
    # edge, negative inside the photo (so the blur also softens a band just inside the edge).
    ramp = np.full((h, w), -np.inf, dtype=np.float32)
    for pad, distance in ((left, xs), (top, ys), (right, w - 1 - xs), (bottom, h - 1 - ys)):
        if pad > 0:
            ramp = np.maximum(ramp, 1.0 - distance / pad)
    from scipy.ndimage import gaussian_filter  # optional dependency of the faces extra
    sigma = side / shrink * 0.02
    blurred = gaussian_filter(region, [sigma, sigma, 0])
    region += (blurred - region) * np.clip(ramp * 3.0 + 1.0, 0.0, 1.0)[:, :, None]
    region += (np.median(region, axis=(0, 1)) - region) * np.clip(ramp, 0.0, 1.0)[:, :, None]
    return region, (float(inside_x0 - left * shrink), float(inside_y0 - top * shrink))


def warp_quad(image: np.ndarray, quad, size: int) -> np.ndarray:
    """Resample the photo inside `quad` (photo pixels, FFHQ order) to a uint8 [size, size, 3] image."""
    quad = np.asarray(quad, dtype=np.float64)
    side = float(np.hypot(*(quad[3] - quad[0])))
    shrink = max(1, int(math.floor(side / size * 0.5)))
    region, origin = _padded_region(image, quad, shrink, side)
    local = (quad + 0.5 - np.array(origin)) / shrink
    pil = Image.fromarray(np.clip(np.rint(region), 0, 255).astype(np.uint8))
    # Sample at (at least) the source's resolution, then low-pass down to the output size.
    transform_size = int(min(MAX_SIZE, max(size, math.ceil(side / shrink))))
    crop = pil.transform((transform_size, transform_size), Image.QUAD, tuple(local.flatten()), Image.BILINEAR)
    if transform_size != size:
        crop = crop.resize((size, size), Image.LANCZOS)
    return np.array(crop)


def align(image, face: Face | np.ndarray, size: int = 1024, *, source: str | None = None,
          face_index: int | None = None, sha256: str | None = None) -> tuple[np.ndarray, Alignment]:
    """Align one face by the FFHQ recipe.

    Args:
        image: the photo (uint8 RGB array, PIL image or path).
        face: a `Face` from `detect` or its 68 landmarks [68, 2] in photo pixels.
        size: the output side N (use the generator's img_resolution).
        source, face_index: recorded in the Alignment (the photo's path, the face's index).
        sha256: the photo's `photo_sha256` when already known.

    Returns (crop uint8 [N, N, 3], Alignment).
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= MAX_SIZE:
        raise FaceError(f"alignment size must be an integer 1-{MAX_SIZE}, got {size!r}")
    image = as_rgb_uint8(image)
    landmarks = np.asarray(face.landmarks if isinstance(face, Face) else face, dtype=np.float64)
    quad = face_quad(landmarks)
    crop = warp_quad(image, quad, int(size))
    alignment = Alignment(quad=quad, size=int(size), width=image.shape[1], height=image.shape[0],
                          sha256=sha256 or photo_sha256(image), landmarks=landmarks, source=source,
                          face_index=face_index)
    return crop, alignment


def align_faces(image, size: int = 1024, *, source: str | None = None, **detect_options
                ) -> list[tuple[np.ndarray, Alignment, Face]]:
    """Detect every face and align each: [(crop, Alignment, Face)], left to right.

    Raises NoFaceError when the photo holds no face."""
    image = as_rgb_uint8(image)
    faces = detect(image, **detect_options)
    if not faces:
        raise NoFaceError(f"{source or 'image'}: no face found")
    sha = photo_sha256(image)
    return [(*align(image, face, size, source=source, face_index=i, sha256=sha), face)
            for i, face in enumerate(faces)]


def photo_to_crop(points, alignment: Alignment, size: int | None = None) -> np.ndarray:
    """Map points [K, 2] from photo pixels to the pixels of the aligned crop (side `size`, default the
    alignment's), both with a pixel's centre at its integer index."""
    size = alignment.size if size is None else size
    quad = np.asarray(alignment.quad, dtype=np.float64)
    basis = np.stack([(quad[3] - quad[0]) / size, (quad[1] - quad[0]) / size], axis=1)
    offsets = np.asarray(points, dtype=np.float64) - quad[0]
    return np.linalg.solve(basis, offsets.T).T - 0.5


def crop_to_photo(points, alignment: Alignment, size: int | None = None) -> np.ndarray:
    """The inverse of `photo_to_crop`."""
    size = alignment.size if size is None else size
    quad = np.asarray(alignment.quad, dtype=np.float64)
    basis = np.stack([(quad[3] - quad[0]) / size, (quad[1] - quad[0]) / size], axis=1)
    return quad[0] + (np.asarray(points, dtype=np.float64) + 0.5) @ basis.T
