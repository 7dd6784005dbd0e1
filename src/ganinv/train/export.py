"""Build an embedded model folder (`ganinv/assets/<name>/`) from a training run.

The folder holds what `ganinv.load_model` attaches to a model: the native weights (G_ema and D) with a
card describing data, training and measured quality; `samples.png`; `nearest_neighbors.png` (the
memorization check); `classifier/`; `real_images.npz` (a few hundred training images for Clone's global
loss) and `heldout.npz` (held-out images with their label records). Quality measures are those of
`quality.py` (a classifier-feature Fréchet distance, reported with its real-vs-real floor).
"""
from __future__ import annotations

import copy
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.io import save_grid
from ..models.checkpoints import save_native
from ..models.classifier import load_classifier
from .quality import generate_samples, measure_quality, save_nearest_neighbors
from .trainer import CHECKPOINT_FILE, networks_from_checkpoint
from ..data.dataset import load_dataset, read_dataset_info

# A weight dtype is used for storage only when images differ by at most this many 8-bit levels.
VISIBLE_LEVELS = 1


@torch.no_grad()
def half_precision_error(G, num_images: int = 64, seed: int = 0) -> dict[str, float]:
    """Largest image difference between G and G with its weights rounded to float16."""
    rounded = copy.deepcopy(G)
    for tensor in list(rounded.parameters()) + list(rounded.buffers()):
        if tensor.is_floating_point():
            tensor.copy_(tensor.to(torch.float16).to(torch.float32))
    reference = generate_samples(G, num_images, seed=seed)
    approx = generate_samples(rounded, num_images, seed=seed)
    levels = ((reference + 1) * 127.5).round() - ((approx + 1) * 127.5).round()
    return {"max_abs_difference": float((reference - approx).abs().max()),
            "mean_abs_difference": float((reference - approx).abs().mean()),
            "max_uint8_levels": float(levels.abs().max()), "num_images": num_images}


def _hardware_text() -> str:
    if torch.cuda.is_available():
        return f"CUDA {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


def _last_stats(run_dir: Path) -> dict:
    path = run_dir / "stats.jsonl"
    if not path.is_file():
        return {}
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def export_model(run_dir: str | os.PathLike, dataset_dir: str | os.PathLike, classifier_dir: str | os.PathLike,
                 out_dir: str | os.PathLike, *, name: str, description: str, default: bool = False,
                 num_real: int = 300, max_heldout: int = 10_000, num_quality_samples: int = 10_000,
                 weights_dtype: str = "auto", hardware: str | None = None, threads: int | None = None,
                 notes: str = "", seed: int = 0) -> dict[str, Any]:
    """Write the embedded model folder and return its card.

    Args:
        run_dir: a training run folder (with checkpoint.pt).
        dataset_dir: the dataset folder it was trained on (train and held-out splits).
        classifier_dir: a classifier saved by `save_classifier` for that dataset.
        weights_dtype: 'auto' (float16 when it changes no image by more than one 8-bit level),
            'float16' or 'float32'.
    """

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    G, D, info = networks_from_checkpoint(run_dir / CHECKPOINT_FILE)
    classifier = load_classifier(classifier_dir)
    dataset_info = read_dataset_info(dataset_dir)
    train_images, _ = load_dataset(dataset_dir, "train")
    heldout_images, heldout_records = load_dataset(dataset_dir, "heldout")
    if G.img_resolution != train_images.shape[1]:
        raise ValueError(f"{run_dir} trained at {G.img_resolution} px, the dataset is {train_images.shape[1]} px: "
                         "export a run at the dataset's resolution (--grow continues a lower one)")

    half = half_precision_error(G)
    if weights_dtype == "auto":
        dtype = torch.float16 if half["max_uint8_levels"] <= VISIBLE_LEVELS else torch.float32
    elif weights_dtype in ("float16", "float32"):
        dtype = getattr(torch, weights_dtype)
    else:
        raise ValueError(f"weights_dtype must be auto, float16 or float32, got {weights_dtype!r}")

    quality = measure_quality(G, classifier, train_images, heldout_images, num_samples=num_quality_samples,
                              seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_grid(generate_samples(G, 64, seed=seed), out_dir / "samples.png", ncols=8, upscale=2)
    neighbors = save_nearest_neighbors(generate_samples(G, 32, seed=seed + 1), train_images,
                                       out_dir / "nearest_neighbors.png")
    neighbors.pop("nearest_indices")
    if (out_dir / "classifier").exists():
        shutil.rmtree(out_dir / "classifier")
    shutil.copytree(classifier_dir, out_dir / "classifier")

    rng = np.random.RandomState(seed)
    real_index = np.sort(rng.permutation(len(train_images))[:num_real])
    np.savez_compressed(out_dir / "real_images.npz", images=train_images[real_index], indices=real_index)
    held_count = min(max_heldout, len(heldout_images))
    held_records = [{k: v for k, v in r.items() if k not in ("split",)} for r in heldout_records[:held_count]]
    np.savez_compressed(out_dir / "heldout.npz", images=heldout_images[:held_count],
                        labels_json=np.array(json.dumps(held_records, ensure_ascii=False)))

    stats = _last_stats(run_dir)
    config = info["config"]
    classifier_card = getattr(classifier, "card", {})
    card = {
        "name": name,
        "description": description,
        "default": default,
        "training_data": {key: dataset_info.get(key) for key in (
            "name", "description", "source_package", "source_version", "license", "split_rule", "split_file",
            "split_sha256", "counts", "resolution", "channels", "label_fields")},
        "images_seen_kimg": round(info["kimg"], 3),
        "training_steps": info["step"],
        "training_hours": round(info["training_seconds"] / 3600, 3),
        "hardware": hardware or _hardware_text(),
        "threads": threads if threads is not None else stats.get("threads"),
        "training_settings": config,
        "seed": config.get("seed"),
        "label_names": info["label_names"],
        "quality": {**quality, "nearest_neighbors": neighbors},
        "classifier": {"heads": {k: len(v) for k, v in classifier.head_classes.items()},
                       "heldout_accuracy": classifier_card.get("heldout_accuracy")},
        "weights_storage": {"dtype": str(dtype).replace("torch.", ""), "float16_check": half,
                            "rule": f"float16 only when no 8-bit pixel changes by more than {VISIBLE_LEVELS} level"},
        "files": {"samples.png": "64 prior samples of the seed (ganinv.models.prior.sample_prior), truncation_psi=1, const noise",
                  "nearest_neighbors.png": neighbors["layout"],
                  "real_images.npz": f"{len(real_index)} training images (uint8 'images', their 'indices')",
                  "heldout.npz": f"the first {held_count} of {len(heldout_images)} held-out images (uint8 "
                                 f"'images') and their label records ('labels_json')"},
        "notes": notes,
    }
    save_native(out_dir, G, D, card=card, dtype=dtype)
    return json.loads((out_dir / "card.json").read_text())
