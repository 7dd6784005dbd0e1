"""The reconstruction objective shared by optimize, PTI and hybrid: method settings -> loss module."""
from __future__ import annotations

from ..losses import ReconstructionLoss, build_reconstruction_loss

# method setting -> loss term name in ganinv.losses
WEIGHT_SETTINGS = {"mse_weight": "mse", "laplacian_weight": "laplacian", "lpips_weight": "lpips",
                   "dfeat_weight": "discriminator_features"}


def build_objective(settings: dict, D=None, lpips_dir=None) -> ReconstructionLoss:
    weights = {term: float(settings.get(key, 0.0)) for key, term in WEIGHT_SETTINGS.items()}
    return build_reconstruction_loss(weights, D=D, lpips_dir=lpips_dir)
