"""On-disk dataset format shared by the builders (emoji, fashion-mnist) and the trainer.

A dataset is a folder::

    DIR/dataset.json        {format_version, name, source_package, source_version, license, split_rule,
                             counts: {train, heldout}, resolution, channels, label_fields, created_by, ...}
    DIR/labels.json         one record per image, in file order:
                            {"file": "images/000123.png", "split": "train" | "heldout", <label fields>}
    DIR/images/*.png        8-bit PNGs, RGB (channels = 3) or L (channels = 1), resolution x resolution
    DIR/images_<split>.npz  cache written by the builder: key "images" uint8 [N, H, W, C] and key "files"
                            (the records' file names, in the same order) for fast loading

`dataset.json` is written last, so a folder without it is an unfinished build. The PNGs and
`labels.json` are the source of truth; the cache is used only when its file list and shape agree with
them, otherwise the PNGs are read.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from ..utils import atomic_path, write_json
from ..errors import GanInvError

FORMAT_VERSION = 1
SPLITS = ("train", "heldout")
REQUIRED_INFO_FIELDS = ("name", "source_package", "source_version", "license", "split_rule", "counts",
                        "resolution", "channels", "label_fields", "created_by")


class DatasetError(GanInvError):
    """A dataset folder is missing, incomplete or inconsistent, or its source package is not installed."""


def is_dataset(directory: str | os.PathLike) -> bool:
    directory = Path(directory)
    return (directory / "dataset.json").is_file() and (directory / "labels.json").is_file()


def read_dataset_info(directory: str | os.PathLike) -> dict[str, Any]:
    """Read and check DIR/dataset.json."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"{directory}: no such dataset folder")
    info_path = directory / "dataset.json"
    if not info_path.is_file():
        hint = (" (labels.json exists: the build did not finish; rebuild it)"
                if (directory / "labels.json").exists() else "; build one with `ganinv data emoji|fashion-mnist`")
        raise DatasetError(f"{directory}: not a ganinv dataset, dataset.json is missing{hint}")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{info_path}: unreadable dataset.json ({e})") from None
    if not isinstance(info, dict):
        raise DatasetError(f"{info_path}: expected a JSON object")
    missing = [k for k in REQUIRED_INFO_FIELDS if k not in info]
    if missing:
        raise DatasetError(f"{info_path}: missing fields {', '.join(missing)}")
    if info["channels"] not in (1, 3):
        raise DatasetError(f"{info_path}: channels must be 1 or 3, got {info['channels']!r}")
    return info


def read_records(directory: str | os.PathLike) -> list[dict[str, Any]]:
    """Read DIR/labels.json (all splits, in file order)."""
    labels_path = Path(directory) / "labels.json"
    if not labels_path.is_file():
        raise DatasetError(f"{Path(directory)}: not a ganinv dataset, labels.json is missing")
    try:
        records = json.loads(labels_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{labels_path}: unreadable labels.json ({e})") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) and "file" in r and "split" in r
                                                for r in records):
        raise DatasetError(f"{labels_path}: expected a list of records with 'file' and 'split'")
    return records


def _check_split(split: str | None) -> None:
    if split not in (*SPLITS, "all", None):
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)} or all")


def _cache_path(directory: Path, split: str) -> Path:
    return directory / f"images_{split}.npz"


def _load_cache(directory: Path, split: str, records: list[dict], info: dict) -> np.ndarray | None:
    """The cached array when it matches the records and the declared shape, else None."""
    path = _cache_path(directory, split)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            images = data["images"]
            files = [str(f) for f in data["files"]] if "files" in data else None
    except (OSError, ValueError, KeyError, EOFError):
        return None
    resolution, channels = int(info["resolution"]), int(info["channels"])
    if (images.dtype != np.uint8 or images.shape != (len(records), resolution, resolution, channels)
            or files != [r["file"] for r in records]):
        return None
    return images


def _read_png(directory: Path, record: dict, resolution: int, channels: int) -> np.ndarray:
    path = directory / record["file"]
    try:
        with Image.open(path) as image:
            image.load()
            array = np.asarray(image.convert("RGB" if channels == 3 else "L"), dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read dataset image ({e})") from None
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape != (resolution, resolution, channels):
        raise DatasetError(f"{path}: expected {resolution}x{resolution}x{channels}, got "
                           f"{array.shape[0]}x{array.shape[1]}x{array.shape[2]}")
    return array


def load_dataset(directory: str | os.PathLike, split: str | None = "train",
                 use_cache: bool = True) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Load one split of a dataset folder.

    Args:
        directory: the dataset folder (with dataset.json, labels.json, images/).
        split: "train", "heldout", or "all"/None for every image in file order.
        use_cache: read DIR/images_<split>.npz when it is consistent with labels.json.

    Returns:
        (images uint8 [N, H, W, C], records) where records[i] describes images[i].
    """
    _check_split(split)
    directory = Path(directory)
    info = read_dataset_info(directory)
    all_records = read_records(directory)
    resolution, channels = int(info["resolution"]), int(info["channels"])
    splits = SPLITS if split in ("all", None) else (split,)
    arrays, records_out = [], []
    for name in splits:
        records = [r for r in all_records if r["split"] == name]
        images = _load_cache(directory, name, records, info) if use_cache else None
        if images is None:
            images = np.zeros([len(records), resolution, resolution, channels], dtype=np.uint8)
            for i, record in enumerate(records):
                images[i] = _read_png(directory, record, resolution, channels)
        arrays.append(images)
        records_out.extend(records)
    if split in ("all", None):
        # Return in file order, like labels.json.
        order = {r["file"]: i for i, r in enumerate(all_records)}
        images = np.concatenate(arrays) if arrays else np.zeros([0, resolution, resolution, channels], np.uint8)
        permutation = np.argsort([order[r["file"]] for r in records_out], kind="stable")
        return images[permutation], [records_out[i] for i in permutation]
    return arrays[0], records_out


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, C] -> float32 [N, C, H, W] in [-1, 1].

    A 3-d array is one [H, W, C] image when its last axis is 1 or 3, else a grayscale batch [N, H, W].
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"images_to_tensor expects uint8, got {images.dtype}")
    if images.ndim == 3 and images.shape[-1] in (1, 3):
        images = images[None]
    elif images.ndim == 3:
        images = images[:, :, :, None]
    if images.ndim != 4:
        raise ValueError(f"images_to_tensor expects [N, H, W, C] uint8, got shape {list(images.shape)}")
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return tensor / 127.5 - 1


def write_dataset(directory: str | os.PathLike, images: Sequence[np.ndarray] | np.ndarray,
                  records: Sequence[dict[str, Any]], info: dict[str, Any],
                  file_pattern: str = "images/{index:06d}.png",
                  progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Write a dataset folder: PNGs, labels.json, per-split npz caches, then dataset.json.

    Args:
        directory: output folder (created).
        images: uint8 arrays [H, W, C] (or one [N, H, W, C] array), one per record.
        records: label records with at least "split"; "file" is filled in here.
        info: dataset.json fields; counts, resolution, channels and format_version are filled in.
        progress: called as progress("write", done, total) after each image.
    """
    directory = Path(directory)
    if len(images) != len(records):
        raise ValueError(f"{len(images)} images but {len(records)} records")
    if len(records) == 0:
        raise DatasetError("no images to write")
    first = np.asarray(images[0])
    if first.ndim == 2:
        first = first[:, :, None]
    resolution, channels = first.shape[0], first.shape[2]
    if first.shape[1] != resolution or channels not in (1, 3):
        raise ValueError(f"images must be square with 1 or 3 channels, got {list(first.shape)}")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dataset.json").unlink(missing_ok=True)  # the folder is unfinished until it is rewritten
    out_records = []
    per_split: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    per_split_files: dict[str, list[str]] = {s: [] for s in SPLITS}
    for index, (image, record) in enumerate(zip(images, records)):
        image = np.asarray(image, dtype=np.uint8)
        if image.ndim == 2:
            image = image[:, :, None]
        if image.shape != (resolution, resolution, channels):
            raise ValueError(f"image {index} has shape {list(image.shape)}, expected "
                             f"{[resolution, resolution, channels]}")
        if record.get("split") not in SPLITS:
            raise ValueError(f"record {index} has split {record.get('split')!r}; expected train or heldout")
        file = file_pattern.format(index=index)
        path = directory / file
        path.parent.mkdir(parents=True, exist_ok=True)
        pil = Image.fromarray(image[:, :, 0], mode="L") if channels == 1 else Image.fromarray(image, mode="RGB")
        with atomic_path(path) as tmp:
            pil.save(tmp, format="PNG", optimize=False)
        out_records.append({"file": file, **{k: v for k, v in record.items() if k != "file"}})
        per_split[record["split"]].append(image)
        per_split_files[record["split"]].append(file)
        if progress is not None:
            progress("write", index + 1, len(records))
    for split in SPLITS:
        stacked = (np.stack(per_split[split]) if per_split[split]
                   else np.zeros([0, resolution, resolution, channels], np.uint8))
        buffer = io.BytesIO()
        np.savez(buffer, images=stacked, files=np.array(per_split_files[split], dtype=str))
        with atomic_path(_cache_path(directory, split)) as tmp:
            tmp.write_bytes(buffer.getvalue())
    write_json(directory / "labels.json", out_records)
    # Images of an earlier, larger build in the same folder would otherwise linger unlisted.
    written = {directory / r["file"] for r in out_records}
    for path in (directory / file_pattern.format(index=0)).parent.glob("*.png"):
        if path not in written:
            path.unlink()
    full_info = {"format_version": FORMAT_VERSION, **info,
                 "counts": {s: len(per_split[s]) for s in SPLITS},
                 "resolution": int(resolution), "channels": int(channels)}
    write_json(directory / "dataset.json", full_info)
    return directory


def label_values(records: Iterable[dict[str, Any]], field: str) -> list:
    """Sorted distinct values of one label field (None last), e.g. to build class indices."""
    values = {r.get(field) for r in records}
    return sorted((v for v in values if v is not None), key=str) + ([None] if None in values else [])


def debian_package_version(package: str) -> str:
    """The installed version of a Debian package, or 'unknown' where dpkg cannot say."""
    import subprocess
    try:
        result = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True,
                                text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"


def require_file(path: str | os.PathLike, package: str) -> Path:
    """`path` if it exists, else one clear DatasetError naming the Debian package that provides it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} not found: install the Debian package {package} "
                           f"(apt-get install -y {package})")
    return path
