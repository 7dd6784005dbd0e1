"""The Fashion-MNIST dataset (Xiao, Rasul and Vollgraf 2017, "Fashion-MNIST: a Novel Image Dataset for
Benchmarking Machine Learning Algorithms"), from the Debian package `dataset-fashion-mnist`.

The 28x28 grayscale images are padded to 32x32 with the background value 0 (black), so that they fit a
generator whose resolution is a power of two; one channel (mode L). The official split is kept:
the 60,000 training images are `train`, the 10,000 test images are `heldout`.
Labels: `class` (0-9) and `class_name`.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Callable

import numpy as np

from .dataset import DatasetError, debian_package_version, write_dataset

PACKAGE = "dataset-fashion-mnist"
DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "heldout": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
RESOLUTION = 32
BACKGROUND = 0
SPLIT_RULE = "official Fashion-MNIST split: train = the 60,000 training images, heldout = the 10,000 test images"
IDX_UBYTE = 0x08


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{directory / stem}.gz not found: install the Debian package {PACKAGE} "
                       f"(apt-get install -y {PACKAGE})")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Decode an IDX file (the MNIST format; optionally gzip-compressed) of unsigned bytes."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            data = stream.read()
    except (OSError, EOFError) as e:
        raise DatasetError(f"{path}: cannot read IDX file ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{path}: not an IDX file (bad magic number)")
    dtype_code, ndim = data[2], data[3]
    if dtype_code != IDX_UBYTE:
        raise DatasetError(f"{path}: IDX element type 0x{dtype_code:02x} is not unsigned byte")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape)) if shape else 0
    if len(data) - header != expected:
        raise DatasetError(f"{path}: IDX payload has {len(data) - header} bytes, header says {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_fashion_mnist(split: str,
                       data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels uint8 [N]) of the official 'train' or 'heldout' (test) split."""
    if split not in FILES:
        raise ValueError(f"unknown split {split!r}; choose train or heldout")
    data_dir = Path(data_dir or DATA_DIR)
    images_stem, labels_stem = FILES[split]
    images = read_idx(_find(data_dir, images_stem))
    labels = read_idx(_find(data_dir, labels_stem))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{data_dir}: {split} images {list(images.shape)} and labels {list(labels.shape)} "
                           "do not match")
    if labels.size and int(labels.max()) >= len(CLASS_NAMES):
        raise DatasetError(f"{data_dir}: label {int(labels.max())} out of range 0-{len(CLASS_NAMES) - 1}")
    return images, labels


def pad_to(images: np.ndarray, resolution: int = RESOLUTION, value: int = BACKGROUND) -> np.ndarray:
    """Center-pad [N, H, W] to [N, resolution, resolution] with `value`."""
    n, height, width = images.shape
    if height > resolution or width > resolution:
        raise ValueError(f"cannot pad {height}x{width} images to {resolution}x{resolution}")
    top, left = (resolution - height) // 2, (resolution - width) // 2
    out = np.full([n, resolution, resolution], value, dtype=np.uint8)
    out[:, top:top + height, left:left + width] = images
    return out


def build_fashion_mnist(outdir: str | os.PathLike, limit: int | None = None,
                        data_dir: str | os.PathLike | None = None,
                        progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Write Fashion-MNIST (32x32, one channel) to `outdir` in the format of `data/dataset.py`.

    Args:
        outdir: the dataset folder to write.
        limit: keep only the first `limit` images of each split (for quick tests).
        data_dir: where the IDX files are (default: DATA_DIR, from the Debian package).
        progress: called as progress(stage, done, total) while writing images (stage "write").

    Raises DatasetError naming the Debian package when its files are missing.
    """
    data_dir = Path(data_dir or DATA_DIR)
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    images_all, records = [], []
    for split in ("train", "heldout"):
        images, labels = read_fashion_mnist(split, data_dir)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        images_all.append(pad_to(images)[:, :, :, None])
        records.extend({"split": split, "class": int(label), "class_name": CLASS_NAMES[int(label)]}
                       for label in labels)
    info = {
        "name": "fashion-mnist",
        "description": "Fashion-MNIST (Zalando Research), 28x28 grayscale padded to 32x32 with black (0), "
                       "one channel",
        "source_package": PACKAGE,
        "source_version": f"{PACKAGE} {debian_package_version(PACKAGE)}",
        "source_files": [str(data_dir)],
        "license": "MIT (Expat), Zalando SE",
        "split_rule": SPLIT_RULE,
        "label_fields": ["class", "class_name"],
        "classes": list(CLASS_NAMES),
        "limit": limit,
        "created_by": "ganinv data fashion-mnist",
    }
    return write_dataset(outdir, np.concatenate(images_all), records, info, progress=progress)
