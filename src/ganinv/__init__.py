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


_LAZY = {
    # Inversion and editing pull in more modules; they are imported on first use.
    "invert": "invert", "InversionResult": "invert", "list_methods": "invert", "METHODS": "invert",
    "edit": "edit", "Direction": "edit", "find_directions": "edit", "load_direction": "edit", "FINDERS": "edit",
}


def __getattr__(name: str):
    import importlib
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        # `ganinv.invert` the function shadows the subpackage attribute once resolved.
        return getattr(module, name)
    if name in ("metrics", "losses", "data", "edit", "train", "bench"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'ganinv' has no attribute {name!r}")
