"""`Direction`: an editing direction in W, W+ or StyleSpace, its strength units, and its files.

A Direction holds K components found by one finder (SeFa, GANSpace, InterFaceGAN, StyleSpace). Each
component is a vector in one of three spaces:

- ``w``:  vectors [K, w_dim], added to the ws indices listed in ``layers``;
- ``w+``: vectors [K, num_ws, w_dim], added per ws index (only the indices in ``layers``);
- ``s``:  vectors [K, S] over the concatenated style channels of ``G.synthesis.style_layers()``
          (``style_layout`` names each layer and its channel count); applied as style offsets,
          ``G.synthesis(ws, style_offsets=...)``, never as a change of ws.

Strength is measured in units of the standard deviation of prior latents along the component
(``std``, computed at find time from seeded prior samples), so a strength of +/-3 is a large but
in-distribution edit whichever finder made the direction.

Files: ``NAME.json`` (everything but the vectors, plus the sha256 of the tensor file) +
``NAME.safetensors`` (key ``vectors``), read and written through `ganinv.models.storage` like every
other saved file; a specification ``NAME:i`` selects component i. A ``.npy`` vectors file (the array
itself, float) is read too. Direction files are untrusted input: the vectors file must be a plain file
name in the same folder (no path, no link leading elsewhere), every number finite, and any problem is
one `DirectionError` line naming the file.
"""
from __future__ import annotations

import os
import re
import struct
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..models import storage
from ..models.prior import sample_prior
from ..utils import jsonable
from ..errors import GanInvError

FORMAT = "ganinv-direction"
FORMAT_VERSION = 1
SPACES = ("w", "w+", "s")
UNITS = "prior_std"  # strength 1 = one standard deviation of prior latents along the component
#: A direction's JSON is small (labels of a few thousand style channels at most); its vectors file holds
#: K vectors of at most num_ws * w_dim (or all style channels) floats.
MAX_DIRECTION_JSON_BYTES = 16 * 2 ** 20
MAX_VECTORS_BYTES = 1 * 2 ** 30
#: Failures reading an untrusted direction file can raise besides DirectionError.
_FILE_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OSError, EOFError, RuntimeError,
                RecursionError, OverflowError, MemoryError, struct.error, zipfile.BadZipFile, UnicodeError)


class DirectionError(GanInvError):
    """A direction file or specification that cannot be used (missing, malformed, mismatched)."""


@dataclass
class Direction:
    """K editing components of one finder; see the module docstring for the three spaces.

    Attributes:
        name: short name, also the file stem.
        method: the finder that made it ('sefa', 'ganspace', 'interfacegan', 'stylespace', ...).
        space: 'w', 'w+' or 's'.
        vectors: [K, w_dim] ('w'), [K, num_ws, w_dim] ('w+') or [K, S] ('s'), float32.
        layers: ws indices the components apply to (for 's': the ws indices of the touched layers).
        std: [K] prior standard deviation along each component (the unit of strength).
        num_ws, w_dim: the generator's sizes, checked when applying.
        scores: one number per component (eigenvalue, variance, held-out accuracy, effect size).
        score_name: what ``scores`` are.
        labels: a readable name per component (e.g. 'b16.conv1[12]' for a style channel).
        settings: the finder's settings, for reproducibility.
        style_layout: for 's': [(layer name, number of channels), ...] in style_layers() order.
        model: {'name', 'sha256'} of the model the direction was found on, when known.
    """

    name: str
    method: str
    space: str
    vectors: torch.Tensor
    layers: list[int]
    std: torch.Tensor
    num_ws: int
    w_dim: int
    scores: list[float] | None = None
    score_name: str = ""
    labels: list[str] | None = None
    settings: dict = field(default_factory=dict)
    style_layout: list[tuple[str, int]] | None = None
    model: dict = field(default_factory=dict)
    units: str = UNITS

    def __post_init__(self) -> None:
        self.vectors = torch.as_tensor(self.vectors).detach().float().cpu()
        self.std = torch.as_tensor(self.std).detach().float().cpu().reshape(-1)
        self.layers = [int(i) for i in self.layers]
        if self.style_layout is not None:
            self.style_layout = [(str(n), int(c)) for n, c in self.style_layout]
        self.validate()

    # ------------------------------------------------------------------ checks

    def validate(self) -> None:
        """Raise DirectionError when the fields are inconsistent."""
        where = f"direction {self.name!r}"
        if self.space not in SPACES:
            raise DirectionError(f"{where}: space must be one of {SPACES}, got {self.space!r}")
        if self.units != UNITS:
            raise DirectionError(f"{where}: unknown strength units {self.units!r} (expected {UNITS!r})")
        v = self.vectors
        if self.space == "w":
            expected = f"[K, {self.w_dim}]"
            ok = v.ndim == 2 and v.shape[1] == self.w_dim
        elif self.space == "w+":
            expected = f"[K, {self.num_ws}, {self.w_dim}]"
            ok = v.ndim == 3 and tuple(v.shape[1:]) == (self.num_ws, self.w_dim)
        else:
            if not self.style_layout:
                raise DirectionError(f"{where}: an 's' direction needs style_layout (layer names and channels)")
            total = sum(c for _, c in self.style_layout)
            expected = f"[K, {total}] (total style channels)"
            ok = v.ndim == 2 and v.shape[1] == total
        if not ok or v.shape[0] == 0:
            raise DirectionError(f"{where}: vectors must have shape {expected} with K >= 1, got {tuple(v.shape)}")
        if not torch.isfinite(v).all():
            raise DirectionError(f"{where}: vectors contain NaN or inf")
        if self.std.numel() != len(self):
            raise DirectionError(f"{where}: std has {self.std.numel()} values for {len(self)} components")
        if not torch.isfinite(self.std).all() or (self.std < 0).any():
            raise DirectionError(f"{where}: std must be finite and non-negative")
        if not self.layers:
            raise DirectionError(f"{where}: layers is empty")
        bad = [i for i in self.layers if not 0 <= i < self.num_ws]
        if bad:
            raise DirectionError(f"{where}: layer indices {bad} out of range for num_ws={self.num_ws}")
        for key, values in (("scores", self.scores), ("labels", self.labels)):
            if values is not None and len(values) != len(self):
                raise DirectionError(f"{where}: {key} has {len(values)} entries for {len(self)} components")

    def check_compatible(self, num_ws: int, w_dim: int) -> None:
        """Raise DirectionError when this direction does not fit a generator of these sizes."""
        if (num_ws, w_dim) != (self.num_ws, self.w_dim):
            raise DirectionError(
                f"direction {self.name!r} was found for num_ws={self.num_ws}, w_dim={self.w_dim}, "
                f"but the generator has num_ws={num_ws}, w_dim={w_dim}")

    # ------------------------------------------------------------------ components

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def __getitem__(self, index: int) -> "Direction":
        """A one-component Direction (component `index`)."""
        index = self._check_index(index)
        pick = lambda seq: None if seq is None else [seq[index]]  # noqa: E731
        return replace(self, name=f"{self.name}:{index}", vectors=self.vectors[index:index + 1].clone(),
                       std=self.std[index:index + 1].clone(), scores=pick(self.scores),
                       labels=pick(self.labels), settings=dict(self.settings, component=index))

    def _check_index(self, index: int) -> int:
        k = len(self)
        if not isinstance(index, int) or not -k <= index < k:
            raise DirectionError(f"direction {self.name!r} has {k} components (0-{k - 1}); "
                                 f"index {index!r} is out of range")
        return index % k

    def label(self, index: int) -> str:
        index = self._check_index(index)
        if self.labels:
            return self.labels[index]
        return f"{self.name}:{index}"

    def unit_step(self, index: int = 0) -> torch.Tensor:
        """The change for strength 1 of component `index`: vector * std, in the direction's space."""
        index = self._check_index(index)
        return self.vectors[index] * self.std[index]

    # ------------------------------------------------------------------ applying

    def apply(self, ws: torch.Tensor, strength: float | torch.Tensor, index: int = 0) -> torch.Tensor:
        """ws edited along component `index` by `strength` prior standard deviations.

        ws: [N, num_ws, w_dim] (or [N, w_dim], broadcast to w+). strength: a number or a tensor [N].
        Returns a new tensor [N, num_ws, w_dim]; the input is not modified. An 's' direction does not
        change ws: use `style_offsets` instead (``ganinv.editing.edit`` does that for you).
        """
        if self.space == "s":
            raise DirectionError(f"direction {self.name!r} lives in StyleSpace: it edits styles, not ws; use "
                                 "direction.style_offsets(strength) with G.synthesis(ws, style_offsets=...) "
                                 "or ganinv.editing.edit(...)")
        if not isinstance(ws, torch.Tensor):
            raise TypeError("ws must be a tensor [N, num_ws, w_dim]")
        if ws.ndim == 2 and ws.shape[1] == self.w_dim:
            ws = ws.unsqueeze(1).repeat(1, self.num_ws, 1)
        if ws.ndim != 3 or tuple(ws.shape[1:]) != (self.num_ws, self.w_dim):
            raise DirectionError(f"direction {self.name!r} needs ws of shape [N, {self.num_ws}, {self.w_dim}] "
                                 f"(or [N, {self.w_dim}]), got {tuple(ws.shape)}")
        step = self.unit_step(index).to(device=ws.device, dtype=ws.dtype)
        scale = _strength_column(strength, ws.shape[0], ws.device, ws.dtype)  # [N, 1]
        out = ws.clone()
        layers = torch.tensor(self.layers, device=ws.device)
        if self.space == "w":
            delta = scale * step.unsqueeze(0)  # [N, w_dim]
            out[:, layers] = out[:, layers] + delta.unsqueeze(1)
        else:
            delta = scale.unsqueeze(-1) * step[layers].unsqueeze(0)  # [N, L, w_dim]
            out[:, layers] = out[:, layers] + delta
        return out

    def style_offsets(self, strength: float | torch.Tensor, index: int = 0, batch_size: int | None = None,
                      device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """For an 's' direction: {layer name: offset [C] (or [N, C] for a per-sample strength)}.

        Only layers where the component is non-zero are included."""
        if self.space != "s":
            raise DirectionError(f"direction {self.name!r} is in space {self.space!r}; use apply(ws, strength)")
        step = self.unit_step(index)
        offsets = {}
        start = 0
        assert self.style_layout is not None
        for layer_name, channels in self.style_layout:
            part = step[start:start + channels]
            start += channels
            if not bool(part.abs().max() > 0):
                continue
            part = part.to(device) if device is not None else part
            if isinstance(strength, torch.Tensor) and strength.ndim > 0:
                scale = _strength_column(strength, strength.shape[0], part.device, part.dtype)
                offsets[layer_name] = scale * part.unsqueeze(0)
            else:
                value = part * float(strength)
                if batch_size is not None:
                    value = value.unsqueeze(0).expand(batch_size, -1)
                offsets[layer_name] = value
        return offsets

    # ------------------------------------------------------------------ files

    def metadata(self) -> dict:
        """The JSON part of the direction file."""
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "name": self.name, "method": self.method,
            "space": self.space, "layers": self.layers, "num_ws": self.num_ws, "w_dim": self.w_dim,
            "num_components": len(self), "units": self.units, "std": [float(s) for s in self.std],
            "scores": None if self.scores is None else [float(s) for s in self.scores],
            "score_name": self.score_name, "labels": self.labels,
            "style_layout": None if self.style_layout is None else [list(x) for x in self.style_layout],
            "settings": jsonable(self.settings), "model": jsonable(self.model),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write NAME.json + NAME.safetensors. `path` is a folder (files named after the direction),
        or a file path ending in .json/.safetensors (its stem names both files). Returns the .json path."""
        path = Path(path)
        if path.suffix in (".json", ".safetensors"):
            folder, stem = path.parent, path.stem
        else:
            folder, stem = path, safe_file_stem(self.name)
        folder.mkdir(parents=True, exist_ok=True)
        meta = self.metadata()
        meta["vectors_file"] = f"{stem}.safetensors"
        meta["sha256"] = storage.save_tensors(folder / meta["vectors_file"], {"vectors": self.vectors},
                                              metadata={"format": FORMAT, "name": self.name})
        return storage.write_card(folder / f"{stem}.json", meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Direction":
        """Read a direction from NAME.json / NAME.safetensors / NAME (either file's path or the stem)."""
        return _load_direction_files(Path(path))


# ---------------------------------------------------------------------- prior statistics


def sample_prior_ws(G, num_samples: int, seed: int = 0, truncation_psi: float = 1.0,
                    batch_size: int = 4096) -> torch.Tensor:
    """Prior ws [num_samples, num_ws, w_dim]: `ganinv.models.prior.sample_prior` under its earlier name."""
    return sample_prior(G, num_samples, seed=seed, truncation_psi=truncation_psi, batch_size=batch_size)


def prior_std(G, space: str, vectors: torch.Tensor, layers: Sequence[int], num_samples: int = 10_000,
              seed: int = 0, ws: torch.Tensor | None = None) -> torch.Tensor:
    """Standard deviation of prior latents along each component: the unit of strength.

    For 'w' and 'w+' the coordinate of a latent along component v (restricted to `layers`) is
    <ws, v> / <v, v>; for 's' it is the same on the concatenated styles. Prior latents come from
    `sample_prior_ws(G, num_samples, seed)` unless `ws` is given. Returns [K]."""
    if ws is None:
        if num_samples < 2:
            raise ValueError("num_samples must be at least 2 to measure a standard deviation")
        ws = sample_prior_ws(G, num_samples, seed)
    device = ws.device
    vectors = vectors.to(device).float()
    layers = list(layers)
    with torch.no_grad():
        if space == "w":
            coords = ws[:, layers].mean(dim=1) @ vectors.t()  # identical layers: mean is the w itself
            norms = vectors.square().sum(dim=1)
        elif space == "w+":
            flat = ws[:, layers].flatten(1)
            vflat = vectors[:, layers].flatten(1)
            coords = flat @ vflat.t()
            norms = vflat.square().sum(dim=1)
        elif space == "s":
            coords_list = []
            for start in range(0, ws.shape[0], 1024):
                styles = G.synthesis.styles(ws[start:start + 1024])
                coords_list.append(torch.cat(list(styles.values()), dim=1) @ vectors.t())
            coords = torch.cat(coords_list)
            norms = vectors.square().sum(dim=1)
        else:
            raise ValueError(f"unknown space {space!r}")
        if (norms <= 0).any():
            raise ValueError("a direction component is the zero vector")
        coords = coords / norms
        return coords.std(dim=0).cpu()


def model_identity(model_or_G) -> dict:
    """{'name', 'sha256'} for a Model (empty for a bare generator)."""
    card = getattr(model_or_G, "card", None) or {}
    sha = card.get("sha256") or (card.get("source") or {}).get("sha256")
    return {k: v for k, v in (("name", card.get("name")), ("sha256", sha)) if v}


# ---------------------------------------------------------------------- loading and specs

_SPEC_INDEX = re.compile(r"^(?P<base>.+?):(?P<index>-?\d+)$")


def split_spec(spec: str) -> tuple[str, int | None]:
    """'NAME:3' -> ('NAME', 3); 'NAME' -> ('NAME', None)."""
    match = _SPEC_INDEX.match(str(spec))
    if match:
        return match.group("base"), int(match.group("index"))
    return str(spec), None


def load_direction(spec: str | os.PathLike | Direction, model: Any = None) -> tuple[Direction, int | None]:
    """Resolve 'NAME', 'NAME:i', a file path or 'PATH:i' to (Direction, component index or None).

    NAME is looked up in the model's shipped directions (`model.directions`: name -> json path)
    first, then as a file path. Raises DirectionError with the reason when it cannot be loaded."""
    if isinstance(spec, Direction):
        return spec, None
    base, index = split_spec(str(spec))
    path: Path | None = None
    shipped = dict(getattr(model, "directions", None) or {})
    if base in shipped:
        path = Path(shipped[base])
    else:
        candidate = Path(base).expanduser()
        if (candidate.exists() or (candidate.parent / f"{candidate.name}.json").exists()
                or candidate.suffix in (".json", ".safetensors")):
            path = candidate
    if path is None:
        names = ", ".join(sorted(shipped)) or "none"
        raise DirectionError(f"{base}: no such direction file, and the model ships no direction of that name "
                             f"(shipped: {names})")
    direction = _load_direction_files(path)
    if index is not None:
        direction._check_index(index)
    G = getattr(model, "G", model)
    if G is not None and hasattr(G, "num_ws"):
        direction.check_compatible(G.num_ws, G.w_dim)
    return direction, index


def _load_direction_files(path: Path) -> Direction:
    if path.is_dir():
        raise DirectionError(f"{path}: is a folder; name a direction file (NAME.json) inside it")
    stem_path = path.with_suffix("") if path.suffix in (".json", ".safetensors", ".npy") else path
    json_path = stem_path.parent / f"{stem_path.name}.json"
    if not json_path.is_file():
        raise DirectionError(f"{json_path}: direction metadata file not found (a direction is NAME.json + "
                             "NAME.safetensors)")
    try:
        return _read_direction(json_path, stem_path)
    except DirectionError:
        raise
    except _FILE_ERRORS as e:  # malformed content reaching json, numpy or torch: one line naming the file
        reason = str(e).splitlines()[0] if str(e) else ""
        if isinstance(e, RecursionError):
            reason = "nested too deeply"
        raise DirectionError(f"{json_path}: malformed direction file ({type(e).__name__}"
                             f"{': ' + reason[:200] if reason else ''})") from None


def _read_direction(json_path: Path, stem_path: Path) -> Direction:
    if json_path.stat().st_size > MAX_DIRECTION_JSON_BYTES:
        raise DirectionError(f"{json_path}: {json_path.stat().st_size:,} bytes is too large for a direction file")
    meta = storage.read_card(json_path, FORMAT, FORMAT_VERSION, "direction file", error=DirectionError)
    missing = [k for k in ("name", "method", "space", "layers", "num_ws", "w_dim", "std") if k not in meta]
    if missing:
        raise DirectionError(f"{json_path}: missing fields {missing}")
    tensor_path = _vectors_path(json_path, meta.get("vectors_file", f"{stem_path.name}.safetensors"))
    if not tensor_path.is_file():
        raise DirectionError(f"{tensor_path}: direction vectors file not found (expected beside {json_path.name})")
    if tensor_path.stat().st_size > MAX_VECTORS_BYTES:
        raise DirectionError(f"{tensor_path}: {tensor_path.stat().st_size:,} bytes is too large for direction "
                             "vectors")
    if tensor_path.suffix == ".npy":
        vectors = _load_npy_vectors(tensor_path, meta.get("sha256"))
    else:
        tensors = storage.load_tensors(tensor_path, sha256=meta.get("sha256"), what="direction vectors file",
                                       error=DirectionError)
        # The shape of `vectors` depends on the space; Direction.validate checks it with a precise message.
        storage.check_state_dict(tensors, {"vectors": None}, tensor_path, "direction file", error=DirectionError)
        vectors = tensors["vectors"]
    if not vectors.is_floating_point():
        raise DirectionError(f"{tensor_path}: vectors must be floats, got {vectors.dtype}")
    if not torch.isfinite(vectors).all():
        raise DirectionError(f"{tensor_path}: vectors contain NaN or inf")
    expected_k = meta.get("num_components")
    if expected_k is not None and (vectors.ndim == 0 or vectors.shape[0] != int(expected_k)):
        raise DirectionError(f"{tensor_path}: vectors have shape {tuple(vectors.shape)}, but {json_path.name} "
                             f"says {expected_k} components")
    std = meta["std"]
    if not isinstance(std, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in std):
        raise DirectionError(f"{json_path}: std must be a list of numbers")
    try:
        return Direction(
            name=str(meta["name"]), method=str(meta["method"]), space=str(meta["space"]), vectors=vectors,
            layers=list(meta["layers"]), std=torch.tensor(std, dtype=torch.float32),
            num_ws=int(meta["num_ws"]), w_dim=int(meta["w_dim"]), scores=meta.get("scores"),
            score_name=str(meta.get("score_name", "")), labels=meta.get("labels"),
            settings=dict(meta.get("settings") or {}),
            style_layout=[tuple(x) for x in meta["style_layout"]] if meta.get("style_layout") else None,
            model=dict(meta.get("model") or {}), units=str(meta.get("units", UNITS)))
    except DirectionError as e:
        raise DirectionError(f"{json_path}: {e}") from None
    except (TypeError, ValueError, OverflowError) as e:
        raise DirectionError(f"{json_path}: malformed field ({e})") from None


def _vectors_path(json_path: Path, name) -> Path:
    """The vectors file a direction's JSON names: a plain file name in the JSON's own folder, which
    (links resolved) stays there. Anything else is refused: a direction file must not make ganinv read
    a file elsewhere."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\x00" in name or os.path.isabs(name) or Path(name).name != name):
        raise DirectionError(f"{json_path}: vectors_file must be a file name in the same folder, "
                             f"got {str(name)[:80]!r}")
    path = json_path.parent / name
    try:
        inside = path.resolve().is_relative_to(json_path.parent.resolve())
    except (OSError, RuntimeError):
        inside = False
    if not inside:
        raise DirectionError(f"{json_path}: vectors_file {name!r} leads outside the direction's folder (a link)")
    return path


def _load_npy_vectors(path: Path, sha256) -> torch.Tensor:
    """A .npy vectors file: the header is checked against the file size before the array is read."""
    if sha256 and storage.sha256_file(path) != sha256:
        raise DirectionError(f"{path}: sha256 does not match the direction file (file changed or corrupt)")
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise DirectionError(f"{path}: unsupported .npy version {version}")
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise DirectionError(f"{path}: vectors must be floats, got dtype {dtype}")
        count = int(np.prod(shape, dtype=object)) if shape else 1
        if count * dtype.itemsize > path.stat().st_size:
            raise DirectionError(f"{path}: header claims shape {tuple(shape)}, more than the file holds")
        data = f.read(count * dtype.itemsize)
    array = np.frombuffer(data, dtype=dtype, count=len(data) // dtype.itemsize)
    if array.size != count:
        raise DirectionError(f"{path}: truncated (shape {tuple(shape)} in the header)")
    array = array.reshape(shape, order="F" if fortran else "C")
    return torch.from_numpy(np.array(array, dtype=np.float32, order="C", copy=True))


def safe_file_stem(name: str) -> str:
    """A direction name made safe for a file name (letters, digits, '-', '_', '.')."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    return stem or "direction"


# ---------------------------------------------------------------------- helpers


def _strength_column(strength, batch: int, device, dtype) -> torch.Tensor:
    s = torch.as_tensor(strength, dtype=dtype, device=device)
    if s.ndim == 0:
        return s.reshape(1, 1).expand(batch, 1)
    s = s.reshape(-1)
    if s.numel() != batch:
        raise ValueError(f"strength has {s.numel()} values for a batch of {batch}")
    return s.unsqueeze(1)
