"""Identity / content preservation as cosine similarity of features.

In face-editing work (e.g. Richardson et al., pSp, 2021; Roich et al., PTI, 2022) identity is the
cosine similarity of a face-recognition network's embeddings of two images. `face_identity` uses dlib's
genuine ResNet face descriptor (`ganinv.faces.identity`, optional extra `faces`) and reports None ("n/a")
without it; `feature_similarity` takes any other backbone as `feature_fn`.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..faces.identity import identity_similarity
from ._checks import check_image_pair


def feature_similarity(a: torch.Tensor, b: torch.Tensor,
                       feature_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Cosine similarity per image [N] of `feature_fn(a)` and `feature_fn(b)` (features flattened).

    `feature_fn` maps images [N, C, H, W] in [-1, 1] to features [N, ...]. 1 means identical
    features; no gradients are computed.
    """
    check_image_pair(a, b, "feature_similarity")
    with torch.no_grad():
        features_a = feature_fn(a)
        features_b = feature_fn(b)
    if features_a.shape[0] != a.shape[0] or features_a.shape != features_b.shape:
        raise ValueError(f"feature_similarity: feature_fn must return [N, ...] with N = {a.shape[0]}, "
                         f"got {tuple(features_a.shape)} and {tuple(features_b.shape)}")
    return F.cosine_similarity(features_a.flatten(1).float(), features_b.flatten(1).float(), dim=1, eps=1e-8)


def face_identity(reconstruction: torch.Tensor, target: torch.Tensor) -> list[float] | None:
    """Per-image cosine similarity of dlib face descriptors of aligned face crops (both [N, C, H, W] in
    [-1, 1]); None when dlib or its genuine weights are missing (never computed with other weights)."""
    check_image_pair(reconstruction, target, "face_identity")
    return identity_similarity(reconstruction.detach().float().cpu(), target.detach().float().cpu())
