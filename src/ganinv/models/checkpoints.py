"""Reading and writing generator checkpoints: NVIDIA pickles (without running their code), rosinality
`.pt` files, and ganinv's native format (`model.safetensors` + `card.json`).

Every foreign format is described here by a table of key-name mappings rather than by special cases
scattered through the code base.

NVIDIA's stylegan2-ada-pytorch (and the stylegan3 repository's stylegan2 config) pickle whole Python
modules: `torch_utils.persistence` stores each network class's source text and `pickle.load` executes it.
We never do. A restricted unpickler resolves only a short allow-list of globals; network objects become
inert records (class name, init kwargs, state), from which our own classes are built and the tensors
loaded by name. Anything else in the pickle raises `UnsafeCheckpoint` before it can run.

Every file read here may be hostile. Before any network is built, every size in its kwargs (or in the
key names and shapes of a rosinality state dict) is checked against the limits below, and the network is
its parameters are counted from the kwargs against `max_parameters` (default `storage.MAX_PARAMETERS`)
before anything is allocated. A pickle's opcodes are scanned first, so no length
prefix can claim more bytes than the file holds. A native card must carry the sha256 of its weights
unless the caller trusts it (`trust_card=True`), and every weight must be finite. Any failure of an
untrusted file is one `CheckpointError` line that names the file.
"""
from __future__ import annotations

import argparse
import collections
import io
import math
import os
import pickle
import pickletools
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import GanInvError
from . import official_encoders, storage
from .prior import compute_w_avg
from .storage import CARD_FILE, MAX_PARAMETERS, WEIGHTS_FILE, CheckpointError, sha256_file
from .stylegan2 import Discriminator, Generator
from .stylegan3 import ARCHITECTURE as STYLEGAN3, Generator as StyleGAN3Generator

CARD_FORMAT = "ganinv-model"
CARD_VERSION = 1

# Sizes a network's kwargs may ask for (real StyleGAN2/3 models stay far below every one of them).
MAX_RESOLUTION = 2048
MAX_DIM = 2 ** 16  # z_dim, w_dim, c_dim, feature and embedding sizes, and any other integer not listed
MAX_CHANNELS = 2 ** 14  # feature maps at one resolution (channel_max, the channels table)
MAX_IMG_CHANNELS = 64
MAX_MAPPING_LAYERS = 64
_INT_LIMITS = {  # field name -> (lowest, highest)
    "z_dim": (0, MAX_DIM), "c_dim": (0, MAX_DIM), "w_dim": (1, MAX_DIM), "img_channels": (1, MAX_IMG_CHANNELS),
    "num_layers": (1, MAX_MAPPING_LAYERS), "channel_base": (1, 2 ** 24), "channel_max": (1, MAX_CHANNELS),
    "num_fp16_res": (0, 64), "kernel_size": (1, 15), "embed_features": (0, MAX_DIM),
    "layer_features": (1, MAX_DIM), "cmap_dim": (0, MAX_DIM), "mbstd_group_size": (1, 4096),
    "mbstd_num_channels": (0, MAX_CHANNELS), "num_ws": (1, 4 * MAX_MAPPING_LAYERS),
}
_MAX_KWARGS_DEPTH = 8
_MAX_RECORD_DEPTH = 64  # nesting of persistent records (modules) in a pickle


class UnsafeCheckpoint(CheckpointError):
    """A pickle asked for something outside the allow-list (it may try to run code)."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


@contextmanager
def _untrusted(path, what: str):
    """Any failure inside (RecursionError, MemoryError, OverflowError, a TypeError on a malformed
    record...) becomes one CheckpointError line naming the file; ganinv's own errors pass unchanged."""
    try:
        yield
    except GanInvError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read the {what} ({type(e).__name__}: {_first_line(e)})") from None


def _check_resolution(value, field: str, path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"{path}: {field} must be an integer, got {str(value)[:40]!r}")
    if not 4 <= value <= MAX_RESOLUTION or value & (value - 1):
        raise CheckpointError(f"{path}: {field} = {str(value)[:40]} is not a power of two in 4..{MAX_RESOLUTION}")
    return value


def check_network_kwargs(kwargs, field: str, path, depth: int = 0) -> None:
    """Refuse kwargs that ask for an absurd network before anything is built: every integer within its
    field's limits (`_INT_LIMITS`, else 0..MAX_DIM in magnitude), resolutions powers of two up to
    MAX_RESOLUTION, channel tables keyed by resolution, numbers finite, and short lists and strings."""
    if depth > _MAX_KWARGS_DEPTH:
        raise CheckpointError(f"{path}: {field} is nested too deeply")
    if isinstance(kwargs, dict):
        if len(kwargs) > 256:
            raise CheckpointError(f"{path}: {field} has {len(kwargs)} entries")
        for key, value in kwargs.items():
            if not isinstance(key, str):
                raise CheckpointError(f"{path}: {field} has a non-text key {str(key)[:40]!r}")
            sub = f"{field}.{key}"
            if key == "channels" and isinstance(value, dict):
                for res, width in value.items():
                    try:
                        _check_resolution(int(res), f"{sub} key", path)
                    except (TypeError, ValueError, OverflowError):
                        raise CheckpointError(f"{path}: {sub} key {str(res)[:40]!r} is not a resolution") from None
                    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_CHANNELS:
                        raise CheckpointError(f"{path}: {sub}.{res} = {str(width)[:40]} is out of range "
                                              f"(1..{MAX_CHANNELS})")
            elif key.endswith("resolution") and value is not None:
                _check_resolution(value, sub, path)
            elif key in _INT_LIMITS and value is not None:
                lo, hi = _INT_LIMITS[key]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise CheckpointError(f"{path}: {sub} must be an integer, got {str(value)[:40]!r}")
                if not lo <= value <= hi:
                    raise CheckpointError(f"{path}: {sub} = {str(value)[:40]} is out of range ({lo}..{hi})")
            else:
                check_network_kwargs(value, sub, path, depth + 1)
    elif isinstance(kwargs, (list, tuple)):
        if len(kwargs) > 64:
            raise CheckpointError(f"{path}: {field} has {len(kwargs)} entries (at most 64)")
        for i, value in enumerate(kwargs):
            check_network_kwargs(value, f"{field}[{i}]", path, depth + 1)
    elif isinstance(kwargs, bool) or kwargs is None:
        return
    elif isinstance(kwargs, int):
        if abs(kwargs) > MAX_DIM:
            raise CheckpointError(f"{path}: {field} = {str(kwargs)[:40]} is out of range (at most {MAX_DIM})")
    elif isinstance(kwargs, float):
        if not math.isfinite(kwargs) or abs(kwargs) > 1e9:
            raise CheckpointError(f"{path}: {field} = {kwargs} is not a finite number of sensible size")
    elif isinstance(kwargs, str):
        if len(kwargs) > 200:
            raise CheckpointError(f"{path}: {field} is a string of {len(kwargs)} characters")
    else:
        raise CheckpointError(f"{path}: {field} holds a {type(kwargs).__name__}, not plain data")


def _channels(kwargs: dict, resolutions: list[int]) -> dict[int, int]:
    base, cap = kwargs.get("channel_base", 32768), kwargs.get("channel_max", 512)
    given = {int(k): v for k, v in (kwargs.get("channels") or {}).items()}
    return {r: given.get(r, min(base // r, cap)) for r in resolutions}


def _mapping_parameters(z_dim: int, c_dim: int, w_dim: int, kwargs: dict) -> int:
    layers = kwargs.get("num_layers", 8)
    embed = 0 if c_dim == 0 else (w_dim if kwargs.get("embed_features") is None else kwargs["embed_features"])
    hidden = w_dim if kwargs.get("layer_features") is None else kwargs["layer_features"]
    features = [z_dim + embed] + [hidden] * (layers - 1) + [w_dim]
    count = sum(a * b + b for a, b in zip(features[:-1], features[1:]))
    return count + (c_dim * embed + embed if c_dim > 0 else 0)


def generator_parameters(kwargs: dict) -> int:
    """Parameters of `Generator(**kwargs)`, computed from the kwargs alone (nothing is built)."""
    w_dim, res, img_channels = kwargs["w_dim"], kwargs["img_resolution"], kwargs["img_channels"]
    synthesis = dict(kwargs.get("synthesis_kwargs") or {})
    count = _mapping_parameters(kwargs["z_dim"], kwargs["c_dim"], w_dim, dict(kwargs.get("mapping_kwargs") or {}))
    resolutions = _pow2_range(res)
    channels = _channels(synthesis, resolutions)
    architecture = synthesis.get("architecture", "skip")
    kernel = synthesis.get("kernel_size", 3)
    noise = 1 if synthesis.get("use_noise", True) else 0

    def layer(cin: int, cout: int) -> int:  # affine, weight, bias, noise strength
        return w_dim * cin + cin + cout * cin * kernel * kernel + cout + noise

    for r in resolutions:
        cin, cout = (channels[r // 2] if r > 4 else 0), channels[r]
        count += cout * r * r if cin == 0 else layer(cin, cout)
        count += layer(cout, cout)
        if r == res or architecture == "skip":
            count += w_dim * cout + cout + img_channels * cout + img_channels
        if cin and architecture == "resnet":
            count += cout * cin
    return count


def discriminator_parameters(kwargs: dict) -> int:
    """Parameters of `Discriminator(**kwargs)`, computed from the kwargs alone (nothing is built)."""
    res, img_channels, c_dim = kwargs["img_resolution"], kwargs["img_channels"], kwargs["c_dim"]
    architecture = kwargs.get("architecture", "resnet")
    resolutions = _pow2_range(res)
    channels = _channels(kwargs, resolutions)
    cmap = 0 if c_dim == 0 else (channels[4] if kwargs.get("cmap_dim") is None else kwargs["cmap_dim"])
    count = 0
    for r in resolutions[::-1][:-1]:
        tmp, cout = channels[r], channels[r // 2]
        if r == res or architecture == "skip":
            count += img_channels * tmp + tmp
        count += tmp * tmp * 9 + tmp + cout * tmp * 9 + cout
        if architecture == "resnet":
            count += cout * tmp
    if c_dim > 0:
        count += _mapping_parameters(0, c_dim, cmap, dict(kwargs.get("mapping_kwargs") or {}))
    c4 = channels[4]
    mbstd = (kwargs.get("epilogue_kwargs") or {}).get("mbstd_num_channels", 1)
    outputs = 1 if cmap == 0 else cmap
    count += (img_channels * c4 + c4 if architecture == "skip" else 0) + (c4 + mbstd) * c4 * 9 + c4
    return count + c4 * 16 * c4 + c4 + c4 * outputs + outputs


def stylegan3_generator_parameters(kwargs: dict) -> int:
    """An upper bound on the parameters of a StyleGAN3 `Generator(**kwargs)`, from the kwargs alone: every
    layer (the input's, the synthesis layers' and the toRGB) is counted at `channel_max` channels."""
    w_dim = kwargs["w_dim"]
    synthesis = {**dict(kwargs.get("synthesis_kwargs") or {}),
                 **{k: v for k, v in kwargs.items() if k not in _GENERATOR_TOP_KWARGS}}
    mapping = {"num_layers": 2, **dict(kwargs.get("mapping_kwargs") or {})}
    count = _mapping_parameters(kwargs["z_dim"], kwargs["c_dim"], w_dim, mapping) + w_dim * w_dim
    channels = min(int(synthesis.get("channel_max", 512)), int(synthesis.get("channel_base", 32768)))
    kernel = int(synthesis.get("conv_kernel", 3))
    layers = int(synthesis.get("num_layers", 14)) + 1  # and the toRGB layer
    count += w_dim * 4 + 4 + channels * channels + 3 * channels  # the input: affine, mixing weight, freqs, phases
    return count + layers * (w_dim * channels + channels + channels * channels * kernel * kernel + channels)


_PARAMETER_COUNTS = {Generator: generator_parameters, Discriminator: discriminator_parameters,
                     StyleGAN3Generator: stylegan3_generator_parameters}


def build_network(cls, kwargs, path, field: str, max_parameters: int | None = None):
    """`cls(**kwargs)` for G or D from an untrusted file: the kwargs are checked (`check_network_kwargs`)
    and the parameters counted from them against `max_parameters` before anything is allocated."""
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{path}: {field} must be a mapping of constructor arguments, got "
                              f"{type(kwargs).__name__}")
    check_network_kwargs(kwargs, field, path)
    what = "discriminator" if cls is Discriminator else "generator"
    try:
        count = _PARAMETER_COUNTS[cls](kwargs)
    except KeyError as e:
        raise CheckpointError(f"{path}: {field} lacks {e}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {field} are not valid {what} kwargs ({_first_line(e)})") from None
    storage.check_parameter_limit(count, path, f"{what} ({field})", CheckpointError, max_parameters)
    try:
        return cls(**kwargs)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot build the {what} from {field} ({type(e).__name__}: "
                              f"{_first_line(e)})") from None


# ---------------------------------------------------------------------------------------------
# Restricted unpickling of NVIDIA network pickles


class PersistentRecord:
    """Inert stand-in for an object saved by NVIDIA's torch_utils.persistence."""

    def __init__(self, meta: dict):
        if not isinstance(meta, dict):
            raise UnsafeCheckpoint("persistent object record is not a dict")
        self.class_name = str(meta.get("class_name"))
        self.state = meta.get("state") or {}
        self.version = meta.get("version")
        src = meta.get("module_src")
        # The source text is only looked at, never run: it tells StyleGAN3 modules apart.
        self.is_stylegan3_source = isinstance(src, str) and "class SynthesisInput" in src

    @property
    def init_kwargs(self) -> dict:
        kwargs = _plain(self.state.get("_init_kwargs", {}) if isinstance(self.state, dict) else {})
        if not isinstance(kwargs, dict):
            raise CheckpointError(f"the {self.class_name[:60]} record's init kwargs are a {type(kwargs).__name__}, "
                                  "not a mapping")
        return kwargs

    def tensors(self, prefix: str = "", depth: int = 0) -> dict[str, torch.Tensor]:
        """All parameters and buffers of the module tree, by their state-dict names."""
        if depth > _MAX_RECORD_DEPTH:
            raise CheckpointError(f"modules nested more than {_MAX_RECORD_DEPTH} deep (or in a cycle)")
        out: dict[str, torch.Tensor] = {}
        state = self.state if isinstance(self.state, dict) else {}
        for group in ("_parameters", "_buffers"):
            entries = state.get(group) or {}
            if not isinstance(entries, dict):
                raise CheckpointError(f"{prefix or 'network'} {group} is a {type(entries).__name__}, not a mapping")
            for name, value in entries.items():
                if value is None:
                    continue
                if not isinstance(value, torch.Tensor):
                    raise CheckpointError(f"{prefix}{str(name)[:60]} is a {type(value).__name__}, not a tensor")
                out[prefix + str(name)] = value.detach().clone()
        modules = state.get("_modules") or {}
        if not isinstance(modules, dict):
            raise CheckpointError(f"{prefix or 'network'} _modules is a {type(modules).__name__}, not a mapping")
        for name, child in modules.items():
            if isinstance(child, PersistentRecord):
                out.update(child.tensors(prefix + str(name) + ".", depth + 1))
            elif child is not None:
                raise UnsafeCheckpoint(f"unexpected module object {type(child).__name__} in pickle")
        return out


class _EasyDict(dict):
    """Inert replacement for dnnlib.util.EasyDict."""


def _plain(value: Any, depth: int = 0) -> Any:
    """A copy of unpickled kwargs as plain dicts, lists and scalars (cycles and deep nesting refused)."""
    if depth > _MAX_KWARGS_DEPTH * 4:
        raise CheckpointError("init kwargs are nested too deeply (or contain a cycle)")
    if isinstance(value, dict):
        return {k: _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _load_storage_bytes(data: bytes):
    # torch.storage._load_from_bytes would call torch.load(weights_only=False): never here.
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafeCheckpoint("numpy scalar with a non-numeric dtype")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks, metadata=None):
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, collections.OrderedDict())


def _rebuild_parameter(data, requires_grad, backward_hooks):
    if not isinstance(data, torch.Tensor):
        raise UnsafeCheckpoint("parameter record does not hold a tensor")
    return data


class _NdarrayType:
    """Inert stand-in for the `numpy.ndarray` class a pickled array names (never instantiated)."""


class _InertArray:
    """A numpy array pickled as an attribute (StyleGAN3 layers keep their sizes in arrays): rebuilt from
    its bytes only for numeric dtypes, without calling anything the pickle names."""

    def __init__(self, subtype=None, shape=None, dtype=None):
        if subtype is not _NdarrayType:
            raise UnsafeCheckpoint("numpy array record of an unexpected type")
        self.array = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise UnsafeCheckpoint("malformed numpy array record")
        _, shape, dtype, fortran, data = state
        if (not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, bytearray))
                or not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape)):
            raise UnsafeCheckpoint("numpy array record with a non-numeric dtype or a bad shape")
        count = int(np.prod(shape, dtype=np.int64))
        if count * dtype.itemsize != len(data):
            raise UnsafeCheckpoint("numpy array record whose data does not match its shape")
        self.array = np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _InertArray,
    ("numpy._core.multiarray", "_reconstruct"): _InertArray,
    ("numpy", "ndarray"): _NdarrayType,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib.easydict", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): np.dtype,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise UnsafeCheckpoint(f"refusing to load global {module}.{name} from a pickle")
        return target

    def persistent_load(self, pid):
        raise UnsafeCheckpoint("refusing a pickle persistent id")


# Persistent records name the class but not its module (the module is the embedded source text).
# StyleGAN2 networks (training.networks of stylegan2-ada-pytorch, training.networks_stylegan2 of the
# stylegan3 repository) are told from StyleGAN3 ones by their tensors.
_NVIDIA_GENERATORS = {"Generator"}
_NVIDIA_DISCRIMINATORS = {"Discriminator"}
# Constructor arguments that change nothing numerically on our side (memory layout, freezing).
_IGNORED_KWARGS = {"fp16_channels_last", "channels_last", "fused_modconv_default", "freeze_layers"}
_GENERATOR_TOP_KWARGS = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs",
                         "synthesis_kwargs"}


def _drop_ignored(kwargs: dict) -> dict:
    return {k: (_drop_ignored(v) if isinstance(v, dict) else v) for k, v in kwargs.items()
            if k not in _IGNORED_KWARGS}


def _generator_kwargs_from_nvidia(kwargs: dict, tensors: dict) -> dict:
    kwargs = _drop_ignored(kwargs)
    # The stylegan3 repository flattens synthesis kwargs into the Generator's own kwargs.
    synthesis = dict(kwargs.get("synthesis_kwargs") or {})
    for key in list(kwargs):
        if key not in _GENERATOR_TOP_KWARGS:
            synthesis[key] = kwargs.pop(key)
    kwargs["synthesis_kwargs"] = synthesis
    res = int(kwargs["img_resolution"])
    synthesis["channels"] = {str(r): int(tensors[f"synthesis.b{r}.conv1.weight"].shape[0])
                             for r in _pow2_range(res)}
    return kwargs


def _discriminator_kwargs_from_nvidia(kwargs: dict, tensors: dict) -> dict:
    kwargs = _drop_ignored(kwargs)
    res = int(kwargs["img_resolution"])
    channels = {str(r): int(tensors[f"b{r}.conv0.weight"].shape[0]) for r in _pow2_range(res) if r > 4}
    channels["4"] = int(tensors["b4.conv.weight"].shape[0])
    kwargs["channels"] = channels
    return kwargs


def _pow2_range(res: int) -> list[int]:
    return [2 ** i for i in range(2, int(round(math.log2(res))) + 1)]


def _scan_pickle(data: bytes, path: Path) -> None:
    """Walk the opcodes without building anything: every length prefix (BINBYTES8, BINUNICODE8, LONG4,
    FRAME...) must fit in the bytes that follow it, so the unpickler never allocates for a false claim."""
    stream = io.BytesIO(data)
    try:
        for opcode, arg, pos in pickletools.genops(stream):
            if opcode.name == "FRAME" and arg > len(data) - stream.tell():
                raise ValueError(f"a frame at byte {pos} claims {arg} bytes; only {len(data) - stream.tell()} follow")
    except (ValueError, TypeError, OverflowError, MemoryError) as e:
        raise CheckpointError(f"{path}: not a readable pickle ({_first_line(e)})") from None


def read_nvidia_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """Unpickle an NVIDIA network pickle into inert records, without executing any of its code."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the file ({e})") from None
    _scan_pickle(raw, path)
    try:
        data = _RestrictedUnpickler(io.BytesIO(raw)).load()
    except UnsafeCheckpoint as e:
        raise UnsafeCheckpoint(f"{path}: {e}") from None
    except GanInvError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except Exception as e:  # UnpicklingError, EOFError, RecursionError, MemoryError, a malformed record...
        raise CheckpointError(f"{path}: not a readable NVIDIA network pickle ({type(e).__name__}: "
                              f"{_first_line(e)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict of networks (G, D, G_ema), got {type(data).__name__}")
    return data


def _build_from_record(record: PersistentRecord, path: Path, role: str, max_parameters: int | None = None):
    try:
        tensors = record.tensors()
        init_kwargs = record.init_kwargs
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    is_stylegan3 = record.is_stylegan3_source or any(k.startswith("synthesis.input.") for k in tensors)
    field = f"{'G' if role == 'G' else 'D'} init kwargs"
    # Sizes first: the channel table is read from the tensors for every resolution the kwargs name.
    check_network_kwargs(init_kwargs, field, path)
    _check_resolution(init_kwargs.get("img_resolution"), f"{field}.img_resolution", path)
    try:
        if role == "G" and is_stylegan3:
            # training.networks_stylegan3: our class takes the official kwargs as they are.
            if record.class_name not in _NVIDIA_GENERATORS:
                raise CheckpointError(f"{path}: unsupported generator class {record.class_name[:60]}")
            cls, kwargs = StyleGAN3Generator, _drop_ignored(init_kwargs)
        elif role == "G":
            if record.class_name not in _NVIDIA_GENERATORS:
                raise CheckpointError(f"{path}: unsupported generator class {record.class_name[:60]}")
            cls, kwargs = Generator, _generator_kwargs_from_nvidia(init_kwargs, tensors)
        else:
            if record.class_name not in _NVIDIA_DISCRIMINATORS:
                raise CheckpointError(f"{path}: unsupported discriminator class {record.class_name[:60]}")
            cls, kwargs = Discriminator, _discriminator_kwargs_from_nvidia(init_kwargs, tensors)
    except KeyError as e:
        raise CheckpointError(f"{path}: {record.class_name[:60]} lacks tensor {e}") from None
    except (TypeError, ValueError, AttributeError, IndexError) as e:
        kind = f"StyleGAN3 {record.class_name[:60]}" if is_stylegan3 else record.class_name[:60]
        raise CheckpointError(f"{path}: cannot rebuild {kind} from its init kwargs "
                              f"({type(e).__name__}: {_first_line(e)})") from None
    net = build_network(cls, kwargs, path, field, max_parameters)
    _load_state(net, tensors, path)
    return net


def _load_state(net: torch.nn.Module, tensors: dict[str, torch.Tensor], path) -> None:
    """Load foreign or native tensors into one of our networks (exact keys and shapes, as float32)."""
    storage.load_state(net, tensors, path, what="network", error=CheckpointError, dtype=torch.float32)


def load_nvidia_pickle(path: str | os.PathLike, max_parameters: int | None = None
                       ) -> tuple[Generator, Discriminator | None, dict]:
    """(G_ema or G, D or None, info) from a stylegan2-ada-pytorch / stylegan3-repo network pickle.

    Each network may have at most `max_parameters` parameters (default `storage.MAX_PARAMETERS`)."""
    path = Path(path)
    with _untrusted(path, "NVIDIA network pickle"):
        return _load_nvidia_pickle(path, max_parameters)


def _load_nvidia_pickle(path: Path, max_parameters: int | None) -> tuple[Generator, Discriminator | None, dict]:
    data = read_nvidia_pickle(path)
    g_record = data.get("G_ema", data.get("G"))
    if not isinstance(g_record, PersistentRecord):
        raise CheckpointError(f"{path}: no generator (G_ema or G) in the pickle; keys: "
                              f"{sorted(str(k)[:40] for k in data)[:20]}")
    G = _build_from_record(g_record, path, "G", max_parameters)
    D = None
    if isinstance(data.get("D"), PersistentRecord):
        D = _build_from_record(data["D"], path, "D", max_parameters)
    info = {"source_format": "nvidia-pickle", "generator_key": "G_ema" if "G_ema" in data else "G",
            "w_avg_source": "checkpoint"}
    return G.eval(), (D.eval() if D is not None else None), info


# ---------------------------------------------------------------------------------------------
# rosinality/stylegan2-pytorch checkpoints


def _rosinality_safe_globals():
    return [argparse.Namespace]


def _weights_only_refusal(path: Path, e: pickle.UnpicklingError) -> UnsafeCheckpoint:
    """torch's weights-only refusal, said plainly: the file would run code (or needs a class we never load)."""
    text = str(e)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return UnsafeCheckpoint(f"{path}: refused: loading this file would run code or build objects it names "
                                f"({found.group(1)}); it is not a weights-only checkpoint")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = next((line for line in lines[1:] if not line.startswith("Check the documentation")), lines[0] if lines
                  else "refused")
    return UnsafeCheckpoint(f"{path}: refused: not a weights-only checkpoint ({detail[:200]})")


def read_rosinality(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_rosinality_safe_globals()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _weights_only_refusal(path, e) from None
    except Exception as e:  # RuntimeError, EOFError, BadZipFile, RecursionError, MemoryError...
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                              f"{_first_line(e)})") from None
    if not isinstance(data, dict) or ("g_ema" not in data and not official_encoders.has_decoder(data)):
        keys = sorted(str(k)[:40] for k in data)[:20] if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: expected a rosinality checkpoint with a 'g_ema' state dict, found {keys}")
    return data


def _ros_num_layers(keys, pattern) -> int:
    found = {int(m.group(1)) for k in keys for m in [re.match(pattern, k)] if m}
    return max(found) + 1 if found else 0


def _check_state_dict_values(sd, path: Path, name: str) -> None:
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise CheckpointError(f"{path}: {name} is not a state dict (names to tensors)")


def _rosinality_generator(sd: dict, path: Path, latent_avg: torch.Tensor | None,
                          max_parameters: int | None = None) -> tuple[Generator, dict]:
    _check_state_dict_values(sd, path, "g_ema")
    n_mlp = _ros_num_layers(sd, r"style\.(\d+)\.weight")  # style.0 is PixelNorm
    n_mlp -= 1
    if n_mlp < 1 or "input.input" not in sd or "style.1.weight" not in sd:
        raise CheckpointError(f"{path}: g_ema is not a rosinality StyleGAN2 generator state dict")
    if n_mlp > MAX_MAPPING_LAYERS:
        raise CheckpointError(f"{path}: g_ema names {n_mlp} mapping layers (style.N); at most {MAX_MAPPING_LAYERS}")
    if sd["style.1.weight"].ndim != 2:
        raise CheckpointError(f"{path}: g_ema style.1.weight is not a matrix")
    w_dim = int(sd["style.1.weight"].shape[0])
    z_dim = int(sd["style.1.weight"].shape[1])
    num_convs = _ros_num_layers(sd, r"convs\.(\d+)\.conv\.weight")
    log_size = num_convs // 2 + 2
    if log_size > int(math.log2(MAX_RESOLUTION)):
        raise CheckpointError(f"{path}: g_ema names {num_convs} convolutions (convs.N), a resolution above "
                              f"{MAX_RESOLUTION}")
    res = 2 ** log_size
    img_channels = int(sd["to_rgb1.conv.weight"].shape[1])
    channels = {"4": int(sd["input.input"].shape[1])}
    for i in range(num_convs // 2):
        channels[str(2 ** (i + 3))] = int(sd[f"convs.{2 * i}.conv.weight"].shape[1])
    for key in [k for k in sd if k.endswith("blur.kernel") or k.endswith("upsample.kernel")]:
        kernel = sd[key] / sd[key].sum()
        expected = torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1]))
        if kernel.shape != (4, 4) or not torch.allclose(kernel, expected / expected.sum(), atol=1e-6):
            raise CheckpointError(f"{path}: {key} is a custom blur kernel; only [1,3,3,1] is supported")
    kwargs = dict(z_dim=z_dim, c_dim=0, w_dim=w_dim, img_resolution=res, img_channels=img_channels,
                  mapping_kwargs=dict(num_layers=n_mlp, lr_multiplier=0.01),
                  synthesis_kwargs=dict(channels=channels, architecture="skip"))
    G = build_network(Generator, kwargs, path, "g_ema sizes", max_parameters)

    def conv_entries(src: str, dst: str, noise_idx: int | None) -> dict:
        weight = sd[f"{src}.conv.weight"][0]
        scale = 1 / math.sqrt(weight.shape[1] * weight.shape[2] * weight.shape[3])
        # Scale folded into the stored weight: demodulation makes it matter only through the 1e-8
        # epsilon, and folding keeps even that identical.
        out = {f"{dst}.weight": weight * scale,
               f"{dst}.affine.weight": sd[f"{src}.conv.modulation.weight"],
               f"{dst}.affine.bias": sd[f"{src}.conv.modulation.bias"],
               f"{dst}.noise_strength": sd[f"{src}.noise.weight"].reshape([]),
               f"{dst}.bias": sd[f"{src}.activate.bias"]}
        noise_key = f"noises.noise_{noise_idx}"
        out[f"{dst}.noise_const"] = (sd[noise_key].reshape(sd[noise_key].shape[-2:]) if noise_key in sd
                                     else G.state_dict()[f"{dst}.noise_const"])
        return out

    def rgb_entries(src: str, dst: str) -> dict:
        return {f"{dst}.weight": sd[f"{src}.conv.weight"][0],
                f"{dst}.affine.weight": sd[f"{src}.conv.modulation.weight"],
                f"{dst}.affine.bias": sd[f"{src}.conv.modulation.bias"],
                f"{dst}.bias": sd[f"{src}.bias"].reshape(-1)}

    try:
        t = {"synthesis.b4.const": sd["input.input"][0]}
        t.update(conv_entries("conv1", "synthesis.b4.conv1", 0))
        t.update(rgb_entries("to_rgb1", "synthesis.b4.torgb"))
        for i in range(num_convs // 2):
            r = 2 ** (i + 3)
            t.update(conv_entries(f"convs.{2 * i}", f"synthesis.b{r}.conv0", 2 * i + 1))
            t.update(conv_entries(f"convs.{2 * i + 1}", f"synthesis.b{r}.conv1", 2 * i + 2))
            t.update(rgb_entries(f"to_rgbs.{i}", f"synthesis.b{r}.torgb"))
        for i in range(n_mlp):
            t[f"mapping.fc{i}.weight"] = sd[f"style.{i + 1}.weight"]
            t[f"mapping.fc{i}.bias"] = sd[f"style.{i + 1}.bias"]
    except KeyError as e:
        raise CheckpointError(f"{path}: g_ema lacks tensor {e}") from None
    for name, buf in G.state_dict().items():
        if name.endswith("resample_filter"):
            t[name] = buf
    info = {"source_format": "rosinality"}
    if latent_avg is not None:
        t["mapping.w_avg"] = latent_avg.reshape(-1).to(torch.float32)
        info["w_avg_source"] = "checkpoint latent_avg"
    else:
        t["mapping.w_avg"] = torch.zeros([w_dim])
    _load_state(G, t, path)
    if latent_avg is None:
        G.mapping.w_avg.copy_(compute_w_avg(G))
        info["w_avg_source"] = "computed: mean mapping of 10,000 z from np.random.RandomState(0)"
    return G.eval(), info


def _rosinality_discriminator(sd: dict, path: Path, res: int, img_channels: int,
                              max_parameters: int | None = None) -> Discriminator:
    _check_state_dict_values(sd, path, "d")
    log_size = int(round(math.log2(res)))
    try:
        channels = {str(res): int(sd["convs.0.0.weight"].shape[0])}
        for i in range(1, log_size - 1):
            channels[str(2 ** (log_size - i + 1))] = int(sd[f"convs.{i}.conv1.0.weight"].shape[0])
        channels["4"] = int(sd["final_conv.0.weight"].shape[0])
        stddev_channels = int(sd["final_conv.0.weight"].shape[1]) - channels["4"]
    except (KeyError, IndexError) as e:
        raise CheckpointError(f"{path}: d lacks tensor {e} (or it has the wrong shape)") from None
    kwargs = dict(c_dim=0, img_resolution=res, img_channels=img_channels, channels=channels,
                  epilogue_kwargs=dict(mbstd_group_size=4, mbstd_num_channels=stddev_channels))
    D = build_network(Discriminator, kwargs, path, "d sizes", max_parameters)
    try:
        t = {f"b{res}.fromrgb.weight": sd["convs.0.0.weight"], f"b{res}.fromrgb.bias": sd["convs.0.1.bias"]}
        for i in range(1, log_size - 1):
            r = 2 ** (log_size - i + 1)
            t[f"b{r}.conv0.weight"] = sd[f"convs.{i}.conv1.0.weight"]
            t[f"b{r}.conv0.bias"] = sd[f"convs.{i}.conv1.1.bias"]
            t[f"b{r}.conv1.weight"] = sd[f"convs.{i}.conv2.1.weight"]
            t[f"b{r}.conv1.bias"] = sd[f"convs.{i}.conv2.2.bias"]
            t[f"b{r}.skip.weight"] = sd[f"convs.{i}.skip.1.weight"]
        t["b4.conv.weight"] = sd["final_conv.0.weight"]
        t["b4.conv.bias"] = sd["final_conv.1.bias"]
        t["b4.fc.weight"] = sd["final_linear.0.weight"]
        t["b4.fc.bias"] = sd["final_linear.0.bias"]
        t["b4.out.weight"] = sd["final_linear.1.weight"]
        t["b4.out.bias"] = sd["final_linear.1.bias"]
    except KeyError as e:
        raise CheckpointError(f"{path}: d lacks tensor {e}") from None
    for name, buf in D.state_dict().items():
        if name.endswith("resample_filter"):
            t[name] = buf
    _load_state(D, t, path)
    return D.eval()


def load_rosinality(path: str | os.PathLike, max_parameters: int | None = None
                    ) -> tuple[Generator, Discriminator | None, dict]:
    """(g_ema, d or None, info) from a rosinality `.pt` (weights-only; at most `max_parameters` per network)."""
    path = Path(path)
    with _untrusted(path, "PyTorch checkpoint"):
        data = read_rosinality(path)
        latent_avg = data.get("latent_avg")
        if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
            latent_avg = None
        if latent_avg is not None and not bool(torch.isfinite(latent_avg).all()):
            raise CheckpointError(f"{path}: tensor latent_avg contains NaN or infinite values")
        if "g_ema" not in data:
            # A pSp / e4e / ReStyle checkpoint: its decoder is a rosinality generator under `decoder.`, and
            # its latent_avg ([n_styles, 512], one w repeated) is that generator's mean w.
            decoder = {k[len("decoder."):]: v for k, v in data["state_dict"].items() if k.startswith("decoder.")}
            w_avg = (latent_avg.reshape(-1, latent_avg.shape[-1])[0]
                     if latent_avg is not None and latent_avg.ndim else None)
            G, info = _rosinality_generator(decoder, path, w_avg, max_parameters)
            return G, None, {**info, "source_format": official_encoders.CHECKPOINT_FORMAT}
        G, info = _rosinality_generator(data["g_ema"], path, latent_avg, max_parameters)
        D = None
        if isinstance(data.get("d"), dict):
            D = _rosinality_discriminator(data["d"], path, G.img_resolution, G.img_channels, max_parameters)
        return G, D, info


# ---------------------------------------------------------------------------------------------
# Native format


def save_native(out_dir: str | os.PathLike, G: Generator, D: Discriminator | None = None, *,
                card: dict | None = None, dtype: torch.dtype = torch.float32,
                extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write `model.safetensors` + `card.json` into out_dir (created; files replaced atomically).

    Tensors are stored as `G.<name>`, `D.<name>` and the `extra_tensors` keys as given; floating-point
    weights of G and D in `dtype`. The card gets the architecture, the sizes and the weights' sha256."""
    def cast(v: torch.Tensor) -> torch.Tensor:
        return v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype)

    tensors = {f"G.{k}": cast(v) for k, v in G.state_dict().items()}
    if D is not None:
        tensors.update({f"D.{k}": cast(v) for k, v in D.state_dict().items()})
    tensors.update(extra_tensors or {})
    full_card = dict(card or {})
    full_card.update({
        "architecture": getattr(G, "architecture", "stylegan2"),
        "generator": G.kwargs_with_channels(),
        "discriminator": D.kwargs_with_channels() if D is not None else None,
        "img_resolution": G.img_resolution, "img_channels": G.img_channels, "z_dim": G.z_dim,
        "w_dim": G.w_dim, "num_ws": G.num_ws, "c_dim": G.c_dim,
        "weights_dtype": str(dtype).replace("torch.", ""),
    })
    return storage.save_folder(out_dir, tensors, full_card, CARD_FORMAT, CARD_VERSION)


def read_card(path: str | os.PathLike) -> dict:
    """The card of a native model (its folder or its card.json)."""
    path = Path(path)
    card_path = storage.file_in_folder(path, CARD_FILE, "model card") if path.is_dir() else path
    if not card_path.is_file():
        raise storage.MissingFileError(f"{path}: no {CARD_FILE} (a native model is a folder with {WEIGHTS_FILE} "
                                       f"and {CARD_FILE})")
    return storage.read_card(card_path, CARD_FORMAT, CARD_VERSION, "model card")


def load_native(path: str | os.PathLike, verify_hash: bool = True, *, trust_card: bool = False,
                max_parameters: int | None = None
                ) -> tuple[Generator, Discriminator | None, dict, dict[str, torch.Tensor]]:
    """(G, D or None, card, extra tensors) from a native model folder.

    The card must carry the weights' sha256 (every folder ganinv writes does) unless `trust_card` is
    True; its network sizes are checked, and each network's parameters counted against `max_parameters`
    (default `storage.MAX_PARAMETERS`), before the weights are read; every weight must be finite."""
    path = Path(path)
    with _untrusted(path, "native model"):
        return _load_native(path, verify_hash, trust_card, max_parameters)


def _load_native(path: Path, verify_hash: bool, trust_card: bool, max_parameters: int | None):
    card = read_card(path)
    card_path = path / CARD_FILE
    sha256 = storage.card_sha256(card, card_path)
    if verify_hash and sha256 is None and not trust_card:
        raise CheckpointError(f"{card_path}: the card has no sha256 of its weights, so they cannot be verified; "
                              "pass trust_card=True (CLI: --trust-card) to load it anyway")
    if not isinstance(card.get("generator"), dict):
        raise CheckpointError(f"{card_path}: the card has no generator kwargs (a mapping under 'generator')")
    # Sizes are checked, and both networks counted, before the weights are read.
    G = build_network(StyleGAN3Generator if card.get("architecture") == STYLEGAN3 else Generator,
                      card["generator"], card_path, "generator", max_parameters)
    D = None
    if card.get("discriminator"):
        D = build_network(Discriminator, card["discriminator"], card_path, "discriminator", max_parameters)
    weights = storage.file_in_folder(path, WEIGHTS_FILE, "model weights file")
    tensors = storage.load_tensors(weights, sha256=sha256 if verify_hash else None, what="model weights file")
    g_t = {k[2:]: v for k, v in tensors.items() if k.startswith("G.")}
    d_t = {k[2:]: v for k, v in tensors.items() if k.startswith("D.")}
    extra = {k: v for k, v in tensors.items() if not (k.startswith("G.") or k.startswith("D."))}
    storage.check_finite(extra, weights)
    _load_state(G, g_t, weights)
    for key in ("img_resolution", "img_channels", "z_dim", "w_dim", "num_ws", "c_dim"):
        if key not in card:
            continue
        value = card[key]
        if isinstance(value, bool) or not isinstance(value, int) or value != int(getattr(G, key)):
            raise CheckpointError(f"{card_path}: card says {key}={str(value)[:40]} but the weights give "
                                  f"{getattr(G, key)}")
    if D is not None and d_t:
        _load_state(D, d_t, weights)
        D.eval()
    else:
        D = None
    return G.eval(), D, card, extra


# ---------------------------------------------------------------------------------------------
# Format detection


@dataclass
class LoadedCheckpoint:
    G: Generator
    D: Discriminator | None
    card: dict
    extra: dict[str, torch.Tensor]


# What torch.save's legacy (non-zip) format writes first: its magic number (a pickled LONG1).
_TORCH_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "native"
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    if path.name == CARD_FILE or path.name == WEIGHTS_FILE:
        return "native-file"
    with open(path, "rb") as f:
        head = f.read(32)
    if head[:2] == b"PK":
        return "torch-zip"
    if head[:1] == b"\x80" and _TORCH_LEGACY_MAGIC in head:  # any pickle protocol torch.save was given
        return "torch-legacy"
    if head[:1] == b"\x80":
        return "pickle"
    raise CheckpointError(f"{path}: unrecognized checkpoint format (expected a native model folder, an "
                          f"NVIDIA .pkl or a rosinality .pt)")


def load_checkpoint(path: str | os.PathLike, *, trust_card: bool = False,
                    max_parameters: int | None = None) -> LoadedCheckpoint:
    """Load any supported checkpoint file or folder.

    `trust_card`: load a native card that lacks the sha256 of its weights. `max_parameters`: the most
    parameters one network (G or D) may have (default `storage.MAX_PARAMETERS`). Any problem with the
    file raises CheckpointError (UnsafeCheckpoint when it would run code) with one line naming it."""
    path = Path(path)
    with _untrusted(path, "checkpoint"):
        fmt = detect_format(path)
        if fmt in ("native", "native-file"):
            G, D, card, extra = load_native(path if fmt == "native" else path.parent, trust_card=trust_card,
                                            max_parameters=max_parameters)
            return LoadedCheckpoint(G, D, card, extra)
        if fmt in ("torch-zip", "torch-legacy"):
            G, D, info = load_rosinality(path, max_parameters)
        else:
            G, D, info = load_nvidia_pickle(path, max_parameters)
        card = {"name": path.stem, "source": {"file": path.name, "sha256": sha256_file(path), **info}}
        return LoadedCheckpoint(G, D, card, {})
