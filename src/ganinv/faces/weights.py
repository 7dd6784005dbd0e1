"""Where dlib and its model files come from (the optional `faces` extra).

dlib itself comes from the PyPI wheel `dlib-bin` (no compiler needed). Its model files are looked up, in
order, in a folder given by argument, in `$GANINV_DLIB_DIR`, in the package data of the PyPI package
`face-recognition-models` (found without importing it: its `__init__` needs `pkg_resources`), and in
`/usr/share/dlib` (Debian `libdlib-data`, which ships the 68-point shape predictor only).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import GanInvError

#: File names of the dlib models ganinv uses.
SHAPE_PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"
CNN_DETECTOR = "mmod_human_face_detector.dat"
RESNET_DESCRIPTOR = "dlib_face_recognition_resnet_model_v1.dat"

SYSTEM_DIRS = (Path("/usr/share/dlib"),)
INSTALL_HINT = "pip install 'ganinv[faces]'"


class FaceError(GanInvError):
    """A face step cannot run or found nothing usable: names the input or the missing component."""


class NoFaceError(FaceError):
    """A photo in which no face was found."""


def import_dlib():
    """The dlib module, or a one-line FaceError naming the package to install."""
    try:
        import dlib  # heavy optional dependency
    except ImportError:
        raise FaceError(f"face detection needs dlib: {INSTALL_HINT} (PyPI package dlib-bin)") from None
    return dlib


def _package_model_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def dlib_search_dirs(dlib_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for dlib model files, in order."""
    dirs: list[Path] = []
    if dlib_dir is not None:
        dirs.append(Path(dlib_dir))
    env = os.environ.get("GANINV_DLIB_DIR")
    if env:
        dirs.append(Path(env))
    package = _package_model_dir()
    if package is not None:
        dirs.append(package)
    dirs.extend(SYSTEM_DIRS)
    return dirs


def find_dlib_file(name: str, dlib_dir: str | os.PathLike | None = None) -> Path:
    """The path of dlib model file `name`, or a one-line FaceError naming the file and where it was sought."""
    dirs = dlib_search_dirs(dlib_dir)
    for folder in dirs:
        path = folder / name
        if path.is_file():
            return path
    where = ", ".join(str(d) for d in dirs)
    raise FaceError(f"{name} not found (searched {where}); install it with {INSTALL_HINT} "
                    f"(PyPI package face-recognition-models) or set GANINV_DLIB_DIR to a folder holding it")


def has_dlib_file(name: str, dlib_dir: str | os.PathLike | None = None) -> bool:
    try:
        find_dlib_file(name, dlib_dir)
        import_dlib()
    except FaceError:
        return False
    return True
