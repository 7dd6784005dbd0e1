"""Reading and writing generator checkpoints: NVIDIA pickles (without running their code), rosinality
`.pt` files, and ganinv's native format (`model.safetensors` + `card.json`).

Every foreign format is described here by a table of key-name mappings rather than by special cases
scattered through the code base.

NVIDIA's stylegan2-ada-pytorch (and the stylegan3 repository's stylegan2 config) pickle whole Python
modules: `torch_utils.persistence` stores each network class's source text and `pickle.load` executes it.
We never do. A restricted unpickler resolves only a short allow-list of globals; network objects become
inert records (class name, init kwargs, state), from which our own classes are built and the tensors
loaded by name. Anything else in the pickle raises `UnsafeCheckpoint` before it can run.
"""
from __future__ import annotations

import argparse
import collections
import io
import math
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import storage
from .prior import compute_w_avg
from .storage import CARD_FILE, WEIGHTS_FILE, CheckpointError, sha256_file
from .stylegan2 import Discriminator, Generator
from .stylegan3 import ARCHITECTURE as STYLEGAN3, Generator as StyleGAN3Generator

CARD_FORMAT = "ganinv-model"
CARD_VERSION = 1


class UnsafeCheckpoint(CheckpointError):
    """A pickle asked for something outside the allow-list (it may try to run code)."""


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
        return _plain(self.state.get("_init_kwargs", {}) if isinstance(self.state, dict) else {})

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """All parameters and buffers of the module tree, by their state-dict names."""
        out: dict[str, torch.Tensor] = {}
        state = self.state if isinstance(self.state, dict) else {}
        for group in ("_parameters", "_buffers"):
            for name, value in (state.get(group) or {}).items():
                if value is not None:
                    out[prefix + name] = value.detach().clone() if isinstance(value, torch.Tensor) else value
        for name, child in (state.get("_modules") or {}).items():
            if isinstance(child, PersistentRecord):
                out.update(child.tensors(prefix + name + "."))
            elif child is not None:
                raise UnsafeCheckpoint(f"unexpected module object {type(child).__name__} in pickle")
        return out


class _EasyDict(dict):
    """Inert replacement for dnnlib.util.EasyDict."""


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
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


def read_nvidia_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """Unpickle an NVIDIA network pickle into inert records, without executing any of its code."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = _RestrictedUnpickler(f).load()
    except UnsafeCheckpoint as e:
        raise UnsafeCheckpoint(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable NVIDIA network pickle ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict of networks (G, D, G_ema), got {type(data).__name__}")
    return data


def _build_from_record(record: PersistentRecord, path: Path, role: str):
    tensors = record.tensors()
    is_stylegan3 = record.is_stylegan3_source or any(k.startswith("synthesis.input.") for k in tensors)
    try:
        if role == "G" and is_stylegan3:
            # training.networks_stylegan3: our class takes the official kwargs as they are.
            if record.class_name not in _NVIDIA_GENERATORS:
                raise CheckpointError(f"{path}: unsupported generator class {record.class_name}")
            net = StyleGAN3Generator(**_drop_ignored(record.init_kwargs))
        elif role == "G":
            if record.class_name not in _NVIDIA_GENERATORS:
                raise CheckpointError(f"{path}: unsupported generator class {record.class_name}")
            kwargs = _generator_kwargs_from_nvidia(record.init_kwargs, tensors)
            net = Generator(**kwargs)
        else:
            if record.class_name not in _NVIDIA_DISCRIMINATORS:
                raise CheckpointError(f"{path}: unsupported discriminator class {record.class_name}")
            kwargs = _discriminator_kwargs_from_nvidia(record.init_kwargs, tensors)
            net = Discriminator(**kwargs)
    except (TypeError, KeyError, ValueError) as e:
        kind = f"StyleGAN3 {record.class_name}" if is_stylegan3 else record.class_name
        raise CheckpointError(f"{path}: cannot rebuild {kind} from its init kwargs ({e})") from None
    _load_state(net, tensors, path)
    return net


def _load_state(net: torch.nn.Module, tensors: dict[str, torch.Tensor], path) -> None:
    """Load foreign or native tensors into one of our networks (exact keys and shapes, as float32)."""
    storage.load_state(net, tensors, path, what="network", error=CheckpointError, dtype=torch.float32)


def load_nvidia_pickle(path: str | os.PathLike) -> tuple[Generator, Discriminator | None, dict]:
    """(G_ema or G, D or None, info) from a stylegan2-ada-pytorch / stylegan3-repo network pickle."""
    path = Path(path)
    data = read_nvidia_pickle(path)
    g_record = data.get("G_ema", data.get("G"))
    if not isinstance(g_record, PersistentRecord):
        raise CheckpointError(f"{path}: no generator (G_ema or G) in the pickle; keys: {sorted(map(str, data))}")
    G = _build_from_record(g_record, path, "G")
    D = None
    if isinstance(data.get("D"), PersistentRecord):
        D = _build_from_record(data["D"], path, "D")
    info = {"source_format": "nvidia-pickle", "generator_key": "G_ema" if "G_ema" in data else "G",
            "w_avg_source": "checkpoint"}
    return G.eval(), (D.eval() if D is not None else None), info


# ---------------------------------------------------------------------------------------------
# rosinality/stylegan2-pytorch checkpoints


def _rosinality_safe_globals():
    return [argparse.Namespace]


def read_rosinality(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_rosinality_safe_globals()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpoint(f"{path}: refused by the weights-only loader ({str(e).splitlines()[0]})") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(data, dict) or "g_ema" not in data:
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: expected a rosinality checkpoint with a 'g_ema' state dict, found {keys}")
    return data


def _ros_num_layers(keys, pattern) -> int:
    found = {int(m.group(1)) for k in keys for m in [re.match(pattern, k)] if m}
    return max(found) + 1 if found else 0


def _rosinality_generator(sd: dict, path: Path, latent_avg: torch.Tensor | None) -> tuple[Generator, dict]:
    n_mlp = _ros_num_layers(sd, r"style\.(\d+)\.weight")  # style.0 is PixelNorm
    n_mlp -= 1
    if n_mlp < 1 or "input.input" not in sd:
        raise CheckpointError(f"{path}: g_ema is not a rosinality StyleGAN2 generator state dict")
    w_dim = int(sd["style.1.weight"].shape[0])
    z_dim = int(sd["style.1.weight"].shape[1])
    num_convs = _ros_num_layers(sd, r"convs\.(\d+)\.conv\.weight")
    log_size = num_convs // 2 + 2
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
    G = Generator(**kwargs)

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


def _rosinality_discriminator(sd: dict, path: Path, res: int, img_channels: int) -> Discriminator:
    log_size = int(round(math.log2(res)))
    channels = {str(res): int(sd["convs.0.0.weight"].shape[0])}
    for i in range(1, log_size - 1):
        channels[str(2 ** (log_size - i + 1))] = int(sd[f"convs.{i}.conv1.0.weight"].shape[0])
    channels["4"] = int(sd["final_conv.0.weight"].shape[0])
    stddev_channels = int(sd["final_conv.0.weight"].shape[1]) - channels["4"]
    D = Discriminator(c_dim=0, img_resolution=res, img_channels=img_channels, channels=channels,
                      epilogue_kwargs=dict(mbstd_group_size=4, mbstd_num_channels=stddev_channels))
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


def load_rosinality(path: str | os.PathLike) -> tuple[Generator, Discriminator | None, dict]:
    path = Path(path)
    data = read_rosinality(path)
    latent_avg = data.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        latent_avg = None
    G, info = _rosinality_generator(data["g_ema"], path, latent_avg)
    D = None
    if isinstance(data.get("d"), dict):
        D = _rosinality_discriminator(data["d"], path, G.img_resolution, G.img_channels)
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
    card_path = path / CARD_FILE if path.is_dir() else path
    if not card_path.is_file():
        raise storage.MissingFileError(f"{path}: no {CARD_FILE} (a native model is a folder with {WEIGHTS_FILE} "
                                       f"and {CARD_FILE})")
    return storage.read_card(card_path, CARD_FORMAT, CARD_VERSION, "model card")


def load_native(path: str | os.PathLike, verify_hash: bool = True
                ) -> tuple[Generator, Discriminator | None, dict, dict[str, torch.Tensor]]:
    """(G, D or None, card, extra tensors) from a native model folder."""
    path = Path(path)
    card = read_card(path)
    weights = path / WEIGHTS_FILE
    tensors = storage.load_tensors(weights, sha256=card.get("sha256") if verify_hash else None,
                                   what="model weights file")
    g_t = {k[2:]: v for k, v in tensors.items() if k.startswith("G.")}
    d_t = {k[2:]: v for k, v in tensors.items() if k.startswith("D.")}
    extra = {k: v for k, v in tensors.items() if not (k.startswith("G.") or k.startswith("D."))}
    try:
        G = (StyleGAN3Generator if card.get("architecture") == STYLEGAN3 else Generator)(**card["generator"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: card's generator kwargs are invalid ({e})") from None
    _load_state(G, g_t, weights)
    for key in ("img_resolution", "img_channels", "z_dim", "w_dim", "num_ws", "c_dim"):
        if key in card and int(card[key]) != int(getattr(G, key)):
            raise CheckpointError(f"{path}: card says {key}={card[key]} but the weights give {getattr(G, key)}")
    D = None
    if card.get("discriminator") and d_t:
        try:
            D = Discriminator(**card["discriminator"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: card's discriminator kwargs are invalid ({e})") from None
        _load_state(D, d_t, weights)
        D.eval()
    return G.eval(), D, card, extra


# ---------------------------------------------------------------------------------------------
# Format detection


@dataclass
class LoadedCheckpoint:
    G: Generator
    D: Discriminator | None
    card: dict
    extra: dict[str, torch.Tensor]


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "native"
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    if path.name == CARD_FILE or path.name == WEIGHTS_FILE:
        return "native-file"
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK":
        return "torch-zip"
    if head[:1] == b"\x80":
        return "pickle"
    raise CheckpointError(f"{path}: unrecognized checkpoint format (expected a native model folder, an "
                          f"NVIDIA .pkl or a rosinality .pt)")


def load_checkpoint(path: str | os.PathLike) -> LoadedCheckpoint:
    """Load any supported checkpoint file or folder."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt in ("native", "native-file"):
        G, D, card, extra = load_native(path if fmt == "native" else path.parent)
        return LoadedCheckpoint(G, D, card, extra)
    if fmt == "torch-zip":
        G, D, info = load_rosinality(path)
    else:
        # Legacy (non-zip) torch.save files also start with a pickle header; they hold a magic
        # number first, which the NVIDIA reader refuses safely. Try rosinality then.
        try:
            G, D, info = load_nvidia_pickle(path)
        except UnsafeCheckpoint:
            raise
        except CheckpointError as nvidia_error:
            try:
                G, D, info = load_rosinality(path)
            except CheckpointError:
                raise nvidia_error from None
    card = {"name": path.stem, "source": {"file": path.name, "sha256": sha256_file(path), **info}}
    return LoadedCheckpoint(G, D, card, {})
