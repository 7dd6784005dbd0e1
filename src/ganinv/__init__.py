"""ganinv: invert real photos into StyleGAN2 latents and edit them.

Public API (see README for a tour):
    load_model, load_generator, load_discriminator  -- embedded models by name, or any checkpoint path
    invert, InversionResult, list_methods           -- optimize / pti / clone / encoder / hybrid
    directions, edit, Direction                     -- SeFa, GANSpace, InterFaceGAN, StyleSpace
"""
from __future__ import annotations

__version__ = "0.1.0"

from .models.checkpoints import CheckpointError, UnsafeCheckpoint, save_native  # noqa: E402
from .models.registry import (Model, available_models, load_discriminator, load_generator,  # noqa: E402
                              load_model)
from .models.stylegan2 import Discriminator, Generator  # noqa: E402


def __getattr__(name: str):
    # Inversion and editing pull in more modules; import them on first use.
    if name in ("invert", "InversionResult", "list_methods", "METHODS"):
        from . import invert as _invert
        return getattr(_invert, name)
    if name in ("edit", "Direction", "find_directions", "load_direction", "FINDERS"):
        from . import edit as _edit
        return getattr(_edit, name)
    if name == "metrics":
        from . import metrics
        return metrics
    raise AttributeError(f"module 'ganinv' has no attribute {name!r}")
