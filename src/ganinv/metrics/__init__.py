"""Image metrics for inversion (the protocol of docs/benchmarks.md): MSE, PSNR, SSIM, LPIPS and
feature (identity) similarity, per image, on images in [-1, 1].

Distribution-level sample quality (Fréchet distance, precision/recall in a feature space) is
`ganinv.metrics.quality`.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ._checks import check_image_pair
from .basic import mse, mse_from_psnr, psnr
from .identity import face_identity, feature_similarity
from .lpips import (LPIPS, WeightsUnavailable, find_lpips_weights, load_lpips, lpips_distance,
                    lpips_search_dirs, try_load_lpips)
from .ssim import ssim

# name -> per-image metric on (reconstruction, target) (explicit registry of the always-available ones).
METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": mse,
    "psnr": psnr,
    "ssim": ssim,
}


def compute_metrics(reconstruction: torch.Tensor, target: torch.Tensor, lpips: LPIPS | str | None = None,
                    feature_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    ) -> dict[str, list[float] | None]:
    """Per-image metrics of `reconstruction` against `target` (both [N, C, H, W] in [-1, 1]).

    The reconstruction is clamped to [-1, 1] first; the target is used as given. Returns
    `{"mse": [...], "psnr": [...], "ssim": [...]}` (SSIM None when H or W < 11), plus:
      - `lpips_<net>` when `lpips` is an `LPIPS` model, or a network name ("alex" / "vgg") which is
        loaded with `try_load_lpips`; the value is None when the weights are unavailable (print "n/a");
      - `identity` (cosine feature similarity) when `feature_fn` is given.
    """
    check_image_pair(reconstruction, target, "compute_metrics")
    reconstruction = reconstruction.detach().float().clamp(-1, 1)
    target = target.detach().float()
    results: dict[str, list[float] | None] = {
        "mse": mse(reconstruction, target).tolist(),
        "psnr": psnr(reconstruction, target).tolist(),
    }
    # SSIM needs the 11x11 window to fit; smaller images report it as unavailable.
    results["ssim"] = ssim(reconstruction, target).tolist() if min(target.shape[-2:]) >= 11 else None
    if lpips is not None:
        if isinstance(lpips, str):
            net, model = lpips, try_load_lpips(lpips)
        else:
            net, model = lpips.net, lpips
        distances = lpips_distance(reconstruction, target, model)
        results[f"lpips_{net}"] = None if distances is None else distances.tolist()
    if feature_fn is not None:
        results["identity"] = feature_similarity(reconstruction, target, feature_fn).tolist()
    return results


def format_metric(value: float | None, digits: int = 4) -> str:
    """A metric value for tables and logs: "n/a" for an unavailable one (None), "inf" for identical images."""
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


__all__ = ["METRICS", "LPIPS", "WeightsUnavailable", "compute_metrics", "feature_similarity",
           "face_identity", "find_lpips_weights", "format_metric", "load_lpips", "lpips_distance", "lpips_search_dirs",
           "mse", "mse_from_psnr", "psnr", "ssim", "try_load_lpips"]
