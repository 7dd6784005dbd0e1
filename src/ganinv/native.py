"""Storage of a small network as a folder: `model.safetensors` + a versioned `card.json`.

Used by the encoder and the classifier (generators have their own card schema in
models/checkpoints.py). Both files are written atomically; reading validates the card's format and
version and that the tensors match the network the card describes.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

from torch import nn

from .utils import atomic_path, read_format_json

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"


def save_module_folder(directory: str | os.PathLike, module: nn.Module, card: dict, card_format: str,
                       card_version: int) -> Path:
    """Write the module's state dict and `card` (plus format, version, sha256 of the weights)."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    blob = save(tensors, metadata={"format": card_format})
    full = {**card, "format": card_format, "format_version": card_version,
            "sha256": hashlib.sha256(blob).hexdigest()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        tmp.write_bytes(blob)
    with atomic_path(directory / CARD_FILE) as tmp:
        tmp.write_text(json.dumps(full, indent=2) + "\n")
    return directory


def load_module_folder(directory: str | os.PathLike, card_format: str, card_version: int, what: str,
                       build: Callable[[dict], nn.Module]) -> tuple[nn.Module, dict]:
    """(module built by `build(card)` with the folder's weights loaded, card); clear errors naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    card_path = directory / CARD_FILE
    try:
        card = read_format_json(card_path, card_format, card_version, f"{what} card")
    except FileNotFoundError:
        raise FileNotFoundError(f"{directory}: no {what} card ({CARD_FILE})") from None
    try:
        module = build(card)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{card_path}: invalid init_kwargs ({e})") from None
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{directory}: {WEIGHTS_FILE} is missing")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise ValueError(f"{weights}: cannot read safetensors ({e})") from None
    expected = module.state_dict()
    if set(tensors) != set(expected) or any(tensors[k].shape != expected[k].shape for k in expected):
        raise ValueError(f"{weights}: tensors do not match the {what} described by its card")
    module.load_state_dict(tensors, strict=True)
    return module, card
