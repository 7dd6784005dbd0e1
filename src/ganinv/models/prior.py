"""Seeded samples of a generator's prior and the statistics of W taken from them.

Seeds follow NVIDIA's gen_images (stylegan2-ada-pytorch / stylegan3): the n prior z of `seed` are
`np.random.RandomState(seed).randn(n, z_dim)`, so for n = 1 a seed gives the same z, and on the same
weights the same image, as the official tools. Every prior sample in ganinv comes from `sample_prior`.

Labels of a conditional generator follow one convention: `c=None` cycles the classes in order
(sample i gets class i % c_dim), which keeps the classes balanced and draws nothing from the random
stream, so z does not depend on c_dim; an int gives every sample that class; a tensor [c_dim] or
[n, c_dim] is used as given.
"""
from __future__ import annotations

import torch
from torch import nn

from ..utils import z_from_seed


def prior_labels(G: nn.Module, n: int, c: int | torch.Tensor | None = None) -> torch.Tensor | None:
    """Labels [n, c_dim] for a conditional G by the module's convention; None for an unconditional one."""
    c_dim = int(G.c_dim)
    if c_dim == 0:
        if c is not None:
            raise ValueError("this generator is unconditional; it takes no class label c")
        return None
    if c is None:
        return nn.functional.one_hot(torch.arange(n) % c_dim, c_dim).float()
    if isinstance(c, int):
        if not 0 <= c < c_dim:
            raise ValueError(f"class {c} out of range 0-{c_dim - 1}")
        return nn.functional.one_hot(torch.full([n], c), c_dim).float()
    c = torch.as_tensor(c).float().cpu()
    if c.ndim == 1:
        c = c.unsqueeze(0)
    if c.ndim != 2 or c.shape[1] != c_dim or c.shape[0] not in (1, n):
        raise ValueError(f"c must have shape [{c_dim}] or [{n}, {c_dim}], got {tuple(c.shape)}")
    return c.expand(n, -1)


@torch.no_grad()
def sample_prior(G: nn.Module, n: int, seed: int = 0, c: int | torch.Tensor | None = None,
                 truncation_psi: float = 1.0, truncation_cutoff: int | None = None, *,
                 batch_size: int = 4096) -> torch.Tensor:
    """ws [n, num_ws, w_dim] (on G's device) of the n prior z of `seed`, mapped without touching w_avg.

    Args:
        G: a generator (or anything with `mapping`, `z_dim`, `c_dim`).
        n: number of samples (>= 1).
        seed: z = np.random.RandomState(seed).randn(n, z_dim) (NVIDIA gen_images for n = 1).
        c: class labels for a conditional G (module docstring); must be None for an unconditional one.
        truncation_psi, truncation_cutoff: as in G.mapping.
        batch_size: how many z are mapped at once.
    The z themselves are `ganinv.utils.z_from_seed(seed, G.z_dim, n)`.
    """
    if n < 1:
        raise ValueError(f"the number of prior samples must be at least 1, got {n}")
    device = next(G.parameters()).device
    z = z_from_seed(seed, G.z_dim, n)
    labels = prior_labels(G, n, c)
    out = []
    for start in range(0, n, batch_size):
        z_chunk = z[start:start + batch_size].to(device)
        c_chunk = None if labels is None else labels[start:start + batch_size].to(device)
        out.append(G.mapping(z_chunk, c_chunk, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                             update_w_avg=False))
    return torch.cat(out)


def w_stats(G: nn.Module, num_samples: int = 10_000, seed: int = 123) -> tuple[torch.Tensor, float]:
    """(mean w [w_dim], scalar std of w around it) over `num_samples` prior samples, as NVIDIA's projector."""
    w = sample_prior(G, num_samples, seed=seed)[:, 0]
    mean = w.mean(dim=0)
    std = float(((w - mean).square().sum() / num_samples) ** 0.5)
    return mean, std


@torch.no_grad()
def compute_w_avg(G: nn.Module, num_samples: int = 10_000, seed: int = 0) -> torch.Tensor:
    """Mean mapping of `num_samples` prior z from `seed` (for checkpoint files that store no w_avg)."""
    return sample_prior(G, num_samples, seed=seed)[:, 0].mean(dim=0)


__all__ = ["compute_w_avg", "prior_labels", "sample_prior", "w_stats"]
