"""SeFa: closed-form factorization of latent semantics (Shen & Zhou, "Closed-Form Factorization of
Latent Semantics in GANs", CVPR 2021).

The first thing a StyleGAN layer does with its ws entry is an affine map, the style: ``s = A w + b``.
Moving w by ``n`` changes the style by ``A n`` whatever the image, so the directions that change the
styles most are the unit vectors maximizing ``|A n|^2``: the top eigenvectors of ``A^T A``.

Official definition: for the selected ws indices take the affine weight of the
layer that reads each index (the conv layers; the final toRGB for the last index), stack the output
rows, scale each row to unit length, eigen-decompose ``A^T A`` with ``eigh``, sort by decreasing
eigenvalue, and make each eigenvector's largest-magnitude entry positive. ``normalize=False`` skips the
row scaling, the variant of rosinality's ``closed_form_factorization.py``.
"""
from __future__ import annotations

import collections

import torch

from ..utils import parse_layers
from .direction import Direction, model_identity, prior_std


def sefa_layers(G, layers) -> list[tuple[str, torch.nn.Module, int]]:
    """The (name, layer, ws index) whose affine weights SeFa uses for these ws indices: the conv layer
    reading each index, and the final toRGB for the last index."""
    indices = set(parse_layers(layers, G.num_ws))
    last = G.num_ws - 1
    style_layers = G.synthesis.style_layers()
    readers = collections.Counter(index for _, _, index in style_layers)
    chosen = []
    for name, layer, index in style_layers:
        if index not in indices:
            continue
        is_torgb = name.endswith("torgb")
        # An index read by one layer only (every StyleGAN3 layer) takes that layer.
        if readers[index] == 1 or (not is_torgb and index != last) or (is_torgb and index == last):
            chosen.append((name, layer, index))
    return chosen


def sefa_weight_matrix(G, layers="all", normalize: bool = True) -> torch.Tensor:
    """The stacked affine weights A [rows, w_dim] (float64), rows scaled to unit length if `normalize`.

    The stored weight is used: the layer's runtime gain is one scalar, which scales A^T A and leaves
    its eigenvectors unchanged."""
    chosen = sefa_layers(G, layers)
    if not chosen:
        raise ValueError(f"no modulated layer reads the ws indices {layers!r}")
    A = torch.cat([layer.affine.weight.detach().to(torch.float64).cpu() for _, layer, _ in chosen])
    if normalize:
        A = A / A.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return A


def sefa_eigen(G, layers="all", normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues [w_dim] descending, eigenvectors [w_dim, w_dim] as rows), signs fixed so each
    vector's largest-magnitude entry is positive."""
    A = sefa_weight_matrix(G, layers, normalize)
    values, vectors = torch.linalg.eigh(A.t() @ A)  # ascending, vectors as columns
    order = torch.argsort(values, descending=True)
    values = values[order]
    vectors = vectors[:, order].t().contiguous()
    peak = vectors.abs().argmax(dim=1)
    signs = torch.sign(vectors.gather(1, peak.unsqueeze(1)))
    signs[signs == 0] = 1
    return values, vectors * signs


def find_sefa_directions(model, *, layers: str | list[int] = "all", num: int = 10, normalize: bool = True,
                         num_std_samples: int = 10_000, seed: int = 0, name: str | None = None) -> Direction:
    """Top `num` SeFa directions for the ws indices `layers` ('all', '0-1', '2-5', '6-', ...).

    Returns a 'w' Direction applied to exactly those ws indices, scores = eigenvalues, strength units =
    prior std along each direction (from `num_std_samples` prior samples drawn with `seed`)."""
    G = getattr(model, "G", model)
    layer_list = parse_layers(layers, G.num_ws)
    if num < 1:
        raise ValueError("num must be at least 1")
    num = min(int(num), G.w_dim)
    values, vectors = sefa_eigen(G, layer_list, normalize)
    vectors = vectors[:num].float()
    std = prior_std(G, "w", vectors, layer_list, num_samples=num_std_samples, seed=seed)
    layer_text = layers if isinstance(layers, str) else _range_text(layer_list)
    variant = "official" if normalize else "rosinality (rows not normalized)"
    return Direction(
        name=name or f"sefa_{layer_text}", method="sefa", space="w", vectors=vectors, layers=layer_list,
        std=std, num_ws=G.num_ws, w_dim=G.w_dim, scores=[float(v) for v in values[:num]],
        score_name="eigenvalue", labels=[f"sefa {layer_text} #{i}" for i in range(num)],
        settings={"layers": layer_text, "num": num, "normalize": bool(normalize), "variant": variant,
                  "num_std_samples": num_std_samples, "seed": seed,
                  "weight_layers": [n for n, _, _ in sefa_layers(G, layer_list)]},
        model=model_identity(model))


def _range_text(indices: list[int]) -> str:
    if indices == list(range(indices[0], indices[-1] + 1)):
        return f"{indices[0]}-{indices[-1]}" if len(indices) > 1 else str(indices[0])
    return ",".join(str(i) for i in indices)
