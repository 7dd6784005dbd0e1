"""Embedded models by name, and `load_model` / `load_generator` / `load_discriminator`.

An embedded model is a native model folder under `ganinv/assets/<name>/` (model.safetensors +
card.json), optionally with extra parts the toolkit uses: `encoder/`, `classifier/`, `real_images.npz`
(training images for Clone's global loss), `heldout.npz` (images the GAN never saw), `directions/`.
The registry is an explicit table, not a directory scan, so a model is listed only once it ships.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoints import CheckpointError, load_checkpoint, read_card
from .classifier import load_classifier
from .encoder import load_encoder
from .stylegan2 import Discriminator, Generator
from .stylegan3 import Generator as StyleGAN3Generator

ASSETS = Path(__file__).resolve().parent.parent / "assets"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    folder: str
    summary: str


# name -> entry. The first entry whose folder exists is the default model.
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "emoji64": EmbeddedModel("emoji64", "emoji64", "64x64 RGB, trained on Noto Color Emoji (train split)"),
    "fashion32": EmbeddedModel("fashion32", "fashion32", "32x32 grayscale, trained on Fashion-MNIST train"),
}


def available_models() -> list[str]:
    return [name for name, entry in EMBEDDED_MODELS.items() if (ASSETS / entry.folder / "card.json").is_file()]


def default_model_name() -> str:
    names = available_models()
    if not names:
        raise CheckpointError("no embedded model is installed (ganinv/assets is empty); pass --model PATH")
    # A card may mark itself as not ready to be the default (e.g. undertrained).
    for name in names:
        if read_card(ASSETS / EMBEDDED_MODELS[name].folder).get("default", True):
            return name
    return names[0]


@dataclass
class Model:
    """A generator and everything that travels with it; parts a model lacks are None."""

    G: Generator
    D: Discriminator | None = None
    card: dict = field(default_factory=dict)
    folder: Path | None = None
    encoder: Any = None
    classifier: Any = None
    real_images: torch.Tensor | None = None
    heldout: torch.Tensor | None = None
    heldout_labels: list | None = None
    directions: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.card.get("name", "model"))

    @property
    def sha256(self) -> str | None:
        return self.card.get("sha256") or (self.card.get("source") or {}).get("sha256")

    def to(self, device: str | torch.device) -> "Model":
        self.G.to(device)
        if self.D is not None:
            self.D.to(device)
        for part in (self.encoder, self.classifier):
            if isinstance(part, torch.nn.Module):
                part.to(device)
        return self


def resolve_path(name_or_path: str | os.PathLike | None) -> Path:
    if name_or_path is None:
        name_or_path = default_model_name()
    text = str(name_or_path)
    if text in EMBEDDED_MODELS:
        folder = ASSETS / EMBEDDED_MODELS[text].folder
        if not (folder / "card.json").is_file():
            raise CheckpointError(f"embedded model {text!r} is not installed in this build "
                                  f"(available: {available_models() or 'none'})")
        return folder
    path = Path(text).expanduser()
    if not path.exists():
        raise CheckpointError(f"{text}: no such model name or file (embedded models: "
                              f"{', '.join(EMBEDDED_MODELS)})")
    return path


def _images_from_npz(path: Path) -> tuple[torch.Tensor, list | None]:
    """uint8 [N, H, W, C] (key 'images') -> float [-1, 1] NCHW; optional 'labels' JSON string."""
    with np.load(path, allow_pickle=False) as data:
        images = data["images"]
        labels = None
        if "labels_json" in data:
            labels = json.loads(str(data["labels_json"]))
    if images.ndim == 3:
        images = images[..., None]
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return tensor, labels


def load_model(name_or_path: str | os.PathLike | Model | Generator | None = None,
               device: str | torch.device = "cpu") -> Model:
    """Load a model bundle by embedded name or path (native folder, NVIDIA .pkl, rosinality .pt)."""
    if isinstance(name_or_path, Model):
        return name_or_path
    if isinstance(name_or_path, (Generator, StyleGAN3Generator)):
        return Model(G=name_or_path)
    path = resolve_path(name_or_path)
    ckpt = load_checkpoint(path)
    model = Model(G=ckpt.G, D=ckpt.D, card=ckpt.card, folder=path if path.is_dir() else None)
    if model.folder is not None:
        real = model.folder / "real_images.npz"
        if real.is_file():
            model.real_images, _ = _images_from_npz(real)
        held = model.folder / "heldout.npz"
        if held.is_file():
            model.heldout, model.heldout_labels = _images_from_npz(held)
        _attach_optional_parts(model)
    return model.to(resolve_device(device))


def _attach_optional_parts(model: Model) -> None:
    """Encoder, classifier and directions, when the folder has them."""
    folder = model.folder
    assert folder is not None
    if (folder / "classifier").is_dir():
        model.classifier = load_classifier(folder / "classifier")
    if (folder / "encoder").is_dir():
        model.encoder = load_encoder(folder / "encoder")
    if (folder / "directions").is_dir():
        model.directions = {p.stem: p for p in sorted((folder / "directions").glob("*.json"))}


def load_generator(name_or_path: str | os.PathLike | None = None, device: str = "cpu") -> Generator:
    path = resolve_path(name_or_path)
    return load_checkpoint(path).G.to(resolve_device(device))


def load_discriminator(name_or_path: str | os.PathLike | None = None, device: str = "cpu") -> Discriminator:
    path = resolve_path(name_or_path)
    D = load_checkpoint(path).D
    if D is None:
        raise CheckpointError(f"{path}: this checkpoint has no discriminator")
    return D.to(resolve_device(device))


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    return device
