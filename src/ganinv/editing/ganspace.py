"""GANSpace: principal components of the intermediate latent space (Härkönen, Hertzmann, Lehtinen &
Paris, "GANSpace: Discovering Interpretable GAN Controls", NeurIPS 2020).

Sample many w = mapping(z) from the prior, run PCA, and edit along the top principal axes. The paper
applies an axis to a subset of the ws indices ("E(v_i, 0-2)") to separate, e.g., pose from colour;
`layers` sets that range here.
"""
from __future__ import annotations

import torch

from ..utils import parse_layers
from .direction import Direction, model_identity, prior_std, sample_prior_ws


def pca_of_w(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(variances [D] descending, components [D, D] as rows) of samples w [N, D].

    Signs are fixed so each component's largest-magnitude entry is positive (PCA signs are arbitrary)."""
    w = w.to(torch.float64)
    centered = w - w.mean(dim=0, keepdim=True)
    _, singular, vh = torch.linalg.svd(centered, full_matrices=False)
    variances = singular.square() / max(w.shape[0] - 1, 1)
    peak = vh.abs().argmax(dim=1)
    signs = torch.sign(vh.gather(1, peak.unsqueeze(1)))
    signs[signs == 0] = 1
    return variances, vh * signs


def find_ganspace_directions(model, *, layers: str | list[int] = "all", num: int = 10,
                             num_samples: int = 20_000, seed: int = 0, num_std_samples: int = 10_000,
                             name: str | None = None) -> Direction:
    """Top `num` principal components of W from `num_samples` prior samples (seeded), applied to the
    ws indices `layers`. scores = variance of w along each component."""
    G = getattr(model, "G", model)
    layer_list = parse_layers(layers, G.num_ws)
    if num < 1:
        raise ValueError("num must be at least 1")
    if num_samples <= G.w_dim:
        raise ValueError(f"num_samples must exceed w_dim ({G.w_dim}) for a meaningful PCA")
    num = min(int(num), G.w_dim)
    w = sample_prior_ws(G, num_samples, seed=seed)[:, 0].cpu()
    variances, components = pca_of_w(w)
    vectors = components[:num].float()
    # A separate seed for the strength unit, so it is not measured on the samples that defined the axes.
    std = prior_std(G, "w", vectors, layer_list, num_samples=num_std_samples, seed=seed + 1)
    layer_text = layers if isinstance(layers, str) else ",".join(str(i) for i in layer_list)
    total = float(variances.sum())
    return Direction(
        name=name or (f"ganspace_{layer_text}" if layer_text != "all" else "ganspace"), method="ganspace",
        space="w", vectors=vectors, layers=layer_list, std=std, num_ws=G.num_ws, w_dim=G.w_dim,
        scores=[float(v) for v in variances[:num]], score_name="variance",
        labels=[f"ganspace PC{i}" for i in range(num)],
        settings={"layers": layer_text, "num": num, "num_samples": num_samples, "seed": seed,
                  "num_std_samples": num_std_samples,
                  "explained_variance_ratio": [float(v) / total for v in variances[:num]]},
        model=model_identity(model))
