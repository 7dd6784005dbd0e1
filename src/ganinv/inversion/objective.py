"""The reconstruction objective shared by optimize, PTI and hybrid: method settings -> loss module."""
from __future__ import annotations

from ..losses import ReconstructionLoss, build_reconstruction_loss
from .base import Setting

# method setting -> loss term name in ganinv.losses
WEIGHT_SETTINGS = {"mse_weight": "mse", "laplacian_weight": "laplacian", "lpips_weight": "lpips",
                   "dfeat_weight": "discriminator_features"}

#: The objective's weights as method settings (the defaults of optimize, PTI and hybrid).
OBJECTIVE_SETTINGS = (
    Setting("mse_weight", 1.0, float, "weight of the pixel MSE", min=0.0),
    Setting("laplacian_weight", 1.0, float, "weight of the Laplacian-pyramid L1", min=0.0),
    Setting("lpips_weight", 0.0, float, "weight of LPIPS (VGG; needs genuine weights)", min=0.0),
    Setting("dfeat_weight", 0.0, float, "weight of the discriminator-feature distance", min=0.0),
)


def build_objective(settings: dict, D=None, lpips_dir=None) -> ReconstructionLoss:
    weights = {term: float(settings.get(key, 0.0)) for key, term in WEIGHT_SETTINGS.items()}
    return build_reconstruction_loss(weights, D=D, lpips_dir=lpips_dir)
