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

Saved files may come from strangers, so reading is defensive: JSON is parsed with a nesting limit and
refuses non-finite numbers, a safetensors header's length is checked against the file before it is
read, every floating-point tensor loaded into a network must be finite, a module described by a card
is first built without memory (PyTorch's meta device) to count its parameters against a cap, and a file
a folder refers to must lie inside that folder.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..errors import GanInvError
from ..utils import atomic_path, write_json

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"

# Limits on untrusted files (generous for anything real; they only stop absurd or hostile claims).
MAX_JSON_DEPTH = 64  # nesting of a card or any JSON file read through `loads_json`
MAX_SAFETENSORS_HEADER = 100 * 2 ** 20  # bytes (the safetensors library's own limit)
# Parameters of one network built from a card. StyleGAN2 config-f at 1024 px has 30.4M (G) and
# 29.0M (D), StyleGAN3-R at 1024 px 15.1M (G); callers can pass a different `max_parameters`.
MAX_PARAMETERS = 200_000_000
MAX_INIT_INT = 2 ** 16  # any integer in a generic module card's init_kwargs (widths, sizes, counts)


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


def _refuse_constant(name: str):
    raise ValueError(f"non-finite number {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON-like value (iteratively; stops counting past `limit`)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def loads_json(text: str | bytes, path: str | os.PathLike, what: str = "JSON file",
               error: type[Exception] = CheckpointError, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads for untrusted text: NaN, Infinity and numbers that overflow (1e400) are refused, and so
    is nesting deeper than `max_depth`; every problem is `error` naming `path`."""
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise error(f"{path}: the {what} is nested too deeply") from None
    except (ValueError, TypeError) as e:  # JSONDecodeError, UnicodeDecodeError and huge ints are ValueErrors
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise error(f"{path}: the {what} is not valid JSON ({first})") from None
    if json_depth(data, max_depth) > max_depth:
        raise error(f"{path}: the {what} is nested more than {max_depth} levels deep")
    return data


def file_in_folder(folder: str | os.PathLike, name: str | os.PathLike, what: str = "file",
                   error: type[Exception] = CheckpointError) -> Path:
    """`folder / name`, refused unless it stays inside `folder`: no absolute name, no `..`, and no
    symbolic link (of the file or a folder on the way) that leads outside `folder`."""
    folder = Path(folder)
    if not isinstance(name, (str, os.PathLike)) or not str(name):
        raise error(f"{folder}: the {what} name {name!r} is not a file name")
    relative = Path(name)
    if relative.is_absolute() or relative.drive or ".." in relative.parts:
        raise error(f"{folder}: the {what} {str(name)!r} points outside the folder; only names inside it "
                    "are allowed")
    path = folder / relative
    try:
        root = folder.resolve()
        resolved = path.resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop on older Pythons
        raise error(f"{path}: cannot resolve the {what} ({e})") from None
    if resolved != root and root not in resolved.parents:
        raise error(f"{path}: the {what} is a link to {resolved}, outside the folder {folder}")
    return path


def check_finite(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, what: str = "tensor",
                 error: type[Exception] = CheckpointError) -> None:
    """Raise `error` naming the file and the first key (sorted) whose floating-point values are not all finite."""
    for key in sorted(tensors):
        value = tensors[key]
        if not isinstance(value, torch.Tensor) or value.device.type == "meta":
            continue
        if not (value.is_floating_point() or value.is_complex()):
            continue
        if value.dtype in (torch.float64, torch.complex64, torch.complex128):
            finite = bool(torch.isfinite(value).all())
        else:
            # A float64 sum of float32/16 values cannot overflow: it is finite exactly when every value is.
            finite = bool(torch.isfinite(value.sum(dtype=torch.float64)))
        if not finite:
            raise error(f"{path}: {what} {key} contains NaN or infinite values")


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
    data = loads_json(text, path, what, error)
    if not isinstance(data, dict) or data.get("format") != card_format:
        raise error(f"{path}: not a ganinv {what} (format field missing or not {card_format!r})")
    version = data.get("format_version", 0)
    try:
        if isinstance(version, bool):
            raise TypeError("a boolean")
        found = int(version)
    except (TypeError, ValueError, OverflowError):
        raise error(f"{path}: format_version {str(version)[:40]!r} is not a number") from None
    if found > card_version:
        raise error(f"{path}: {what} format_version {found} is newer than this ganinv understands "
                    f"({card_version}); upgrade ganinv")
    return data


def load_tensors(path: str | os.PathLike, *, sha256: str | None = None, what: str = "weights file",
                 error: type[Exception] = CheckpointError) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (on the CPU).

    With `sha256` given, the file's bytes must hash to it (a changed or corrupt file is refused).
    Raises MissingFileError when absent, `error` naming the file for anything unreadable."""
    from safetensors.torch import load

    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise MissingFileError(f"{path}: {what} not found") from None
    except (OSError, MemoryError) as e:
        raise error(f"{path}: cannot read the {what} ({type(e).__name__}: {e})") from None
    if sha256 and hashlib.sha256(blob).hexdigest() != sha256:
        raise error(f"{path}: sha256 does not match the card (file changed or corrupt)")
    if len(blob) >= 8:
        # The first 8 bytes give the JSON header's length: check the claim before the header is parsed.
        (header_length,) = struct.unpack("<Q", blob[:8])
        if header_length > min(len(blob) - 8, MAX_SAFETENSORS_HEADER):
            raise error(f"{path}: cannot read safetensors (the header claims {header_length} bytes; the file has "
                        f"{len(blob)} and at most {MAX_SAFETENSORS_HEADER} are allowed)")
    try:
        return load(blob)
    except Exception as e:  # SafetensorError and anything else an untrusted file causes: one error
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

    Floating-point tensors are cast to `dtype` when given (e.g. float16 storage into a float32 net); every
    floating-point tensor must be finite (a NaN weight would render black images without an error)."""
    expected = module.state_dict()
    check_state_dict(tensors, expected, path, what, error)
    for key in sorted(tensors):
        if expected[key].is_floating_point() and not tensors[key].is_floating_point():
            raise error(f"{path}: tensor {key} has dtype {str(tensors[key].dtype).replace('torch.', '')}; the {what} "
                        "needs floating-point values")
    check_finite(tensors, path, "tensor", error)
    try:
        if dtype is not None:
            tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        module.load_state_dict(dict(tensors), strict=True)
    except (RuntimeError, TypeError, ValueError) as e:  # e.g. a dtype that cannot be copied into the weight
        raise error(f"{path}: tensors do not fit the {what} ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                    ) from None
    return module


def _check_init_ints(value: Any, where: str, path, error, limit: int = MAX_INIT_INT, depth: int = 0) -> None:
    """Every number in a generic card's init kwargs must be finite and every integer at most `limit`."""
    if depth > MAX_JSON_DEPTH:
        raise error(f"{path}: {where} is nested too deeply")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_init_ints(v, f"{where}.{k}", path, error, limit, depth + 1)
    elif isinstance(value, (list, tuple)):
        if len(value) > limit:
            raise error(f"{path}: {where} has {len(value)} entries (at most {limit})")
        for i, v in enumerate(value):
            _check_init_ints(v, f"{where}[{i}]", path, error, limit, depth + 1)
    elif isinstance(value, bool) or value is None or isinstance(value, str):
        return
    elif isinstance(value, int):
        if abs(value) > limit:
            raise error(f"{path}: {where} = {str(value)[:30]} is out of range (at most {limit})")
    elif isinstance(value, float):
        if not math.isfinite(value) or abs(value) > 1e12:
            raise error(f"{path}: {where} = {value} is out of range")


def count_parameters(build: Callable[[], nn.Module]) -> int:
    """Parameters of the module `build()` makes, counted on PyTorch's meta device (no memory allocated)."""
    with torch.device("meta"):
        module = build()
    return sum(p.numel() for p in module.parameters())


def check_parameter_limit(count: int, path, what: str, error: type[Exception] = CheckpointError,
                          max_parameters: int | None = None) -> int:
    """`error` when a network would have more than `max_parameters` (default `MAX_PARAMETERS`) parameters."""
    limit = MAX_PARAMETERS if max_parameters is None else int(max_parameters)
    if count > limit:
        raise error(f"{path}: the {what} would have {count:,} parameters, above the limit of {limit:,} "
                    "(pass max_parameters= to allow more)")
    return count


def check_parameter_count(build: Callable[[], nn.Module], path, what: str, error: type[Exception] = CheckpointError,
                          max_parameters: int | None = None) -> int:
    """Count `build()`'s parameters without allocating them (meta device); `error` when building fails or the
    count is above `max_parameters` (default `MAX_PARAMETERS`)."""
    try:
        count = count_parameters(build)
    except GanInvError:
        raise
    except Exception as e:  # the kwargs come from an untrusted file (RecursionError, MemoryError included)
        first = str(e).splitlines()[0] if str(e) else ""
        raise error(f"{path}: cannot build the {what} from its kwargs ({type(e).__name__}: {first[:200]})") from None
    return check_parameter_limit(count, path, what, error, max_parameters)


def card_sha256(card: dict, path, error: type[Exception] = CheckpointError) -> str | None:
    """The card's `sha256` field (None when absent); `error` when it is not a 64-digit hex string."""
    value = card.get("sha256")
    if value is None:
        return None
    if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())):
        raise error(f"{path}: the card's sha256 {str(value)[:70]!r} is not a sha256 hex digest")
    return value.lower()


def load_folder(directory: str | os.PathLike, card_format: str, card_version: int, what: str,
                error: type[Exception] = CheckpointError, verify_hash: bool = True
                ) -> tuple[dict, dict[str, torch.Tensor]]:
    """(card, tensors) of a folder written by `save_folder`; the weights are checked against the card's sha256."""
    directory = Path(directory)
    card_path = file_in_folder(directory, CARD_FILE, f"{what} card", error)
    card = read_card(card_path, card_format, card_version, f"{what} card", error)
    sha256 = card_sha256(card, card_path, error) if verify_hash else None
    tensors = load_tensors(file_in_folder(directory, WEIGHTS_FILE, f"{what} weights file", error), sha256=sha256,
                           what=f"{what} weights file", error=error)
    return card, tensors


def load_module(directory: str | os.PathLike, card_format: str, card_version: int, what: str,
                build: Callable[[dict], nn.Module], error: type[Exception] = CheckpointError,
                max_parameters: int | None = None) -> tuple[nn.Module, dict]:
    """(module built by `build(card)` with the folder's weights loaded, card).

    The card's `init_kwargs` are checked (finite numbers, integers up to `MAX_INIT_INT`) and the module
    is first built on the meta device to count its parameters against `max_parameters`."""
    directory = Path(directory)
    card, tensors = load_folder(directory, card_format, card_version, what, error)
    card_path = directory / CARD_FILE
    _check_init_ints(card.get("init_kwargs"), "init_kwargs", card_path, error)
    check_parameter_count(lambda: build(card), card_path, what, error, max_parameters)
    try:
        module = build(card)
    except Exception as e:
        raise error(f"{card_path}: invalid init_kwargs ({type(e).__name__}: {str(e)[:200]})") from None
    load_state(module, tensors, directory / WEIGHTS_FILE, f"{what} described by its card", error)
    return module, card


__all__ = ["CARD_FILE", "MAX_PARAMETERS", "WEIGHTS_FILE", "CheckpointError", "MissingFileError", "card_sha256",
           "check_finite", "check_parameter_count", "check_parameter_limit", "check_state_dict", "file_in_folder", "loads_json", "load_folder",
           "load_module", "load_state", "load_tensors", "read_card", "save_folder", "save_module", "save_tensors",
           "sha256_file", "tensors_to_bytes", "write_card"]
