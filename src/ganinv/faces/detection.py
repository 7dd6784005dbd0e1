"""Face detection and 68-point landmarks with dlib.

Detector: dlib's HOG + linear SVM frontal face detector (Dalal & Triggs, "Histograms of Oriented
Gradients for Human Detection", CVPR 2005), run on an upsampled copy of the photo so that faces down to
about 40 pixels are found; optionally dlib's CNN (MMOD) detector (King, "Max-Margin Object Detection",
2015), which is far slower on a CPU. Landmarks: dlib's 68-point shape predictor, an ensemble of regression
trees (Kazemi & Sullivan, "One Millisecond Face Alignment with an Ensemble of Regression Trees", CVPR
2014), in the iBUG 300-W point order (0-16 jaw, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..data.io import normalize_image_mode, read_image
from .weights import CNN_DETECTOR, SHAPE_PREDICTOR_68, FaceError, find_dlib_file, import_dlib

#: Smallest photo side face detection accepts (the HOG window is 80 pixels; with upsampling 40).
MIN_SIDE = 32

DETECTORS = ("hog", "cnn")

#: Detections scoring below this are dropped. dlib's own HOG threshold is 0; this one is chosen by
#: measurement (docs/benchmarks.md, Faces): the weakest true faces of a real group photo score above it,
#: a round badge on a jacket below it.
DEFAULT_MIN_SCORE = 0.15

_lock = threading.Lock()  # dlib's detector objects are not documented as thread-safe
_cache: dict[tuple, object] = {}


@dataclass
class Face:
    """One detected face, in the photo's pixel coordinates (x right, y down; a pixel's centre is its index).

    box: (x0, y0, x1, y1) of the detector's rectangle; landmarks: [68, 2] float (x, y) in iBUG order;
    score: the detector's confidence (HOG: SVM margin, higher is surer; CNN: its confidence).
    """
    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float
    detector: str = field(default="hog")

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    def to_json(self) -> dict:
        return {"box": [float(v) for v in self.box], "landmarks": np.asarray(self.landmarks, float).tolist(),
                "score": float(self.score), "detector": self.detector}


def as_rgb_uint8(image, name: str = "image") -> np.ndarray:
    """A photo as a uint8 [H, W, 3] array: accepts a numpy array ([H, W], [H, W, 1|3|4], uint8), a PIL
    image or a path (read with EXIF orientation applied)."""
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image, channels=3)
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            image = normalize_image_mode(image, 3)
        return np.asarray(image, dtype=np.uint8)
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise FaceError(f"{name}: expected uint8 pixels, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise FaceError(f"{name}: expected an [H, W, 3] photo, got shape {tuple(array.shape)}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        array = array[:, :, :3]
    return np.ascontiguousarray(array)


def _cached(key: tuple, make):
    if key not in _cache:
        _cache[key] = make()
    return _cache[key]


def load_shape_predictor(dlib_dir=None):
    dlib = import_dlib()
    path = find_dlib_file(SHAPE_PREDICTOR_68, dlib_dir)
    return _cached(("shape", str(path)), lambda: dlib.shape_predictor(str(path)))


def _load_detector(detector: str, dlib_dir=None):
    dlib = import_dlib()
    if detector == "hog":
        return _cached(("hog",), dlib.get_frontal_face_detector)
    path = find_dlib_file(CNN_DETECTOR, dlib_dir)
    return _cached(("cnn", str(path)), lambda: dlib.cnn_face_detection_model_v1(str(path)))


def landmarks_in_box(image: np.ndarray, box, dlib_dir=None) -> np.ndarray:
    """The 68 landmarks [68, 2] the shape predictor places for the face in `box` (x0, y0, x1, y1)."""
    dlib = import_dlib()
    predictor = load_shape_predictor(dlib_dir)
    rect = dlib.rectangle(*(int(round(v)) for v in box))
    with _lock:
        shape = predictor(image, rect)
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def detect(image, *, upsample: int = 1, detector: str = "hog", min_score: float = DEFAULT_MIN_SCORE,
           dlib_dir: str | os.PathLike | None = None) -> list[Face]:
    """Every face in `image` (uint8 RGB array, PIL image or path), left to right.

    Args:
        upsample: how many times the detector doubles the photo first (1 finds faces down to about
            40 pixels; 0 is 4x faster and finds faces from about 80 pixels; 2 from about 20).
        detector: "hog" (default, fast) or "cnn" (dlib's MMOD CNN; much slower on a CPU).
        min_score: drop detections scoring below this (HOG: the SVM margin; CNN: its confidence).
        dlib_dir: a folder with the dlib model files (see `ganinv.faces.weights`).

    Returns an empty list when there is no face. Raises FaceError for a photo too small to hold one
    (a side under 32 pixels) or when dlib or its files are missing.
    """
    image = as_rgb_uint8(image)
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise FaceError(f"image is {width}x{height} pixels; face detection needs at least {MIN_SIDE} on each side")
    if detector not in DETECTORS:
        raise FaceError(f"unknown face detector {detector!r}; choose {' or '.join(DETECTORS)}")
    if not 0 <= upsample <= 4:
        raise FaceError(f"upsample must be 0-4, got {upsample}")
    net = _load_detector(detector, dlib_dir)
    find_dlib_file(SHAPE_PREDICTOR_68, dlib_dir)  # fail early when the file is missing; load it only when needed
    with _lock:
        if detector == "hog":
            rects, scores, _ = net.run(image, upsample, min_score)
            found = list(zip(rects, scores))
        else:
            found = [(d.rect, d.confidence) for d in net(image, upsample) if d.confidence >= min_score]
    faces = []
    for rect, score in found:
        box = (float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom()))
        faces.append(Face(box=box, landmarks=landmarks_in_box(image, box, dlib_dir), score=float(score),
                          detector=detector))
    faces.sort(key=lambda f: ((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2))
    return faces


def largest_face(faces: list[Face]) -> int:
    """Index of the largest face (by box area); -1 when there is none."""
    if not faces:
        return -1
    return max(range(len(faces)), key=lambda i: faces[i].area)
