"""Face identity descriptor: dlib's ResNet face-recognition network (a ResNet-34 variant trained with a
metric loss on about three million faces; King, dlib 19.3 release, after He et al., "Deep Residual
Learning for Image Recognition", CVPR 2016), giving a 128-d descriptor per face.

Identity similarity of a reconstruction is the cosine similarity of the descriptors of the target and
the reconstruction, as the inversion papers report it with ArcFace (e.g. Richardson et al., pSp, 2021;
Roich et al., PTI, 2022). Both images are cut to dlib's 150 x 150 face chip with the same transform, the
one the 68 landmarks of the *target* give, so the comparison is of the same region. Only genuine weights
are used: without dlib or the model file the similarity is unavailable (None), never computed otherwise.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from ..data.io import to_uint8
from .detection import _cached, _lock, as_rgb_uint8, detect, landmarks_in_box, load_shape_predictor
from .weights import RESNET_DESCRIPTOR, SHAPE_PREDICTOR_68, FaceError, find_dlib_file, import_dlib

#: Images smaller than this are upsampled first (the chip is 150 pixels; landmarks want a large face).
WORK_SIZE = 256
#: Where a frontal face lies in an FFHQ-aligned crop (fractions of the side), used when the detector
#: finds no face in the target.
ALIGNED_FACE_BOX = (0.15, 0.2, 0.85, 0.9)


def identity_available(dlib_dir: str | os.PathLike | None = None) -> bool:
    """True when dlib and the genuine descriptor and landmark files are present."""
    try:
        import_dlib()
        find_dlib_file(RESNET_DESCRIPTOR, dlib_dir)
        find_dlib_file(SHAPE_PREDICTOR_68, dlib_dir)
    except FaceError:
        return False
    return True


def load_descriptor(dlib_dir=None):
    dlib = import_dlib()
    path = find_dlib_file(RESNET_DESCRIPTOR, dlib_dir)
    return _cached(("resnet", str(path)), lambda: dlib.face_recognition_model_v1(str(path)))


def _work_image(image) -> np.ndarray:
    array = image if isinstance(image, np.ndarray) else to_uint8(image)[0]
    array = as_rgb_uint8(array)
    if max(array.shape[:2]) < WORK_SIZE:
        array = np.asarray(Image.fromarray(array).resize((WORK_SIZE, WORK_SIZE), Image.LANCZOS))
    return array


def face_descriptors(target, others, dlib_dir=None) -> tuple[np.ndarray, list[np.ndarray]]:
    """128-d descriptors of `target` (an aligned face crop: uint8 [H, W, 3] or a tensor [C, H, W] /
    [1, C, H, W] in [-1, 1]) and of each image in `others` (same size), all cut with the target's landmarks."""
    dlib = import_dlib()
    model = load_descriptor(dlib_dir)
    load_shape_predictor(dlib_dir)
    target_pixels = _work_image(target)
    size = target_pixels.shape[0]
    try:
        faces = detect(target_pixels, upsample=0, dlib_dir=dlib_dir)
    except FaceError:
        faces = []
    if faces:
        landmarks = max(faces, key=lambda f: f.area).landmarks
    else:
        landmarks = landmarks_in_box(target_pixels, [v * size for v in ALIGNED_FACE_BOX], dlib_dir)
    rect = dlib.rectangle(0, 0, size - 1, size - 1)
    shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in landmarks])

    def describe(pixels: np.ndarray) -> np.ndarray:
        if pixels.shape != target_pixels.shape:
            raise FaceError(f"identity: images must have the target's size {target_pixels.shape[:2]}, "
                            f"got {pixels.shape[:2]}")
        with _lock:
            chip = dlib.get_face_chip(pixels, shape, size=150, padding=0.25)
            return np.asarray(model.compute_face_descriptor(chip), dtype=np.float64)

    return describe(target_pixels), [describe(_work_image(o)) for o in others]


def identity_similarity(reconstruction: torch.Tensor, target: torch.Tensor,
                        dlib_dir: str | os.PathLike | None = None) -> list[float] | None:
    """Per-image cosine similarity [N] of dlib face descriptors of reconstruction and target (both
    [N, C, H, W] in [-1, 1], aligned face crops), or None when the genuine weights are unavailable."""
    if not identity_available(dlib_dir):
        return None
    if reconstruction.shape != target.shape or target.ndim != 4:
        raise ValueError(f"identity_similarity: expected two [N, C, H, W] tensors of one shape, got "
                         f"{tuple(reconstruction.shape)} and {tuple(target.shape)}")
    values = []
    for i in range(target.shape[0]):
        reference, (other,) = face_descriptors(target[i:i + 1], [reconstruction[i:i + 1].clamp(-1, 1)], dlib_dir)
        denominator = np.linalg.norm(reference) * np.linalg.norm(other)
        values.append(float(reference @ other / denominator) if denominator > 0 else 0.0)
    return values
