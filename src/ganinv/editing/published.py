"""Edit directions published by other projects, read into ganinv's `Direction` format.

Formats read (all in W; each file is untrusted: numpy without pickles, torch weights-only):

- **InterFaceGAN boundaries** (Shen et al., "Interpreting the Latent Space of GANs for Semantic Face
  Editing", CVPR 2020): ``.npy`` arrays ``[1, w_dim]`` holding the unit normal n of a linear attribute
  boundary; an edit is ``w + a * n``. That repository's ``*_w_boundary.npy`` files are in W; its other
  StyleGAN/PGGAN boundaries are in Z, which an offset in W cannot express, so they are refused (as are
  GANSpace's Z decompositions, told by their file names or their all-ones ``lat_stdev``).
- **encoder4editing / ReStyle / PTI direction tensors** (Tov et al., "Designing an Encoder for StyleGAN
  Image Manipulation", 2021): ``interfacegan_directions/*.pt`` holding a tensor ``[1, w_dim]`` (edit
  ``w + a * d``) or ``[1, num_ws, w_dim]`` per ws index (their pose direction); and
  ``ganspace_pca/*.pt``, a dict ``{'comp': [K, 1, w_dim], 'mean': [1, w_dim], 'std': [K]}`` that their
  ``ganspace.edit`` applies to a ws range ``start:end`` (end excluded) per edit ``(pca_idx, start, end,
  strength)``.
- **GANSpace** (Härkönen et al., "GANSpace: Discovering Interpretable GAN Controls", NeurIPS 2020):
  the decomposition ``.npz`` (``lat_comp [K, 1, w_dim]``, ``lat_mean``, ``lat_stdev [K]``; an edit adds
  ``sigma * lat_stdev[k] * lat_comp[k]`` to a ws range), and the named edit ``.pkl`` its interactive tool
  saves (one component with ``lat_stdev``, its ws range ``edit_start:edit_end`` and ``latent_space``),
  read by a restricted unpickler that builds numpy arrays and nothing else.

Imported directions keep the file's vectors and get ganinv's strength unit: the standard deviation of
the model's prior latents along each vector (`prior_std`), so strength 1 means the same thing as for
every other Direction. The file's own unit is recorded in ``settings['source']``, and
``settings['strength_per_source_unit'][k]`` converts: our strength = their value * that factor (their
value being InterFaceGAN's / e4e's factor ``a``, or GANSpace's sigma). `source_strength` does it for
additive edits; `strength_to_reach` for edits that *set* the coordinate instead (e4e's ``ganspace.edit``,
and InterFaceGAN's ``linear_interpolate`` on a single W code, both measure it from the file's mean).
"""
from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.storage import sha256_file
from ..utils import parse_layers
from .direction import Direction, DirectionError, load_direction, model_identity, prior_std, split_spec

#: File name endings read as published directions (anything else goes to ganinv's own loader).
PUBLISHED_SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".pkl")
#: Refuse absurd files before reading them (the largest real ones are a few hundred kB).
MAX_FILE_BYTES = 64 * 2 ** 20

# InterFaceGAN's file names: `<gan>_<dataset>_<attribute>[_c_<conditions>][_w]_boundary.npy`; without `_w`
# the boundary lives in Z.
_INTERFACEGAN_Z_NAME = re.compile(r"^(stylegan|pggan)_.+_boundary$")
_INTERFACEGAN_W_NAME = re.compile(r"_w_boundary$")
# GANSpace's decompositions: `<model>-<class>_<layer>_<estimator>_c<K>_n<N>[_w][_seed<S>].npz`; without `_w`
# the components live in Z (and their lat_stdev is all ones).
_GANSPACE_NAME = re.compile(r"^.+_n\d+(?P<w>_w)?(_seed\d+)?$")


@dataclass
class PublishedDirection:
    """A direction file as its project wrote it, before it meets a model.

    vectors: [K, w_dim] ('w') or [K, num_ws, w_dim] ('w+'), float32, as in the file.
    source_unit: [K]: their edit adds `value * source_unit[k] * vectors[k]`.
    mean: [w_dim] origin their coordinates are measured from (zeros when the format has none).
    layers: the ws indices the file says it was made for (None: all).
    """

    format: str
    space: str
    vectors: torch.Tensor
    source_unit: torch.Tensor
    units: str
    mean: torch.Tensor
    name: str
    method: str
    layers: list[int] | None = None
    labels: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def w_dim(self) -> int:
        return int(self.vectors.shape[-1])


def is_published_file(path: str | os.PathLike) -> bool:
    """Whether `path` names a file in one of the published formats (by its ending)."""
    return Path(path).suffix.lower() in PUBLISHED_SUFFIXES


# ---------------------------------------------------------------------------------------------- readers


def read_published_direction(path: str | os.PathLike, source_space: str = "auto") -> PublishedDirection:
    """Read an InterFaceGAN / e4e / GANSpace direction file (see the module docstring).

    `source_space`: 'auto' refuses InterFaceGAN's and GANSpace's Z-space files (by their file names, and
    GANSpace's all-ones lat_stdev); 'w' reads any file as a W direction. Raises DirectionError with one
    line naming the file and the problem."""
    path = Path(path)
    if source_space not in ("auto", "w"):
        raise DirectionError(f"source_space must be 'auto' or 'w', got {source_space!r}")
    if not path.is_file():
        raise DirectionError(f"{path}: no such direction file")
    size = path.stat().st_size
    if size == 0:
        raise DirectionError(f"{path}: file is empty")
    if size > MAX_FILE_BYTES:
        raise DirectionError(f"{path}: {size} bytes is too large for a direction file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        found = _from_array(path, _load_npy(path), "interfacegan-npy")
    elif suffix == ".npz":
        found = _from_npz(path)
    elif suffix in (".pt", ".pth"):
        found = _from_torch(path)
    elif suffix == ".pkl":
        found = _from_ganspace_pickle(path)
    else:
        raise DirectionError(f"{path}: not a published direction format (expected one of "
                             f"{', '.join(PUBLISHED_SUFFIXES)})")
    if source_space == "auto" and found.format in ("interfacegan-npy", "e4e-interfacegan-pt"):
        stem = path.stem
        if _INTERFACEGAN_Z_NAME.match(stem) and not _INTERFACEGAN_W_NAME.search(stem):
            raise DirectionError(f"{path}: an InterFaceGAN boundary named like this lives in Z (its W boundaries "
                                 "end in _w_boundary.npy); ganinv edits in W, so it cannot be applied (pass "
                                 "source_space='w' / --source-space w if it is a W boundary)")
    if source_space == "auto" and found.format == "ganspace-npz":
        match = _GANSPACE_NAME.match(path.stem)
        if (match and not match.group("w")) or bool((found.source_unit == 1).all()):
            raise DirectionError(f"{path}: this GANSpace decomposition lives in Z (its name has no _w, or its "
                                 "lat_stdev is all ones as GANSpace writes for Z); ganinv edits in W (pass "
                                 "source_space='w' / --source-space w if it is a W decomposition)")
    if not torch.isfinite(found.vectors).all() or not torch.isfinite(found.source_unit).all():
        raise DirectionError(f"{path}: the direction contains NaN or inf")
    norms = found.vectors.flatten(1).norm(dim=1)
    if (norms == 0).any():
        raise DirectionError(f"{path}: component {int((norms == 0).nonzero()[0])} is the zero vector")
    return found


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DirectionError(f"{path}: not a readable .npy array ({_first_line(e)})") from None
    if not isinstance(array, np.ndarray):
        raise DirectionError(f"{path}: expected one .npy array")
    return array


def _as_float(path: Path, array, what: str) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        if not array.is_floating_point():
            raise DirectionError(f"{path}: {what} has dtype {array.dtype}; expected floating point")
        return array.to(torch.float32)
    array = np.asarray(array)
    if array.dtype.kind != "f":
        raise DirectionError(f"{path}: {what} has dtype {array.dtype}; expected floating point")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _from_array(path: Path, array, fmt: str) -> PublishedDirection:
    """One InterFaceGAN-style vector: [w_dim], [1, w_dim] or, per ws index, [1, num_ws, w_dim]."""
    v = _as_float(path, array, "the direction")
    shape = tuple(v.shape)
    notes = []
    if v.ndim == 1:
        v = v.unsqueeze(0)
    if v.ndim == 2 and v.shape[0] == 1:
        space, vectors = "w", v
    elif v.ndim == 3 and v.shape[0] == 1:
        rows = v[0]
        if bool((rows == rows[0]).all()):
            # The same vector at every ws index (e4e's pose.pt) is a W direction on all layers.
            space, vectors = "w", rows[:1].clone()
            notes.append(f"the file repeats one vector for {rows.shape[0]} ws indices; read as a W direction")
        else:
            space, vectors = "w+", v
    else:
        raise DirectionError(f"{path}: a direction array must have shape [w_dim], [1, w_dim] or "
                             f"[1, num_ws, w_dim], got {list(shape)}")
    if vectors.shape[-1] < 2:
        raise DirectionError(f"{path}: a direction array must have shape [w_dim], [1, w_dim] or "
                             f"[1, num_ws, w_dim], got {list(shape)}")
    source = "InterFaceGAN" if fmt == "interfacegan-npy" else "encoder4editing"
    return PublishedDirection(
        format=fmt, space=space, vectors=vectors, source_unit=torch.ones(1),
        units=f"{source}: an edit adds a * v, v the file's vector (shape {list(shape)}) and a their factor",
        mean=torch.zeros(vectors.shape[-1]), name=path.stem, method="interfacegan", labels=[path.stem],
        notes=notes, extra={"file_shape": list(shape)})


def _pca(path: Path, fmt: str, comp, mean, std) -> PublishedDirection:
    """A PCA basis (e4e's ganspace_pca, GANSpace's lat_*): comp [K, 1, w_dim] or [K, w_dim], mean
    [1, w_dim] or [w_dim], std [K]."""
    comp = _as_float(path, comp, "the components")
    mean = _as_float(path, mean, "the mean")
    std = _as_float(path, std, "the standard deviations").reshape(-1)
    shape = list(comp.shape)
    if comp.ndim == 3 and comp.shape[1] == 1:
        comp = comp[:, 0]
    if comp.ndim != 2 or comp.shape[0] < 1 or comp.shape[1] < 2:
        raise DirectionError(f"{path}: components must have shape [K, 1, w_dim] or [K, w_dim], got {shape}")
    if mean.numel() != comp.shape[1]:
        raise DirectionError(f"{path}: the mean has {mean.numel()} values for {comp.shape[1]}-dimensional components")
    if std.numel() != comp.shape[0]:
        raise DirectionError(f"{path}: {std.numel()} standard deviations for {comp.shape[0]} components")
    if (std <= 0).any():
        raise DirectionError(f"{path}: standard deviations must be positive")
    source = "encoder4editing ganspace.edit" if fmt == "e4e-ganspace-pt" else "GANSpace"
    units = (f"{source}: sigma units; an edit adds sigma * std[k] * comp[k] "
             + ("(their edit sets the coordinate to `strength`, measured from `mean`)" if fmt == "e4e-ganspace-pt"
                else "to a ws range"))
    return PublishedDirection(
        format=fmt, space="w", vectors=comp.clone(), source_unit=std.clone(), units=units,
        mean=mean.reshape(-1).clone(), name=path.stem, method="ganspace",
        labels=[f"{path.stem} PC{i}" for i in range(comp.shape[0])], extra={"file_shape": shape})


def _from_npz(path: Path) -> PublishedDirection:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DirectionError(f"{path}: not a readable .npz archive ({_first_line(e)})") from None
    if {"lat_comp", "lat_mean", "lat_stdev"} <= set(arrays):
        return _pca(path, "ganspace-npz", arrays["lat_comp"], arrays["lat_mean"], arrays["lat_stdev"])
    if "w" in arrays:
        raise DirectionError(f"{path}: holds a latent ('w', as projected_w.npz), not a direction")
    raise DirectionError(f"{path}: expected GANSpace's lat_comp, lat_mean and lat_stdev arrays, found "
                         f"{sorted(arrays)}")


def _from_torch(path: Path) -> PublishedDirection:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise DirectionError(f"{path}: refused by the weights-only loader ({_first_line(e)})") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as e:
        raise DirectionError(f"{path}: not a readable PyTorch file ({type(e).__name__}: {_first_line(e)})") from None
    if isinstance(data, torch.Tensor):
        return _from_array(path, data, "e4e-interfacegan-pt")
    if isinstance(data, dict) and {"comp", "mean", "std"} <= set(data):
        if not all(isinstance(data[k], torch.Tensor) for k in ("comp", "mean", "std")):
            raise DirectionError(f"{path}: 'comp', 'mean' and 'std' must be tensors")
        return _pca(path, "e4e-ganspace-pt", data["comp"], data["mean"], data["std"])
    if isinstance(data, dict) and ("state_dict" in data or "g_ema" in data):
        raise DirectionError(f"{path}: is a model checkpoint, not a direction file")
    what = f"dict with keys {sorted(map(str, data))[:8]}" if isinstance(data, dict) else type(data).__name__
    raise DirectionError(f"{path}: expected a direction tensor or an e4e ganspace dict {{comp, mean, std}}, "
                         f"found a {what}")


def _numpy_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise DirectionError("unexpected array subtype in pickle")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise DirectionError("numpy scalar with a non-numeric dtype in pickle")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_dtype(name, align=False, copy=False):
    dtype = np.dtype(name, align, copy)
    if dtype.hasobject:
        raise DirectionError("object arrays are not allowed in a direction pickle")
    return dtype


_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _numpy_dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Builds dicts, lists, numbers, strings and numeric numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str):
        target = _ARRAY_GLOBALS.get((module, name))
        if target is None:
            raise DirectionError(f"refusing to load global {module}.{name} from a direction pickle")
        return target

    def persistent_load(self, pid):
        raise DirectionError("refusing a pickle persistent id")


def _from_ganspace_pickle(path: Path) -> PublishedDirection:
    try:
        with open(path, "rb") as f:
            data = _ArrayUnpickler(io.BytesIO(f.read())).load()
    except DirectionError as e:
        raise DirectionError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError) as e:
        raise DirectionError(f"{path}: not a readable GANSpace direction pickle ({type(e).__name__}: "
                             f"{_first_line(e)})") from None
    needed = ("lat_comp", "lat_stdev", "edit_start", "edit_end")
    if not isinstance(data, dict) or not all(k in data for k in needed):
        keys = sorted(map(str, data))[:8] if isinstance(data, dict) else type(data).__name__
        raise DirectionError(f"{path}: expected GANSpace's saved edit (keys {', '.join(needed)}), found {keys}")
    space = str(data.get("latent_space", "W"))
    if space.upper() != "W":
        raise DirectionError(f"{path}: this GANSpace edit lives in {space} space; ganinv edits in W")
    if str(data.get("edit_type", "latent")) != "latent":
        raise DirectionError(f"{path}: a GANSpace {data.get('edit_type')!r} edit changes activations, not latents")
    try:
        stdev = float(data["lat_stdev"])
        start, end = int(data["edit_start"]), int(data["edit_end"])
    except (TypeError, ValueError):
        raise DirectionError(f"{path}: lat_stdev, edit_start and edit_end must be numbers") from None
    comp = _as_float(path, data["lat_comp"], "lat_comp").reshape(1, -1)
    found = _pca(path, "ganspace-pkl", comp, torch.zeros(comp.shape[1]), torch.tensor([stdev]))
    if not 0 <= start < end:
        raise DirectionError(f"{path}: bad ws range edit_start={start}, edit_end={end}")
    name = str(data.get("name") or path.stem)
    found.name = name
    found.labels = [name]
    found.layers = list(range(start, end))
    found.units = "GANSpace: sigma units; an edit adds sigma * lat_stdev * lat_comp to ws edit_start:edit_end"
    found.extra.update({"component_index": data.get("component_index"), "edit_start": start, "edit_end": end,
                        "model_name": data.get("model_name"), "output_class": data.get("output_class")})
    return found


# ---------------------------------------------------------------------------------------------- import


def import_direction(path: str | os.PathLike, model: Any, *, name: str | None = None,
                     layers: str | list[int] | None = None, source_space: str = "auto",
                     num_std_samples: int = 10_000, seed: int = 0) -> Direction:
    """Read a published direction file and express it as a ganinv Direction for `model` (a Model or G).

    layers: ws indices to apply it to ('all', '0-3', '8-9', ...); default: the file's own range when it
    records one (GANSpace's saved edits), else all (InterFaceGAN and e4e directions are applied to every
    ws index by their code). Strength is in prior-std units of `model` (module docstring); the file's own
    unit is kept in ``settings``. Raises DirectionError (one line) when the file does not fit the model."""
    path = Path(path)
    found = read_published_direction(path, source_space=source_space)
    G = getattr(model, "G", model)
    where = f"{path}"
    if found.w_dim != G.w_dim:
        raise DirectionError(f"{where}: a {found.w_dim}-dimensional direction does not fit this model "
                             f"(w_dim={G.w_dim})")
    if found.space == "w+" and found.vectors.shape[1] != G.num_ws:
        raise DirectionError(f"{where}: the direction has one vector per ws index for num_ws="
                             f"{found.vectors.shape[1]}, but the model has num_ws={G.num_ws}")
    if layers is not None:
        try:
            layer_list = parse_layers(layers, G.num_ws)
        except ValueError as e:
            raise DirectionError(f"{where}: {e}") from None
        layers_from = "given"
    elif found.layers is not None:
        bad = [i for i in found.layers if i >= G.num_ws]
        if bad:
            raise DirectionError(f"{where}: the file's ws indices {found.layers} do not fit "
                                 f"this model (num_ws={G.num_ws}); give layers (--layers) explicitly")
        layer_list, layers_from = list(found.layers), "file"
    else:
        layer_list, layers_from = list(range(G.num_ws)), "all (as the file's code applies it)"
    std = prior_std(G, found.space, found.vectors, layer_list, num_samples=num_std_samples, seed=seed)
    if (std <= 0).any():
        raise DirectionError(f"{where}: the model's prior latents do not vary along this direction")
    norms_sq = found.vectors.flatten(1).square().sum(dim=1)
    settings = {
        "source": {"format": found.format, "file": path.name, "sha256": sha256_file(path), "units": found.units,
                   "source_unit": [float(u) for u in found.source_unit], **found.extra},
        "strength_per_source_unit": [float(u / s) for u, s in zip(found.source_unit, std)],
        "vector_norm": [float(n) for n in norms_sq.sqrt()],
        "layers_from": layers_from, "num_std_samples": num_std_samples, "seed": seed,
    }
    if found.mean.abs().max() > 0:
        settings["source_mean"] = [float(x) for x in found.mean]
    if found.notes:
        settings["notes"] = found.notes
    return Direction(
        name=name or found.name, method=found.method, space=found.space, vectors=found.vectors,
        layers=layer_list, std=std, num_ws=G.num_ws, w_dim=G.w_dim,
        scores=[float(u) for u in found.source_unit] if found.method == "ganspace" else None,
        score_name="source std" if found.method == "ganspace" else "",
        labels=list(found.labels) if found.labels and len(found.labels) == len(found.vectors) else None,
        settings=settings, model=model_identity(model))


def load_any_direction(spec: str | os.PathLike | Direction, model: Any = None) -> tuple[Direction, int | None]:
    """`load_direction` that also reads published files: 'FILE.npy', 'FILE.pt:3', ... are imported for
    `model` (all ws indices, or the file's own range); anything else goes to `load_direction`."""
    if isinstance(spec, Direction):
        return spec, None
    base, index = split_spec(str(spec))
    if is_published_file(base) and Path(base).expanduser().is_file():
        G = getattr(model, "G", model)
        if G is None or not hasattr(G, "w_dim"):
            raise DirectionError(f"{base}: a published direction file needs the model it is applied to")
        direction = import_direction(Path(base).expanduser(), model)
        if index is not None:
            direction._check_index(index)
        return direction, index
    return load_direction(spec, model=model)


# ---------------------------------------------------------------------------------------------- units


def _source_factor(direction: Direction, index: int) -> float:
    factors = (direction.settings or {}).get("strength_per_source_unit")
    if not factors:
        raise DirectionError(f"direction {direction.name!r} was not imported from a published file")
    return float(factors[direction._check_index(index)])


def source_strength(direction: Direction, value: float | torch.Tensor, index: int = 0):
    """Our strength for an additive edit of `value` in the file's units (InterFaceGAN / e4e factor a,
    GANSpace sigma): `direction.apply(ws, source_strength(d, a))` == their ``w + a * unit * v``."""
    return value * _source_factor(direction, index)


def strength_to_reach(direction: Direction, ws: torch.Tensor, value: float, index: int = 0) -> torch.Tensor:
    """Per-sample strengths [N] that *set* the file's coordinate of ws to `value` (in their units),
    as e4e's ``ganspace.edit`` does (and InterFaceGAN's ``linear_interpolate`` for one W code): the
    coordinate is <w - mean, v> / (|v|^2 * unit), read at the first ws index."""
    index = direction._check_index(index)
    if direction.space != "w":
        raise DirectionError(f"direction {direction.name!r}: coordinates are defined for W directions only")
    unit = float(direction.settings["source"]["source_unit"][index])
    mean = torch.tensor(direction.settings.get("source_mean") or [0.0] * direction.w_dim)
    v = direction.vectors[index]
    w0 = (ws[:, 0] if ws.ndim == 3 else ws).detach().float().cpu()
    coord = ((w0 - mean) @ v) / (v.dot(v) * unit)
    return (value - coord) * _source_factor(direction, index)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
