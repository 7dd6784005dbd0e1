"""Embedded models by name, and `load_model` / `load_generator` / `load_discriminator`.

An embedded model is a native model folder under `ganinv/assets/<name>/` (model.safetensors +
card.json), optionally with extra parts the toolkit uses: `encoder/`, `classifier/`, `embedding/` (the
shape embedding of the quality metrics), `real_images.npz`
(training images for Clone's global loss), `heldout.npz` (images the GAN never saw), `directions/`.
The registry is an explicit table, not a directory scan, so a model is listed only once it ships.

A model folder given by path may come from anyone: every part is read through the checks of
`checkpoints` and `storage` (sizes, sha256, finite weights, files inside the folder), and a card without
the sha256 of its weights is loaded only when the caller trusts it (`trust_card=True`, or
`set_default_trust_card(True)`, which the CLI's `--trust-card` calls).
"""
from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import GanInvError
from . import storage
from .checkpoints import CheckpointError, load_checkpoint, read_card
from . import official_encoders
from .classifier import load_classifier
from .embedding import load_embedding
from .encoder import load_encoder
from .stylegan2 import Discriminator, Generator
from .stylegan3 import Generator as StyleGAN3Generator

ASSETS = Path(__file__).resolve().parent.parent / "assets"
MAX_IMAGES_BYTES = 2 ** 31  # one image array of a model folder (real_images.npz, heldout.npz)

# Whether a native card without the sha256 of its weights is loaded when the caller does not say
# (`trust_card=None`); False unless set (the CLI sets it from --trust-card on every command).
_trust_card_default = False


def set_default_trust_card(trust: bool) -> None:
    """Load native cards that lack a sha256 (True) or refuse them (False) wherever `trust_card` is not given."""
    global _trust_card_default
    _trust_card_default = bool(trust)


def default_trust_card() -> bool:
    """What `set_default_trust_card` chose (False unless set)."""
    return _trust_card_default


def _trust(trust_card: bool | None) -> bool:
    return _trust_card_default if trust_card is None else bool(trust_card)


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
    embedding: Any = None
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
        for part in (self.encoder, self.classifier, self.embedding):
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


def _check_npz_member(path: Path, name: str) -> None:
    """Read the .npy header of one member and refuse a shape whose data the member cannot hold (a
    header may claim 10^12 rows) before numpy allocates for it."""
    with zipfile.ZipFile(path) as archive:
        try:
            info = archive.getinfo(name + ".npy")
        except KeyError:
            raise CheckpointError(f"{path}: no array {name!r}") from None
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                               else np.lib.format.read_array_header_2_0(f))
    claimed = dtype.itemsize * math.prod(shape)
    if claimed > min(info.file_size, MAX_IMAGES_BYTES):
        raise CheckpointError(f"{path}: array {name!r} claims shape {shape} ({claimed} bytes), more than the file "
                              f"holds or {MAX_IMAGES_BYTES} bytes")


def _images_from_npz(path: Path) -> tuple[torch.Tensor, list | None]:
    """uint8 [N, H, W, C] (key 'images') -> float [-1, 1] NCHW; optional 'labels' JSON string."""
    try:
        _check_npz_member(path, "images")
        with np.load(path, allow_pickle=False) as data:
            images = data["images"]
            labels = None
            if "labels_json" in data:
                _check_npz_member(path, "labels_json")
                labels = storage.loads_json(str(data["labels_json"]), path, "labels_json entry")
    except GanInvError:
        raise
    except Exception as e:  # BadZipFile, a bad .npy header, an object array, MemoryError...
        raise CheckpointError(f"{path}: cannot read the image array ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or min(images.shape, default=0) < 1:
        raise CheckpointError(f"{path}: 'images' must be uint8 [N, H, W] or [N, H, W, C], got {images.dtype} "
                              f"{tuple(images.shape)}")
    if labels is not None and not isinstance(labels, list):
        raise CheckpointError(f"{path}: labels_json must hold a list")
    if images.ndim == 3:
        images = images[..., None]
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return tensor, labels


def load_model(name_or_path: str | os.PathLike | Model | Generator | None = None,
               device: str | torch.device = "cpu", *, trust_card: bool | None = None,
               max_parameters: int | None = None) -> Model:
    """Load a model bundle by embedded name or path (native folder, NVIDIA .pkl, rosinality .pt).

    `trust_card`: load a native card that lacks the sha256 of its weights (default: refuse, or what
    `set_default_trust_card` chose). `max_parameters`: the most parameters one network may have
    (default `storage.MAX_PARAMETERS`)."""
    if isinstance(name_or_path, Model):
        return name_or_path
    if isinstance(name_or_path, (Generator, StyleGAN3Generator)):
        return Model(G=name_or_path)
    path = resolve_path(name_or_path)
    ckpt = load_checkpoint(path, trust_card=_trust(trust_card), max_parameters=max_parameters)
    model = Model(G=ckpt.G, D=ckpt.D, card=ckpt.card, folder=path if path.is_dir() else None)
    if ckpt.card.get("source", {}).get("source_format") == official_encoders.CHECKPOINT_FORMAT:
        model.encoder = official_encoders.load_official_encoder(path)  # the checkpoint's own encoder
    if model.folder is not None:
        real = storage.file_in_folder(model.folder, "real_images.npz", "image file")
        if real.is_file():
            model.real_images, _ = _images_from_npz(real)
        held = storage.file_in_folder(model.folder, "heldout.npz", "image file")
        if held.is_file():
            model.heldout, model.heldout_labels = _images_from_npz(held)
        _attach_optional_parts(model)
    return model.to(resolve_device(device))


def _attach_optional_parts(model: Model) -> None:
    """Encoder, classifier, embedding and directions, when the folder has them (each inside the folder)."""
    folder = model.folder
    assert folder is not None
    classifier = storage.file_in_folder(folder, "classifier", "classifier folder")
    if classifier.is_dir():
        model.classifier = load_classifier(classifier)
    embedding = storage.file_in_folder(folder, "embedding", "embedding folder")
    if embedding.is_dir():
        model.embedding = load_embedding(embedding)
    encoder = storage.file_in_folder(folder, "encoder", "encoder folder")
    if encoder.is_dir():
        model.encoder = load_encoder(encoder)
    directions = storage.file_in_folder(folder, "directions", "directions folder")
    if directions.is_dir():
        model.directions = {p.stem: storage.file_in_folder(directions, p.name, "direction file")
                            for p in sorted(directions.glob("*.json"))}


def load_generator(name_or_path: str | os.PathLike | None = None, device: str = "cpu", *,
                   trust_card: bool | None = None, max_parameters: int | None = None) -> Generator:
    path = resolve_path(name_or_path)
    return load_checkpoint(path, trust_card=_trust(trust_card), max_parameters=max_parameters
                           ).G.to(resolve_device(device))


def load_discriminator(name_or_path: str | os.PathLike | None = None, device: str = "cpu", *,
                       trust_card: bool | None = None, max_parameters: int | None = None) -> Discriminator:
    path = resolve_path(name_or_path)
    D = load_checkpoint(path, trust_card=_trust(trust_card), max_parameters=max_parameters).D
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
