"""Sample-quality measurements for the embedded generators.

* Classifier-feature Fréchet distance: the Fréchet distance between Gaussians fitted to features of two
  image sets (Dowson & Landau 1982; used for GANs by Heusel et al., NeurIPS 2017, with Inception
  features, "FID"). Here the features are the penultimate layer of the dataset's own small classifier
  (`classifier.py`), so the number is not an FID and is not comparable with published FIDs. It is
  reported for samples vs held-out real images next to the same distance between real training and
  real held-out images (the floor that a perfect generator would reach with these sample sizes).
  The Fréchet distance itself lives in `ganinv.metrics.quality`, which also measures precision/recall
  in the self-supervised shape embedding that sees what this classifier misses (`benchmarks/quality.py`).
* Memorization check: the nearest training image (pixel L2 in [-1, 1]) of each of a grid of samples,
  written as a picture with each row of samples above the row of their nearest training images.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..data.io import save_grid
from ..metrics.quality import frechet_distance
from ..models.prior import sample_prior


@torch.no_grad()
def generate_samples(G, num_samples: int, seed: int = 0, batch_size: int = 100, truncation_psi: float = 1.0,
                     noise_mode: str = "const", device: str | torch.device = "cpu") -> torch.Tensor:
    """`num_samples` images from G (float [-1, 1] NCHW on CPU) of the prior samples of `seed`
    (`ganinv.models.prior.sample_prior`: NVIDIA gen_images' z, classes cycled for a conditional G).

    Rendering runs on G's device (`device` must be that device; it is accepted for older callers)."""
    ws = sample_prior(G, num_samples, seed=seed, truncation_psi=truncation_psi)
    return torch.cat([G.synthesis(ws[start:start + batch_size], noise_mode=noise_mode).clamp(-1, 1).cpu()
                      for start in range(0, num_samples, batch_size)])


@torch.no_grad()
def classifier_features(classifier, images: torch.Tensor | np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Penultimate classifier features [N, F] (float64) of images (float [-1, 1] NCHW or uint8 NHWC)."""
    classifier.eval()
    device = next(classifier.parameters()).device
    feats = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        if isinstance(chunk, np.ndarray):
            chunk = _uint8_to_tensor(chunk)
        feats.append(classifier.features(chunk.to(device)).double().cpu().numpy())
    return np.concatenate(feats)


def _uint8_to_tensor(images: np.ndarray) -> torch.Tensor:
    if images.ndim == 3:
        images = images[..., None]
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def nearest_training_images(samples: torch.Tensor, train_images: np.ndarray, chunk_size: int = 4096
                            ) -> tuple[np.ndarray, np.ndarray]:
    """For each sample, the index of the nearest training image by pixel L2 (in [-1, 1]) and the RMS distance."""
    flat_samples = samples.reshape(len(samples), -1).double()
    best_distance = torch.full([len(samples)], float("inf"), dtype=torch.float64)
    best_index = torch.zeros([len(samples)], dtype=torch.int64)
    for start in range(0, len(train_images), chunk_size):
        chunk = _uint8_to_tensor(train_images[start:start + chunk_size]).reshape(-1, flat_samples.shape[1]).double()
        if chunk.shape[1] != flat_samples.shape[1]:
            raise ValueError("samples and training images differ in shape")
        distance = torch.cdist(flat_samples, chunk).square()
        value, index = distance.min(dim=1)
        better = value < best_distance
        best_distance = torch.where(better, value, best_distance)
        best_index = torch.where(better, index + start, best_index)
    rms = (best_distance / flat_samples.shape[1]).sqrt()
    return best_index.numpy(), rms.numpy()


def save_nearest_neighbors(samples: torch.Tensor, train_images: np.ndarray, path: str | os.PathLike,
                           columns: int = 8, upscale: int = 2) -> dict:
    """Write the memorization picture (rows of samples, each above its row of nearest training images)."""
    index, rms = nearest_training_images(samples, train_images)
    neighbors = _uint8_to_tensor(train_images[index])
    rows = []
    for start in range(0, len(samples), columns):
        rows.append(samples[start:start + columns])
        rows.append(neighbors[start:start + columns])
    save_grid(torch.cat(rows), Path(path), ncols=columns, upscale=upscale)
    return {"num_samples": len(samples), "layout": "odd rows: samples; even rows: their nearest training image",
            "rms_distance_median": float(np.median(rms)), "rms_distance_min": float(rms.min()),
            "nearest_indices": index.tolist()}


@torch.no_grad()
def class_fractions(classifier, features: np.ndarray) -> dict[str, dict[str, float]]:
    """Per head, the fraction of images the classifier assigns to each class (a diversity check)."""
    device = next(classifier.parameters()).device
    x = torch.from_numpy(features).float().to(device)
    out = {}
    for name, head in classifier.heads.items():
        counts = torch.bincount(head(x).argmax(dim=1).cpu(), minlength=head.out_features).double()
        names = classifier.head_classes[name]
        out[name] = {names[i]: round(float(counts[i] / len(x)), 4) for i in range(len(names))}
    return out


def measure_quality(G, classifier, train_images: np.ndarray, heldout_images: np.ndarray, *,
                    num_samples: int = 10_000, seed: int = 0, device: str | torch.device = "cpu") -> dict:
    """Fréchet distances (classifier features) of samples vs held-out and of real train vs held-out.

    Both use the same number of images on the train/sample side (min(num_samples, len(train)), train
    images chosen with a seeded permutation) and all held-out images.
    """
    count = min(num_samples, len(train_images))
    rng = np.random.RandomState(seed)
    train_subset = train_images[np.sort(rng.permutation(len(train_images))[:count])]
    heldout_features = classifier_features(classifier, heldout_images)
    train_features = classifier_features(classifier, train_subset)
    sample_features = classifier_features(classifier, generate_samples(G, count, seed=seed, device=device))
    samples_vs_heldout = frechet_distance(sample_features, heldout_features)
    floor = frechet_distance(train_features, heldout_features)
    return {
        "metric": "Fréchet distance in the dataset classifier's penultimate features (not FID)",
        "samples_vs_heldout": samples_vs_heldout,
        "train_vs_heldout_floor": floor,
        "ratio": samples_vs_heldout / floor if floor > 0 else float("inf"),
        "num_samples": count, "num_train": count, "num_heldout": len(heldout_images),
        "sampling": {"truncation_psi": 1.0, "noise_mode": "const", "seed": seed},
        "class_fractions": {"samples": class_fractions(classifier, sample_features),
                            "heldout": class_fractions(classifier, heldout_features)},
    }
