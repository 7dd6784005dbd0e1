"""Distribution-level sample quality: Fréchet distance and precision/recall in a feature space.

* Fréchet distance between Gaussians fitted to two feature sets (Dowson & Landau 1982), the construction
  of FID (Heusel, Ramsauer, Unterthiner, Nessler & Hochreiter, "GANs Trained by a Two Time-Scale Update
  Rule Converge to a Local Nash Equilibrium", NeurIPS 2017). With features other than Inception's the
  number is not an FID and is not comparable with published FIDs.
* Improved precision and recall (Kynkäänniemi, Karras, Laine, Lehtinen & Aila, "Improved Precision and
  Recall Metric for Assessing Generative Models", NeurIPS 2019): each set's manifold is the union of
  balls around its feature vectors whose radius is the distance to the k-th nearest neighbour within the
  set (k = 3 in the paper). Precision is the fraction of evaluated images inside the reference manifold
  (are they realistic?), recall the fraction of reference images inside the evaluated manifold (is the
  reference's variety covered?). Both lie in [0, 1].

Every number here is relative: it depends on the feature space and on the set sizes. Report it next to
the same number for real images the networks never saw (the floor a perfect generator would reach with
the same sizes), and compare only numbers computed with the same sizes. `measure_quality` does that.
The shipped feature spaces are the self-supervised shape embeddings of `ganinv.models.embedding`.

`degrade_images` makes controlled damaged copies of real images (blur, shuffled patches) that show
whether a feature space sees shape: a useful space puts them far above the floor.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_K = 3


@torch.no_grad()
def embed_images(network, images: torch.Tensor | np.ndarray, batch_size: int = 500) -> np.ndarray:
    """`network.features` [N, F] (float64) of images: float [-1, 1] NCHW, or uint8 NHWC / NHW."""
    was_training = network.training
    network.eval()
    device = next(network.parameters()).device
    feats = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        if isinstance(chunk, np.ndarray):
            chunk = _uint8_to_tensor(chunk)
        feats.append(network.features(chunk.to(device)).double().cpu().numpy())
    network.train(was_training)
    return np.concatenate(feats) if feats else np.zeros([0, 0])


def _uint8_to_tensor(images: np.ndarray) -> torch.Tensor:
    if images.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8 [N, H, W(, C)], got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def _check_features(a: np.ndarray, b: np.ndarray, minimum: int, what: str) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be [N, F] with the same F, got {a.shape} and {b.shape}")
    if len(a) < minimum or len(b) < minimum:
        raise ValueError(f"{what} needs at least {minimum} samples per set, got {len(a)} and {len(b)}")


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussians fitted to two feature sets [N, F]."""
    features_a = np.asarray(features_a, dtype=np.float64)
    features_b = np.asarray(features_b, dtype=np.float64)
    _check_features(features_a, features_b, 2, "a Fréchet distance")
    mu_a, mu_b = features_a.mean(axis=0), features_b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(features_a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(features_b, rowvar=False))
    # tr((S_a S_b)^(1/2)) = sum of square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2), which is
    # symmetric positive semi-definite, so eigh is stable where a general matrix square root is not.
    values, vectors = np.linalg.eigh(cov_a)
    sqrt_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu_a - mu_b
    return float(max(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt, 0.0))


def _pairwise_distances(a: torch.Tensor, b: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    return torch.cat([torch.cdist(a[s:s + chunk], b) for s in range(0, len(a), chunk)])


def knn_radii(features: np.ndarray, k: int = DEFAULT_K) -> np.ndarray:
    """Distance of each feature vector to its k-th nearest neighbour in the same set (itself excluded)."""
    x = torch.from_numpy(np.asarray(features, dtype=np.float64))
    if x.ndim != 2 or len(x) <= k:
        raise ValueError(f"k-NN radii need [N, F] features with N > k = {k}, got {tuple(x.shape)}")
    distances = _pairwise_distances(x, x)
    # Position 0 of the sorted row is the point itself (distance 0); position k is its k-th neighbour.
    return distances.topk(k + 1, dim=1, largest=False).values[:, k].numpy()


def manifold_coverage(reference: np.ndarray, radii: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """For each query, whether it lies within the k-NN ball of at least one reference point (bool [Q])."""
    ref = torch.from_numpy(np.asarray(reference, dtype=np.float64))
    q = torch.from_numpy(np.asarray(queries, dtype=np.float64))
    r = torch.from_numpy(np.asarray(radii, dtype=np.float64))
    inside = []
    for start in range(0, len(q), 1024):
        inside.append((torch.cdist(q[start:start + 1024], ref) <= r[None, :]).any(dim=1))
    return torch.cat(inside).numpy()


def precision_recall(reference_features: np.ndarray, evaluated_features: np.ndarray,
                     k: int = DEFAULT_K, groups: Mapping[str, np.ndarray] | None = None) -> dict:
    """Kynkäänniemi et al. (2019) precision and recall of an evaluated set against a reference set.

    precision = fraction of evaluated points inside the reference manifold (k-NN balls of the reference);
    recall = fraction of reference points inside the evaluated manifold (k-NN balls of the evaluated set).
    `groups` (name -> bool mask over the reference points) adds "recall_by_group": the recall counted over
    each group's reference points only (which kinds of reference image the evaluated set covers).
    """
    reference = np.asarray(reference_features, dtype=np.float64)
    evaluated = np.asarray(evaluated_features, dtype=np.float64)
    _check_features(reference, evaluated, k + 1, "precision/recall")
    masks = _group_masks(groups, len(reference))
    precision = manifold_coverage(reference, knn_radii(reference, k), evaluated).mean()
    covered = manifold_coverage(evaluated, knn_radii(evaluated, k), reference)
    result = {"precision": float(precision), "recall": float(covered.mean())}
    if masks is not None:
        result["recall_by_group"] = {name: float(covered[mask].mean()) for name, mask in masks.items()}
    return result


def _group_masks(groups: Mapping[str, np.ndarray] | None, count: int) -> dict[str, np.ndarray] | None:
    if groups is None:
        return None
    masks = {}
    for name, mask in groups.items():
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.shape != (count,):
            raise ValueError(f"group {name!r}: expected a bool mask over the {count} reference points, "
                             f"got {mask.dtype} {mask.shape}")
        if not mask.any():
            raise ValueError(f"group {name!r} holds no reference point")
        masks[name] = mask
    return masks


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (reflect padding, radius ceil(3 sigma)) of float NCHW images."""
    if sigma <= 0:
        return images.clone()
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).to(images)
    c = images.shape[1]
    x = F.pad(images, [radius, radius, 0, 0], mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = F.pad(x, [0, 0, radius, radius], mode="reflect")
    return F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def shuffle_patches(images: torch.Tensor, grid: int, seed: int = 0) -> torch.Tensor:
    """Cut each image into grid x grid patches and put them back in a random order (per image, seeded):
    every colour and local texture stays, the arrangement of parts is destroyed."""
    n, c, h, w = images.shape
    if h % grid or w % grid:
        raise ValueError(f"a {grid}x{grid} patch grid must divide the image size {h}x{w}")
    ph, pw = h // grid, w // grid
    patches = images.reshape(n, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, ph, pw)
    generator = torch.Generator().manual_seed(seed)
    order = torch.stack([torch.randperm(grid * grid, generator=generator) for _ in range(n)])
    patches = torch.gather(patches, 1, order.view(n, -1, 1, 1, 1).expand_as(patches))
    return patches.reshape(n, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


def degrade_images(images: torch.Tensor, kind: str, seed: int = 0) -> torch.Tensor:
    """A damaged copy of float [-1, 1] NCHW images. `kind`: "blur:SIGMA" (Gaussian blur of SIGMA pixels)
    or "shuffle:GRID" (patches of a GRID x GRID grid shuffled)."""
    name, _, value = kind.partition(":")
    try:
        if name == "blur":
            return gaussian_blur(images, float(value))
        if name == "shuffle":
            return shuffle_patches(images, int(value), seed=seed)
    except ValueError as e:
        raise ValueError(f"degradation {kind!r}: {e}") from None
    raise ValueError(f"unknown degradation {kind!r} (use blur:SIGMA or shuffle:GRID)")


def measure_quality(network, reference_images: torch.Tensor | np.ndarray,
                    floor_images: torch.Tensor | np.ndarray,
                    evaluated: Mapping[str, torch.Tensor | np.ndarray], k: int = DEFAULT_K,
                    reference_groups: Mapping[str, np.ndarray] | None = None) -> dict:
    """Fréchet distance and precision/recall in `network`'s feature space, each set against the reference.

    Args:
        network: anything with `.features(img) -> [N, F]` (a `ShapeEmbedding`).
        reference_images: the reference set (the training split).
        floor_images: real images the generator never saw (the held-out split); their numbers are the floor.
        evaluated: name -> image set (generator samples, degraded copies); each must have as many images
            as `floor_images`, since Fréchet distance and recall depend on the set size.
        k: the neighbourhood size of precision/recall.
        reference_groups: name -> bool mask over the reference images; every set (and the floor) then
            also gets "recall_by_group" (`precision_recall`).
    Returns:
        {"floor": {...}, "sets": {name: {...}}, "counts": {...}, "k": k}; each entry holds
        `frechet_distance`, `precision`, `recall` and, for the sets, `fd_ratio` (FD / floor FD).
    """
    reference = embed_images(network, reference_images)
    floor_features = embed_images(network, floor_images)
    floor = {"frechet_distance": frechet_distance(floor_features, reference),
             **precision_recall(reference, floor_features, k, reference_groups)}
    sets = {}
    for name, images in evaluated.items():
        if len(images) != len(floor_images):
            raise ValueError(f"set {name!r} has {len(images)} images; it must have as many as the floor set "
                             f"({len(floor_images)}) for its numbers to be comparable")
        features = embed_images(network, images)
        fd = frechet_distance(features, reference)
        sets[name] = {"frechet_distance": fd,
                      "fd_ratio": fd / floor["frechet_distance"] if floor["frechet_distance"] > 0 else float("inf"),
                      **precision_recall(reference, features, k, reference_groups)}
    return {"floor": floor, "sets": sets, "k": k,
            "counts": {"reference": len(reference), "evaluated": len(floor_features)}}


__all__ = ["DEFAULT_K", "degrade_images", "embed_images", "frechet_distance", "gaussian_blur", "knn_radii",
           "manifold_coverage", "measure_quality", "precision_recall", "shuffle_patches"]
