"""How much inverted latents overlap the GAN's own latent distribution in W.

In-Domain GAN Inversion (Zhu et al., ECCV 2020) and e4e (Tov et al., SIGGRAPH 2021) argue that codes
which stay where the mapping network puts its w are better to edit. Three measures of that here, each
on w vectors [N, w_dim] (`latent_vectors` turns [N, num_ws, w_dim] codes into those):

- `frechet_distance`: the Fréchet distance between Gaussians fitted to two sets of w (the FID formula,
  Heusel et al., NeurIPS 2017, applied in W instead of an Inception feature space);
- `two_sample_accuracy`: a classifier two-sample test (Lopez-Paz & Oquab, "Revisiting Classifier
  Two-Sample Tests", ICLR 2017): a logistic regression tells the two sets apart, scored by k-fold
  held-out accuracy on balanced sets; 0.5 means indistinguishable, 1.0 fully separated;
- `fit_pca` / `project`: a 2-D principal-component projection fitted on prior w, for pictures of where
  inverted codes sit relative to the prior.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import GanInvError


def latent_vectors(ws: torch.Tensor | np.ndarray, reduce: str = "mean") -> np.ndarray:
    """w vectors [N, w_dim] (float64) from codes [N, w_dim] or [N, num_ws, w_dim].

    `reduce` picks how a w+ code becomes one vector: "mean" (the mean over layers) or "first" (layer 0).
    """
    array = ws.detach().cpu().double().numpy() if isinstance(ws, torch.Tensor) else np.asarray(ws, np.float64)
    if array.ndim == 2:
        return array
    if array.ndim != 3:
        raise GanInvError(f"latent codes must be [N, w_dim] or [N, num_ws, w_dim], got shape {tuple(array.shape)}")
    if reduce == "mean":
        return array.mean(axis=1)
    if reduce == "first":
        return array[:, 0]
    raise GanInvError(f"unknown reduction {reduce!r}; use 'mean' or 'first'")


def _check_pair(a: np.ndarray, b: np.ndarray, minimum: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise GanInvError(f"need two sets of vectors [N, D] of the same D, got {a.shape} and {b.shape}")
    if len(a) < minimum or len(b) < minimum:
        raise GanInvError(f"need at least {minimum} vectors in each set, got {len(a)} and {len(b)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise GanInvError("latent vectors contain NaN or inf")
    return a, b


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) for Gaussians fitted to `a` and `b` [N, D].

    The trace of the matrix square root is computed as that of (S_a^(1/2) S_b S_a^(1/2))^(1/2), which is
    symmetric, so singular covariances (fewer vectors than dimensions) are handled. Small sets bias the
    value upward; compare sets of equal size (e.g. against a prior sample of the same count).
    """
    a, b = _check_pair(a, b, 2)
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrtm_psd(cov_a)
    cross = np.trace(_sqrtm_psd(root_a @ cov_b @ root_a))
    value = float(np.square(mean_a - mean_b).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)
    return max(value, 0.0)


def _logistic_regression(x: torch.Tensor, y: torch.Tensor, weight_decay: float, steps: int) -> torch.nn.Linear:
    model = torch.nn.Linear(x.shape[1], 1, dtype=x.dtype)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
        loss = loss + weight_decay * model.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return model


def two_sample_accuracy(a: np.ndarray, b: np.ndarray, *, folds: int = 5, weight_decay: float = 1e-2,
                        steps: int = 100, seed: int = 0) -> float:
    """Held-out accuracy of a logistic regression telling `a` from `b` ([N, D] each).

    The larger set is subsampled to the smaller one's size (so chance is 0.5), the vectors are
    standardized with the training fold's statistics, and the accuracy is averaged over `folds`
    stratified folds. 0.5: indistinguishable; 1.0: linearly separable.
    """
    a, b = _check_pair(a, b, folds)
    rng = np.random.default_rng(seed)
    count = min(len(a), len(b))
    a = a[rng.permutation(len(a))[:count]]
    b = b[rng.permutation(len(b))[:count]]
    fold_of = np.arange(count) % folds
    fold_a, fold_b = rng.permutation(fold_of), rng.permutation(fold_of)
    correct = 0
    with torch.enable_grad():
        for fold in range(folds):
            train = np.concatenate([a[fold_a != fold], b[fold_b != fold]])
            test = np.concatenate([a[fold_a == fold], b[fold_b == fold]])
            train_y = np.concatenate([np.zeros((fold_a != fold).sum()), np.ones((fold_b != fold).sum())])
            test_y = np.concatenate([np.zeros((fold_a == fold).sum()), np.ones((fold_b == fold).sum())])
            mean, std = train.mean(0), train.std(0) + 1e-8
            model = _logistic_regression(torch.from_numpy((train - mean) / std), torch.from_numpy(train_y),
                                         weight_decay, steps)
            with torch.no_grad():
                predicted = (model(torch.from_numpy((test - mean) / std)).squeeze(1) > 0).double().numpy()
            correct += int((predicted == test_y).sum())
    return correct / (2 * count)


def fit_pca(reference: np.ndarray, components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], basis [components, D]) of the principal components of `reference` [N, D]."""
    reference = np.asarray(reference, np.float64)
    if reference.ndim != 2 or len(reference) < components + 1:
        raise GanInvError(f"PCA needs [N, D] vectors with N > {components}, got shape {reference.shape}")
    mean = reference.mean(0)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    return mean, vt[:components]


def project(vectors: np.ndarray, pca: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Coordinates [N, components] of `vectors` [N, D] in a `fit_pca` basis."""
    mean, basis = pca
    return (np.asarray(vectors, np.float64) - mean) @ basis.T


def latent_overlap(inverted: np.ndarray, prior: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """Both overlap numbers of inverted w [N, D] against prior w [M, D]: `frechet_distance` against
    the whole prior set, and `two_sample_accuracy` (balanced, so on N prior vectors)."""
    return {"frechet_distance": frechet_distance(inverted, prior),
            "two_sample_accuracy": two_sample_accuracy(inverted, prior, seed=seed),
            "count": int(len(inverted))}


__all__ = ["fit_pca", "frechet_distance", "latent_overlap", "latent_vectors", "project", "two_sample_accuracy"]
