"""ganinv: invert real photos into StyleGAN2 latents and edit them.

Public API (see README for a tour):
    load_model, load_generator, load_discriminator  -- embedded models by name, or any checkpoint path
    invert, InversionResult, METHODS, list_methods  -- optimize / pti / clone / encoder / hybrid
    edit, find_directions, load_direction, Direction, FINDERS
                                                    -- SeFa, GANSpace, InterFaceGAN, StyleSpace
The subpackages are `ganinv.inversion` and `ganinv.editing`; `ganinv.invert` and `ganinv.edit` are
functions.
"""
from __future__ import annotations

from .version import __version__

import importlib
import pkgutil
import sys

from . import editing, inversion
from .editing import FINDERS, Direction, find_directions, load_direction
from .editing.render import edit
from .inversion import METHODS, InversionResult, invert, list_methods
from .errors import GanInvError
from .latent import Latent
from .models.checkpoints import CheckpointError, UnsafeCheckpoint, save_native
from .models.registry import Model, available_models, load_discriminator, load_generator, load_model
from .models.official_encoders import load_encoder
from .models.stylegan2 import Discriminator, Generator


def _keep_old_module_paths(old: str, package) -> None:
    """`from ganinv.invert.base import X` and `from ganinv.edit import Y` (the subpackages' names before
    they were renamed) keep working: the old dotted names are registered as the same module objects, so
    importing them never rebinds `ganinv.invert` / `ganinv.edit`, which are functions."""
    sys.modules[f"{__name__}.{old}"] = package
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        sys.modules[f"{__name__}.{old}.{info.name}"] = module


_keep_old_module_paths("invert", inversion)
_keep_old_module_paths("edit", editing)

__all__ = [
    "__version__", "load_model", "load_generator", "load_discriminator", "available_models", "Model",
    "Generator", "Discriminator", "load_encoder", "GanInvError", "CheckpointError", "UnsafeCheckpoint", "save_native",
    "invert", "InversionResult", "METHODS", "list_methods", "Latent",
    "edit", "find_directions", "load_direction", "Direction", "FINDERS",
    "inversion", "editing",
]
