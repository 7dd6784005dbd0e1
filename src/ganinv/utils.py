"""Small shared helpers: seed and layer-range parsing, seeded latents, atomic file writes, JSON."""
from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch


#: Most seeds `parse_seeds` expands by default (a range is counted before any list is built).
MAX_PARSED_SEEDS = 1_000_000
#: Seeds are 32-bit: NVIDIA's convention seeds numpy's RandomState, which takes 0 to 2**32 - 1.
MAX_SEED = 2 ** 32 - 1


def parse_seeds(text: str | int | Sequence[int], max_count: int | None = MAX_PARSED_SEEDS) -> list[int]:
    """'0,3,5-9' -> [0, 3, 5, 6, 7, 8, 9].

    Every seed must lie in 0 to 2**32-1. The number of seeds is counted from the range bounds before
    anything is expanded, so '0-4294967295' costs nothing: more than `max_count` seeds (None: no limit)
    raise ValueError with a one-line message, as does any malformed part."""
    if isinstance(text, bool):
        raise ValueError(f"bad seed {text!r}; use forms like 0,3,5-9")
    if isinstance(text, int):
        parts: list[tuple[int, int]] = [(text, text)]
    elif isinstance(text, str):
        parts = []
        for part in text.replace(" ", "").split(","):
            if not part:
                continue
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, "")
                try:
                    lo_i, hi_i = int(lo), int(hi)
                except ValueError:
                    raise ValueError(f"bad seed range {part[:40]!r}; use forms like 0,3,5-9") from None
                if hi_i < lo_i:
                    raise ValueError(f"bad seed range {part!r}: end before start")
            else:
                try:
                    lo_i = hi_i = int(part)
                except ValueError:
                    raise ValueError(f"bad seed {part[:40]!r}; use forms like 0,3,5-9") from None
            parts.append((lo_i, hi_i))
    else:
        parts = []
        for s in text:
            try:
                value = int(s)
            except (TypeError, ValueError):
                raise ValueError(f"bad seed {str(s)[:40]!r}; seeds are integers") from None
            parts.append((value, value))
    if not parts:
        raise ValueError("no seeds given")
    count = 0
    for lo_i, hi_i in parts:
        if lo_i < 0 or hi_i > MAX_SEED:
            bad = lo_i if lo_i < 0 else hi_i
            raise ValueError(f"seed {bad} is out of range; seeds must be 0 to {MAX_SEED} (2**32-1)")
        count += hi_i - lo_i + 1
    if max_count is not None and count > max_count:
        raise ValueError(f"{count:,} seeds asked for; at most {max_count:,} at once")
    return [seed for lo_i, hi_i in parts for seed in range(lo_i, hi_i + 1)]


def parse_layers(text: str | Sequence[int] | None, num_ws: int) -> list[int]:
    """Layer ranges count ws indices: 'all', '0-1', '2-5', '6-', '3', '0,2,4-5'."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("all", "")):
        return list(range(num_ws))
    if not isinstance(text, str):
        layers = sorted({int(i) for i in text})
    else:
        layers_set: set[int] = set()
        for part in text.replace(" ", "").split(","):
            if "-" in part:
                lo, hi = part.split("-", 1)
                try:
                    lo_i = int(lo) if lo else 0
                    hi_i = int(hi) if hi else num_ws - 1
                except ValueError:
                    raise ValueError(f"bad layer range {part!r}; use forms like all, 0-1, 2-5, 6-") from None
                layers_set.update(range(lo_i, hi_i + 1))
            else:
                try:
                    layers_set.add(int(part))
                except ValueError:
                    raise ValueError(f"bad layer {part!r}; use forms like all, 0-1, 2-5, 6-") from None
        layers = sorted(layers_set)
    bad = [i for i in layers if i < 0 or i >= num_ws]
    if bad:
        raise ValueError(f"layer indices {bad} out of range for num_ws={num_ws} (valid 0-{num_ws - 1})")
    return layers


def z_from_seed(seed: int, z_dim: int, num: int = 1) -> torch.Tensor:
    """NVIDIA gen_images convention: np.random.RandomState(seed).randn(num, z_dim) as float32 [num, z_dim].

    The one place ganinv turns a seed into prior z; for num=1 it is exactly gen_images' z for `seed`."""
    return torch.from_numpy(np.random.RandomState(seed).randn(num, z_dim).astype(np.float32))


def z_from_seeds(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    return torch.cat([z_from_seed(s, z_dim) for s in seeds])


def one_hot(label: int | None, c_dim: int, batch: int = 1) -> torch.Tensor | None:
    if c_dim == 0:
        if label is not None:
            raise ValueError("this model is unconditional; --class is not accepted")
        return None
    if label is None:
        raise ValueError(f"this model is conditional ({c_dim} classes): give --class")
    if not 0 <= label < c_dim:
        raise ValueError(f"class {label} out of range 0-{c_dim - 1}")
    c = torch.zeros([batch, c_dim])
    c[:, label] = 1
    return c


def current_umask() -> int:
    """The process's file-creation mask, read without changing it where the system allows
    (/proc/self/status on Linux); elsewhere set and restored at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _chmod_like_new_file(path: str | os.PathLike) -> None:
    """Give a temporary file (or folder) the mode a plain `open(path, "w")` (or mkdir) would have:
    mkstemp creates 0600, and os.replace keeps the temporary's mode."""
    if os.path.islink(path):
        return
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~current_umask())


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    The file that appears at `path` has the permissions of any newly created file (0666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.lexists(tmp):
            _chmod_like_new_file(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")


def jsonable(obj):
    """A copy of obj that json.dumps accepts: tensors and arrays as lists, numpy scalars as numbers,
    non-finite floats as strings ('nan', 'inf'), dict keys as strings, anything else as str(obj)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def seeded_generator(seed: int | None, device: str | torch.device = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(0 if seed is None else int(seed))
    return gen


def adam(params, **kwargs) -> torch.optim.Adam:
    """torch.optim.Adam, with the fused implementation where PyTorch has one for these tensors (CPU and
    CUDA floating point): one kernel for all parameters instead of a Python loop of small operations.
    Same update rule; rounding may differ in the last bits from the looped form.

    The fused CPU kernel (torch 2.13) reads a gradient's memory as if it had its parameter's layout: a
    gradient with other strides is applied to the wrong elements. `backward()` lays gradients out like
    their parameters, but `torch.autograd.grad` need not: the transposed convolution of an upsampling
    layer returns its weight gradient with the in/out channels swapped in memory. A step pre-hook copies
    any such gradient, and any moment estimate loaded in another layout, into the parameter's layout
    first (tests/test_utils.py)."""
    params = list(params)
    tensors = [t for group in params for t in (group["params"] if isinstance(group, dict) else [group])]
    fused = bool(tensors) and all(t.device.type in ("cpu", "cuda") and t.is_floating_point() for t in tensors)
    optimizer = torch.optim.Adam(params, fused=fused or None, **kwargs)
    if fused:
        optimizer.register_step_pre_hook(_grads_in_parameter_layout)
    return optimizer


def _grads_in_parameter_layout(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    # The moment estimates too: a state loaded from a checkpoint written with another memory format
    # (a channels-last network resumed from a contiguous one) would otherwise be read in the wrong order.
    for group in optimizer.param_groups:
        for param in group["params"]:
            grad = param.grad
            if grad is not None and grad.stride() != param.stride():
                param.grad = torch.empty_like(param).copy_(grad)
            state = optimizer.state.get(param)
            for key, value in (state or {}).items():
                if (isinstance(value, torch.Tensor) and value.shape == param.shape
                        and value.stride() != param.stride()):
                    state[key] = torch.empty_like(param).copy_(value)
