"""The one storage format of everything ganinv saves: safetensors tensors + a versioned JSON card.

A saved network (generator, encoder, classifier) is a folder holding `model.safetensors` and
`card.json`; a direction is `NAME.safetensors` + `NAME.json`. The card always carries `format` (what
the file is), `format_version` (readers refuse a newer one) and `sha256` (of the tensor file, checked
on load when present). Every file is written atomically (`ganinv.utils.atomic_path`): a crash leaves
the previous file intact.

Reading goes through one safetensors loader (`load_tensors`) and one state-dict check
(`check_state_dict`: the set of keys and every shape must match exactly). Every problem is one line
that names the file: a missing file raises `MissingFileError` (a `FileNotFoundError`), anything else
`CheckpointError` or the error class the caller passes.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from ..errors import GanInvError
from ..utils import atomic_path, write_json

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"


class CheckpointError(GanInvError):
    """A checkpoint or saved file could not be read: names the file and the problem."""


class MissingFileError(CheckpointError, FileNotFoundError):
    """A file that a saved model or artifact needs is not there."""


# ---------------------------------------------------------------------------------------------
# Writing


def tensors_to_bytes(tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors serialization of `tensors` (moved to the CPU, made contiguous)."""
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> str:
    """Write a safetensors file atomically; returns the sha256 of its bytes."""
    blob = tensors_to_bytes(tensors, metadata)
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    return hashlib.sha256(blob).hexdigest()


def write_card(path: str | os.PathLike, card: dict) -> Path:
    """Write a JSON card atomically."""
    write_json(path, card)
    return Path(path)


def save_folder(directory: str | os.PathLike, tensors: Mapping[str, torch.Tensor], card: dict,
                card_format: str, card_version: int) -> Path:
    """Write `model.safetensors` and `card.json` (the card plus format, version and the weights' sha256)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sha256 = save_tensors(directory / WEIGHTS_FILE, tensors, metadata={"format": card_format})
    write_card(directory / CARD_FILE, {**card, "format": card_format, "format_version": card_version,
                                       "sha256": sha256})
    return directory


def save_module(directory: str | os.PathLike, module: nn.Module, card: dict, card_format: str,
                card_version: int) -> Path:
    """`save_folder` for a module's state dict."""
    return save_folder(directory, module.state_dict(), card, card_format, card_version)


# ---------------------------------------------------------------------------------------------
# Reading


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_card(path: str | os.PathLike, card_format: str, card_version: int, what: str,
              error: type[Exception] = CheckpointError) -> dict:
    """A ganinv JSON card with "format" == card_format and "format_version" <= card_version.

    Raises MissingFileError when the file is absent, `error` naming the file and the problem when it
    is not JSON, not this format, or newer than this ganinv."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MissingFileError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read the {what} ({e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != card_format:
        raise error(f"{path}: not a ganinv {what} (format field missing or not {card_format!r})")
    try:
        found = int(data.get("format_version", 0))
    except (TypeError, ValueError):
        raise error(f"{path}: format_version {data.get('format_version')!r} is not a number") from None
    if found > card_version:
        raise error(f"{path}: {what} format_version {found} is newer than this ganinv understands "
                    f"({card_version}); upgrade ganinv")
    return data


def load_tensors(path: str | os.PathLike, *, sha256: str | None = None, what: str = "weights file",
                 error: type[Exception] = CheckpointError) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (on the CPU).

    With `sha256` given, the file's bytes must hash to it (a changed or corrupt file is refused).
    Raises MissingFileError when absent, `error` naming the file for anything unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise MissingFileError(f"{path}: {what} not found") from None
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e})") from None
    if sha256 and hashlib.sha256(blob).hexdigest() != sha256:
        raise error(f"{path}: sha256 does not match the card (file changed or corrupt)")
    try:
        return load(blob)
    except (SafetensorError, ValueError, RuntimeError, OSError) as e:
        raise error(f"{path}: cannot read safetensors ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                    ) from None


def check_state_dict(tensors: Mapping[str, torch.Tensor],
                     expected: Mapping[str, torch.Tensor | Sequence[int] | None],
                     path: str | os.PathLike, what: str = "network",
                     error: type[Exception] = CheckpointError) -> None:
    """Raise `error` unless `tensors` has exactly the keys of `expected`, each with the same shape.

    `expected` maps each key to a tensor or a shape (None: any shape; the caller checks it). The
    message names the file and the first mismatching key (in sorted order)."""
    for key in sorted(set(expected) | set(tensors)):
        if key not in tensors:
            problem = f"missing tensor {key}"
        elif key not in expected:
            problem = f"unexpected tensor {key}"
        else:
            want = expected[key]
            if want is None:
                continue
            want_shape = tuple(want.shape if isinstance(want, torch.Tensor) else want)
            if tuple(tensors[key].shape) == want_shape:
                continue
            problem = f"shape mismatch at {key}: {tuple(tensors[key].shape)} in the file, {want_shape} expected"
        raise error(f"{path}: tensors do not match the {what} ({problem})")


def load_state(module: nn.Module, tensors: Mapping[str, torch.Tensor], path: str | os.PathLike,
               what: str = "network", error: type[Exception] = CheckpointError,
               dtype: torch.dtype | None = None) -> nn.Module:
    """Check `tensors` against the module's state dict, then load them (strictly).

    Floating-point tensors are cast to `dtype` when given (e.g. float16 storage into a float32 net)."""
    check_state_dict(tensors, module.state_dict(), path, what, error)
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    module.load_state_dict(dict(tensors), strict=True)
    return module


def load_folder(directory: str | os.PathLike, card_format: str, card_version: int, what: str,
                error: type[Exception] = CheckpointError, verify_hash: bool = True
                ) -> tuple[dict, dict[str, torch.Tensor]]:
    """(card, tensors) of a folder written by `save_folder`; the weights are checked against the card's sha256."""
    directory = Path(directory)
    card = read_card(directory / CARD_FILE, card_format, card_version, f"{what} card", error)
    tensors = load_tensors(directory / WEIGHTS_FILE, sha256=card.get("sha256") if verify_hash else None,
                           what=f"{what} weights file", error=error)
    return card, tensors


def load_module(directory: str | os.PathLike, card_format: str, card_version: int, what: str,
                build: Callable[[dict], nn.Module], error: type[Exception] = CheckpointError
                ) -> tuple[nn.Module, dict]:
    """(module built by `build(card)` with the folder's weights loaded, card)."""
    directory = Path(directory)
    card, tensors = load_folder(directory, card_format, card_version, what, error)
    try:
        module = build(card)
    except (KeyError, TypeError, ValueError) as e:
        raise error(f"{directory / CARD_FILE}: invalid init_kwargs ({e})") from None
    load_state(module, tensors, directory / WEIGHTS_FILE, f"{what} described by its card", error)
    return module, card


__all__ = ["CARD_FILE", "WEIGHTS_FILE", "CheckpointError", "MissingFileError", "check_state_dict", "load_folder",
           "load_module", "load_state", "load_tensors", "read_card", "save_folder", "save_module", "save_tensors",
           "sha256_file", "tensors_to_bytes", "write_card"]
