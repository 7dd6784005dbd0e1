"""Paste an aligned (edited) face crop back into the full photo.

The crop is mapped back through the inverse of the alignment's similarity transform (bilinear sampling)
and blended into the photo with a soft mask: the convex hull of the face's landmarks with the brows
raised to cover the forehead, dilated and feathered with a Gaussian (the usual face-swap blend, e.g.
Nirkin et al., "On Face Segmentation, Face Swapping, and Face Perception", FG 2018, use a face mask the
same way). Optionally the crop's mean colour is matched to the photo along the seam first, so a small
colour shift of the reconstruction does not show as a ring. Pixels where the mask is zero are copied from
the photo unchanged, byte for byte.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..data.io import to_uint8
from .alignment import Alignment
from .detection import as_rgb_uint8
from .weights import FaceError

#: Mask values below this are set to 0 (and above 1 - it to 1), so the blended region is bounded.
MASK_EPSILON = 1.0 / 512


def _crop_uint8(crop) -> np.ndarray:
    """uint8 [M, M, 3] from a uint8 array ([M, M], [M, M, 1|3]), a PIL image or a tensor in [-1, 1]
    ([C, M, M] or [1, C, M, M])."""
    if hasattr(crop, "detach"):  # a torch tensor, the generator's output
        if crop.ndim == 4 and crop.shape[0] != 1:
            raise FaceError(f"paste_back takes one crop at a time, got a batch of {crop.shape[0]}")
        crop = to_uint8(crop)[0]
    array = as_rgb_uint8(crop, name="crop")
    if array.shape[0] != array.shape[1]:
        raise FaceError(f"crop must be square, got {array.shape[1]}x{array.shape[0]}")
    return array


def _affine(alignment: Alignment, crop_size: int):
    """(origin, basis) with photo continuous point = origin + basis @ (u, v) for crop continuous (u, v)."""
    quad = np.asarray(alignment.quad, dtype=np.float64) + 0.5
    basis = np.stack([(quad[3] - quad[0]) / crop_size, (quad[1] - quad[0]) / crop_size], axis=1)
    return quad[0], basis


def _region(alignment: Alignment, pad: float) -> tuple[int, int, int, int]:
    """The photo rows/columns (y0, y1, x0, x1) the quad covers, clipped to the photo."""
    quad = np.asarray(alignment.quad) + 0.5
    x0 = max(0, int(np.floor(quad[:, 0].min() - pad)))
    y0 = max(0, int(np.floor(quad[:, 1].min() - pad)))
    x1 = min(alignment.width, int(np.ceil(quad[:, 0].max() + pad)))
    y1 = min(alignment.height, int(np.ceil(quad[:, 1].max() + pad)))
    return y0, y1, x0, x1


def _face_outline(alignment: Alignment) -> np.ndarray:
    """Polygon points (photo pixels) around the face: landmark hull with raised brows, or, without
    landmarks, an ellipse where the FFHQ recipe puts the face."""
    side = alignment.side()
    quad = np.asarray(alignment.quad, dtype=np.float64)
    up = (quad[0] - quad[1]) / max(np.hypot(*(quad[0] - quad[1])), 1e-9)  # towards the top of the crop
    if alignment.landmarks is not None:
        points = np.asarray(alignment.landmarks, dtype=np.float64)
        forehead = points[17:27] + up * side * 0.12
        return np.concatenate([points, forehead])
    origin, basis = _affine(alignment, 1)
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    uv = np.stack([0.5 + 0.27 * np.cos(angles), 0.5 + 0.36 * np.sin(angles)], axis=1)
    return origin + uv @ basis.T - 0.5


def blend_mask(alignment: Alignment, *, dilate: float = 0.02, feather: float = 0.025,
               crop_size: int | None = None) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The soft blend mask of a face: (float32 mask in [0, 1] over the region, (y0, y1, x0, x1)).

    dilate and feather are fractions of the quad's side (feather is the Gaussian's sigma). The mask is 0
    outside the quad, and exactly 0 wherever it would be below 1/512.
    """
    from scipy import ndimage  # optional dependency of the faces extra
    side = alignment.side()
    y0, y1, x0, x1 = _region(alignment, 0)
    if y1 <= y0 or x1 <= x0:
        raise FaceError("the alignment's quad lies outside the photo")
    outline = _face_outline(alignment) + 0.5 - np.array([x0, y0])
    from scipy.spatial import ConvexHull
    try:
        hull = outline[ConvexHull(outline).vertices]
    except Exception:  # degenerate (collinear) landmarks
        raise FaceError("cannot build a face mask: the landmarks are degenerate") from None
    canvas = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in hull], fill=255)
    inside = np.asarray(canvas) > 127
    if dilate > 0 and inside.any():
        inside = ndimage.distance_transform_edt(~inside) <= dilate * side
    mask = inside.astype(np.float32)
    if feather > 0:
        mask = ndimage.gaussian_filter(mask, feather * side, mode="constant")
    # Nothing outside the crop's square (the crop has no pixels there).
    origin, basis = _affine(alignment, 1)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
    uv = np.linalg.solve(basis, np.stack([xs.ravel() - origin[0], ys.ravel() - origin[1]]))
    in_square = ((uv >= 0.0) & (uv <= 1.0)).all(axis=0).reshape(mask.shape)
    mask = np.where(in_square, mask, 0.0).astype(np.float32)
    mask[mask < MASK_EPSILON] = 0.0
    mask[mask > 1.0 - MASK_EPSILON] = 1.0
    return mask, (y0, y1, x0, x1)


def _warp_crop(crop: np.ndarray, alignment: Alignment, region: tuple[int, int, int, int]) -> np.ndarray:
    """The crop resampled onto the photo's pixel grid over `region` (float32 [h, w, 3])."""
    from scipy import ndimage
    y0, y1, x0, x1 = region
    size = crop.shape[0]
    origin, basis = _affine(alignment, size)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
    uv = np.linalg.solve(basis, np.stack([xs.ravel() - origin[0], ys.ravel() - origin[1]]))
    coords = np.stack([uv[1] - 0.5, uv[0] - 0.5])  # (row, column) sample positions, pixel centres at k
    out = np.empty((y1 - y0, x1 - x0, 3), dtype=np.float32)
    for c in range(3):
        out[:, :, c] = ndimage.map_coordinates(crop[:, :, c].astype(np.float32), coords, order=1,
                                               mode="nearest").reshape(y1 - y0, x1 - x0)
    return out


def paste_back(photo, crop, alignment: Alignment, *, color_match: bool = True, dilate: float = 0.02,
               feather: float = 0.025, return_mask: bool = False):
    """Blend the (edited) aligned `crop` back into `photo`.

    Args:
        photo: the photo the alignment was made on (uint8 RGB array, PIL image or path); its size must
            match the alignment's.
        crop: the crop, any square size (uint8 array or PIL image, or a tensor in [-1, 1] as the
            generator returns it; one channel is repeated to RGB). Several faces at once: pass lists of
            crops and alignments; they are pasted in order.
        color_match: shift the crop's mean colour to the photo's along the seam first.
        dilate, feather: the mask's dilation and Gaussian feather, as fractions of the quad's side.
        return_mask: also return the blend mask at the photo's size (float32, 0 where the photo is kept).

    Returns the new photo (uint8 [H, W, 3]); every pixel where the mask is 0 equals the input's.
    """
    photo = as_rgb_uint8(photo, name="photo")
    crops = crop if isinstance(crop, (list, tuple)) else [crop]
    alignments = alignment if isinstance(alignment, (list, tuple)) else [alignment]
    if len(crops) != len(alignments):
        raise FaceError(f"paste_back: {len(crops)} crops but {len(alignments)} alignments")
    out = photo.copy()
    full_mask = np.zeros(photo.shape[:2], dtype=np.float32)
    for one_crop, one in zip(crops, alignments):
        if (photo.shape[1], photo.shape[0]) != (one.width, one.height):
            raise FaceError(f"photo is {photo.shape[1]}x{photo.shape[0]} but the alignment was made on a "
                            f"{one.width}x{one.height} photo")
        pixels = _crop_uint8(one_crop)
        mask, region = blend_mask(one, dilate=dilate, feather=feather)
        y0, y1, x0, x1 = region
        warped = _warp_crop(pixels, one, region)
        base = out[y0:y1, x0:x1].astype(np.float32)
        if color_match:
            seam = (mask > 0) & (mask < 0.5)
            if seam.any():
                warped += (base[seam] - warped[seam]).mean(axis=0)
        weight = mask[:, :, None]
        blended = np.clip(np.rint(base * (1 - weight) + warped * weight), 0, 255).astype(np.uint8)
        out[y0:y1, x0:x1] = np.where(weight > 0, blended, out[y0:y1, x0:x1])
        full_mask[y0:y1, x0:x1] = np.maximum(full_mask[y0:y1, x0:x1], mask)
    return (out, full_mask) if return_mask else out
