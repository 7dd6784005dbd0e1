"""InversionResult and its folder format.

An `InversionResult` is a `ganinv.latent.Latent` (ws always stored as w+ [N, num_ws, w_dim], noise maps,
base and tuned generator) that also carries what the inversion saw and measured: target(s),
reconstruction(s), metrics, per-step history, settings, the method and the space it optimized in.

`save(dir)` writes one folder per target:

    latent.npz          w [1, num_ws, w_dim] (as NVIDIA's projected_w.npz), plus z / c when used
    noise.safetensors   optimized noise maps {layer: [1, 1, H, W]} (methods that optimize noise)
    generator/          native model folder of the tuned G (pti, clone), base model named on its card
    multicode.safetensors  the codes (offsets from w) and importance weights of a multicode result;
                        report.json's "multicode" names the composition layer
    target.png, reconstruction.png
    report.json         format_version, package version, model name and sha256, method, settings,
                        metrics, seconds, device, threads, stop_reason, history; written last, so its
                        presence marks a complete folder

`InversionResult.load(dir_or_zip, model=None)` restores it. A result folder is untrusted input: every
file is checked (JSON types, array shapes and dtypes, noise layer names, image sizes) and a problem
raises one ValueError line naming the file. Callers that only need to look at a result folder use
`read_result_report`, `result_model_name` and `is_complete_result` instead of reading files themselves.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..version import __version__
from ..data.io import save_image
from ..latent import Latent
from ..models.checkpoints import load_native, save_native
from ..models.local import LocallyTunedGenerator
from ..models.multicode import FILE_NAME as MULTICODE_FILE, MultiCodeGenerator
from ..models.registry import load_model
from ..models.storage import load_tensors, save_tensors
from ..utils import atomic_path, jsonable, write_json

FORMAT_VERSION = 1
REPORT_FILE = "report.json"
#: Files every complete result folder has (generator/ too when report.json says tuned_generator).
REQUIRED_FILES = ("latent.npz", "target.png", "reconstruction.png", REPORT_FILE)
#: Limits on a result zip (a generator of a 1024 px model is a few hundred MB).
MAX_ZIP_BYTES = 4 * 2 ** 30
MAX_ZIP_MEMBERS = 10_000
MAX_REPORT_BYTES = 256 * 2 ** 20

# report.json fields: name -> (accepted types, description for the error message, default)
_REPORT_FIELDS: dict[str, tuple[tuple[type, ...], str, object]] = {
    "method": ((str,), "a string", "?"),
    "space": ((str,), "a string", "w+"),
    "settings": ((dict,), "an object", {}),
    "metrics": ((dict,), "an object", {}),
    "history": ((list,), "a list", []),
    "seconds": ((int, float), "a number", 0.0),
    "device": ((str,), "a string", "cpu"),
    "threads": ((int,), "an integer", 1),
    "stop_reason": ((str,), "a string", ""),
    "extras": ((dict,), "an object", {}),
    "tuned_generator": ((bool,), "true or false", False),
}


@dataclass(kw_only=True, eq=False)
class InversionResult(Latent):
    """One or more inverted targets: a Latent plus target, reconstruction, metrics, history and settings.

    `result[i]` selects one target; `render()` draws with the result's own noise maps and (PTI/Clone)
    tuned generator; `generator` is that generator."""

    method: str
    space: str
    target: torch.Tensor
    reconstruction: torch.Tensor
    model_name: str | None = None
    model_sha256: str | None = None
    metrics: dict[str, list] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)
    stop_reason: str = ""
    device: str = "cpu"
    threads: int = 1
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.label:
            self.label = f"{self.method} result"

    def _selected(self, i: int) -> dict:
        n = len(self)
        metrics = {k: [v[i]] for k, v in self.metrics.items() if isinstance(v, list) and len(v) == n}
        selected = super()._selected(i)
        if isinstance(self.G_base, MultiCodeGenerator) and len(self.G_base) == n > 1:
            selected["G_base"] = self.G_base.select(i)  # each target has its own codes
        return {**selected, "target": self.target[i:i + 1],
                "reconstruction": self.reconstruction[i:i + 1], "metrics": metrics,
                "seconds": self.seconds / max(n, 1)}

    @classmethod
    def from_subject(cls, subject: Latent, *, method: str, space: str = "w+", target: torch.Tensor | None = None,
                     settings: dict | None = None, model_name: str | None = None, model_sha256: str | None = None,
                     stop_reason: str = "") -> "InversionResult":
        """A result record of any subject (a prior sample, say), to save or export it in the result
        format. The reconstruction is the subject's render, which is also the target unless given."""
        image = subject.render()

        def cpu(t):
            return None if t is None else t.detach().cpu()

        return cls(ws=subject.ws.detach().cpu(), G_base=subject.G_base, G_tuned=subject.G_tuned,
                   noise=None if subject.noise is None else {k: cpu(v) for k, v in subject.noise.items()},
                   z=cpu(subject.z), c=cpu(subject.c), truncation_psi=subject.truncation_psi, label=subject.label,
                   method=method, space=space, target=image if target is None else target, reconstruction=image,
                   model_name=model_name, model_sha256=model_sha256, settings=dict(settings or {}),
                   stop_reason=stop_reason)

    # ------------------------------------------------------------------ saving

    def report(self) -> dict:
        return {
            "format_version": FORMAT_VERSION, "ganinv_version": __version__,
            "model": {"name": self.model_name, "sha256": self.model_sha256},
            "method": self.method, "space": self.space, "settings": jsonable(self.settings),
            "metrics": jsonable(self.metrics), "seconds": self.seconds, "device": self.device,
            "threads": self.threads, "stop_reason": self.stop_reason, "history": jsonable(self.history),
            "num_ws": int(self.ws.shape[1]), "w_dim": int(self.ws.shape[2]),
            "tuned_generator": self.G_tuned is not None, "extras": jsonable(self.extras),
            **({"multicode": {"layer": self.G_base.layer, "codes": self.G_base.num_codes}}
               if isinstance(self.G_base, MultiCodeGenerator) else {}),
        }

    def save(self, outdir: str | os.PathLike) -> list[Path]:
        """Write one folder per target (outdir itself for a single target, else outdir/0000, ...)."""
        outdir = Path(outdir)
        if len(self) == 1:
            return [self._save_one(outdir)]
        return [self[i]._save_one(outdir / f"{i:04d}") for i in range(len(self))]

    def _save_one(self, outdir: Path) -> Path:
        outdir.mkdir(parents=True, exist_ok=True)
        arrays = {"w": self.ws.detach().cpu().numpy().astype(np.float32)}
        if self.z is not None:
            arrays["z"] = self.z.detach().cpu().numpy().astype(np.float32)
        if self.c is not None:
            arrays["c"] = self.c.detach().cpu().numpy().astype(np.float32)
        with atomic_path(outdir / "latent.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        if self.noise is not None:
            save_tensors(outdir / "noise.safetensors", self.noise)
        if isinstance(self.G_base, MultiCodeGenerator):
            self.G_base.save(outdir / MULTICODE_FILE)
        if self.G_tuned is not None:
            card = {"name": f"{self.model_name or 'model'}-{self.method}-tuned",
                    "base_model": {"name": self.model_name, "sha256": self.model_sha256},
                    "tuned_by": self.method}
            G_tuned, extra = self.G_tuned, None
            if isinstance(G_tuned, LocallyTunedGenerator):
                # G+ itself plus the gate; the base weights come from the base model on load.
                card["locality_gate"] = G_tuned.gate_settings
                extra = {"gate.pivots": G_tuned.synthesis.pivots}
                G_tuned = G_tuned.tuned_generator
            save_native(outdir / "generator", G_tuned, None, card=card, extra_tensors=extra)
        save_image(self.target[0], outdir / "target.png")
        save_image(self.reconstruction[0], outdir / "reconstruction.png")
        write_json(outdir / REPORT_FILE, self.report())
        return outdir

    def to_zip(self) -> bytes:
        """The saved folder of a single-target result as zip bytes (for downloads)."""
        if len(self) != 1:
            raise ValueError("to_zip works on a single-target result; index it first")
        with tempfile.TemporaryDirectory() as tmp:
            folder = self._save_one(Path(tmp) / "result")
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                for p in sorted(folder.rglob("*")):
                    if p.is_file():
                        zf.write(p, p.relative_to(folder.parent).as_posix())
            return buf.getvalue()

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: str | os.PathLike, model=None) -> "InversionResult":
        """Restore a saved result (folder or zip of one). `model` defaults to the base model named in
        report.json (embedded name), verified by sha256 when recorded. Raises ValueError (one line,
        naming the file) for anything that is not a readable result."""
        path = Path(path)
        if path.is_file():
            with _extracted_zip(path) as (root, folder):
                # Everything is read into memory, so the extracted files can go.
                try:
                    return cls.load(folder, model=model)
                except ValueError as e:  # name the file inside the zip, not the temporary copy
                    raise ValueError(str(e).replace(f"{root}{os.sep}", f"{path}:").replace(str(root), str(path))
                                     ) from None
        report = read_result_report(path)

        recorded = report.get("model") or {}
        name, expected = recorded.get("name"), recorded.get("sha256")
        if model is None:
            if not name:
                raise ValueError(f"{path}: the result does not name its model; pass model=...")
            try:
                model = load_model(name)
            except Exception as e:  # noqa: BLE001 - name a clear reason
                raise ValueError(f"{path}: cannot find the base model {name!r} ({e}); pass model=...") from None
        else:
            model = load_model(model)
        if expected and model.sha256 and expected != model.sha256:
            raise ValueError(f"{path}: result was made with model sha256 {expected[:12]}..., "
                             f"but the given model is {model.sha256[:12]}...")
        G = model.G
        device = next(G.parameters()).device
        arrays = _read_latent(path / "latent.npz", G)
        noise = _read_noise(path / "noise.safetensors", G) if (path / "noise.safetensors").exists() else None
        G_tuned = None
        if (path / "generator").exists():
            G_tuned = _read_tuned_generator(path / "generator", G).to(device)
        elif report["tuned_generator"]:
            raise ValueError(f"{path}: report.json says the generator was tuned, but generator/ is missing")
        if "multicode" in report or (path / MULTICODE_FILE).exists():
            G = _read_multicode(path, report, G)  # renders the result: the model's G composing its codes
        target = _read_saved_png(path / "target.png", G.img_channels, G.img_resolution)
        result = cls(ws=arrays["w"], G_base=G, G_tuned=G_tuned, noise=noise, z=arrays.get("z"), c=arrays.get("c"),
                     method=report["method"], space=report["space"], target=target, reconstruction=target,
                     model_name=name, model_sha256=expected, metrics=report["metrics"], history=report["history"],
                     seconds=float(report["seconds"]), settings=report["settings"],
                     stop_reason=report["stop_reason"], device=report["device"], threads=report["threads"],
                     extras=report["extras"])
        result.reconstruction = result.render()
        return result


# ---------------------------------------------------------------------- looking at saved results


def read_result_report(path: str | os.PathLike) -> dict:
    """report.json of a result folder (or of the single result in a zip), checked: a JSON object whose
    known fields have the right types and whose format this ganinv reads. Missing optional fields are
    filled with their defaults. Raises ValueError (one line) otherwise."""
    path = Path(path)
    if path.is_dir():
        report_path = path / REPORT_FILE
        if not report_path.is_file():
            raise ValueError(f"{path}: not an inversion result (no {REPORT_FILE})")
        if report_path.stat().st_size > MAX_REPORT_BYTES:
            raise ValueError(f"{report_path}: too large for a result report")
        try:
            raw = report_path.read_bytes()
        except OSError as e:
            raise ValueError(f"{report_path}: cannot read ({e.strerror or e})") from None
        return _check_report(raw, report_path)
    if path.is_file():
        with _open_zip(path) as zf:
            member = _report_member(zf, path)
            if zf.getinfo(member).file_size > MAX_REPORT_BYTES:
                raise ValueError(f"{path}: {member} is too large for a result report")
            return _check_report(zf.read(member), Path(f"{path}:{member}"))
    raise ValueError(f"{path}: no such result folder or zip")


def result_model_name(path: str | os.PathLike) -> str | None:
    """The name of the model a saved result (folder or zip) was made with, None if it names none."""
    return (read_result_report(path).get("model") or {}).get("name")


def is_complete_result(path: str | os.PathLike) -> bool:
    """Whether `path` is a result folder that `save` finished: a readable report.json and every file
    of the format (generator/ when the report says the generator was tuned). Never raises."""
    path = Path(path)
    try:
        if not path.is_dir():
            return False
        report = read_result_report(path)
        if not all((path / name).is_file() for name in REQUIRED_FILES):
            return False
        if "multicode" in report and not (path / MULTICODE_FILE).is_file():
            return False
        return not report["tuned_generator"] or (path / "generator").is_dir()
    except (ValueError, OSError):
        return False


def _check_report(raw: bytes, where: Path) -> dict:
    try:
        report = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{where}: invalid JSON ({e})") from None
    if not isinstance(report, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(report).__name__}")
    version = report.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"{where}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{where}: result format_version {version} is newer than this ganinv reads "
                         f"({FORMAT_VERSION}); upgrade ganinv")
    model = report.get("model")
    if model is not None:
        if not isinstance(model, dict):
            raise ValueError(f"{where}: 'model' must be an object with name and sha256")
        for key in ("name", "sha256"):
            if model.get(key) is not None and not isinstance(model.get(key), str):
                raise ValueError(f"{where}: model {key} must be a string, got {model.get(key)!r}")
    checked = dict(report)
    for key, (types, description, default) in _REPORT_FIELDS.items():
        value = report.get(key)
        if value is None:
            checked[key] = default.copy() if isinstance(default, (dict, list)) else default
        elif not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"{where}: {key!r} must be {description}, got {type(value).__name__}")
    return checked


@contextmanager
def _open_zip(path: Path) -> Iterator[zipfile.ZipFile]:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{path}: not an inversion result (neither a result folder nor a zip of one)") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
    with zf:
        try:
            yield zf
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, OSError) as e:
            raise ValueError(f"{path}: corrupt or unsupported zip ({e})") from None


def _report_member(zf: zipfile.ZipFile, path: Path) -> str:
    found = [name for name in zf.namelist() if name == REPORT_FILE or name.endswith("/" + REPORT_FILE)]
    if len(found) != 1:
        raise ValueError(f"{path}: expected exactly one result ({REPORT_FILE}) in the zip, found {len(found)}")
    return found[0]


@contextmanager
def _extracted_zip(path: Path) -> Iterator[tuple[Path, Path]]:
    """(temporary folder, the result folder in it) of a result zip, extracted; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="ganinv-result-") as tmp_name:
        tmp = Path(tmp_name).resolve()
        with _open_zip(path) as zf:
            members = zf.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                raise ValueError(f"{path}: {len(members)} files in the zip; a result has a handful")
            if sum(m.file_size for m in members) > MAX_ZIP_BYTES:
                raise ValueError(f"{path}: the zip unpacks to more than {MAX_ZIP_BYTES // 2 ** 30} GiB")
            inner = Path(_report_member(zf, path)).parent
            for member in members:
                target = (tmp / member.filename).resolve()
                if target != tmp and tmp not in target.parents:
                    raise ValueError(f"{path}: unsafe path {member.filename!r} in zip")
            zf.extractall(tmp)
        yield tmp, tmp / inner


def _read_latent(path: Path, G) -> dict[str, torch.Tensor]:
    """latent.npz -> {'w': [1, num_ws, w_dim], 'z': [1, z_dim], 'c': [1, c_dim]} (z, c when present)."""
    if not path.is_file():
        raise ValueError(f"{path.parent}: latent.npz is missing")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        data = np.load(path, allow_pickle=False) if magic == b"PK\x03\x04" else None
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
    except (ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: cannot read ({e})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not an .npz archive (expected the arrays w, z, c)")
    expected = {"w": (1, G.num_ws, G.w_dim), "z": (1, G.z_dim), "c": (1, G.c_dim)}
    out = {}
    with data:
        if "w" not in data.files:
            raise ValueError(f"{path}: no array 'w' (expected shape [1, {G.num_ws}, {G.w_dim}])")
        for key, shape in expected.items():
            if key not in data.files:
                continue
            try:
                array = data[key]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
                raise ValueError(f"{path}: cannot read array {key!r} ({e})") from None
            if array.dtype.kind not in "fiu":
                raise ValueError(f"{path}: array {key!r} has dtype {array.dtype}, expected float32")
            if tuple(array.shape) != shape:
                if key == "w":
                    raise ValueError(f"{path}: latent w has shape {tuple(array.shape)}, model expects "
                                     f"[1, {G.num_ws}, {G.w_dim}]")
                raise ValueError(f"{path}: array {key!r} has shape {tuple(array.shape)}, expected {list(shape)}")
            if not np.isfinite(array).all():
                raise ValueError(f"{path}: array {key!r} contains NaN or inf")
            out[key] = torch.from_numpy(np.asarray(array, dtype=np.float32).copy())
    return out


def _read_noise(path: Path, G) -> dict[str, torch.Tensor]:
    """noise.safetensors -> {layer: [1, 1, H, W]}, layers and sizes checked against G."""
    noise = load_tensors(path, what="noise maps", error=ValueError)
    buffers = G.synthesis.noise_buffers()
    for name, value in noise.items():
        if name not in buffers:
            raise ValueError(f"{path}: noise map {name!r} is not a noise layer of this model "
                             f"(layers: {', '.join(buffers)})")
        shape = (1, 1, *buffers[name].shape[-2:])
        if tuple(value.shape) != shape:
            raise ValueError(f"{path}: noise map {name!r} has shape {tuple(value.shape)}, expected {list(shape)}")
        if not value.is_floating_point() or not torch.isfinite(value).all():
            raise ValueError(f"{path}: noise map {name!r} must be finite floats")
    return {k: v.float() for k, v in noise.items()}


def _read_tuned_generator(path: Path, G):
    """generator/ -> the tuned G (wrapped in its locality gate when the card has one)."""
    try:
        G_tuned, _, card, extra = load_native(path)
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: cannot load the tuned generator ({e})") from None
    keys = ("num_ws", "w_dim", "img_resolution", "img_channels")
    if any(getattr(G_tuned, k) != getattr(G, k) for k in keys):
        raise ValueError(f"{path}: the tuned generator does not match the base model's architecture "
                         f"({', '.join(f'{k} {getattr(G_tuned, k)} vs {getattr(G, k)}' for k in keys)})")
    gate = card.get("locality_gate")
    if gate is None:
        return G_tuned
    try:
        pivots = extra["gate.pivots"].float().to(next(G.parameters()).device)
        return LocallyTunedGenerator(G, G_tuned.to(pivots.device), pivots, float(gate["inner_radius"]),
                                     float(gate["outer_radius"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: invalid locality gate ({e!r})") from None


def _read_multicode(path: Path, report: dict, G) -> MultiCodeGenerator:
    """multicode.safetensors + report.json's "multicode": {"layer": L} -> the multi-code generator over G."""
    info = report.get("multicode")
    layer = info.get("layer") if isinstance(info, dict) else None
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ValueError(f"{path / REPORT_FILE}: 'multicode' must be an object with an integer 'layer', got {info!r}")
    if not (path / MULTICODE_FILE).is_file():
        raise ValueError(f"{path}: report.json describes a multi-code result, but {MULTICODE_FILE} is missing")
    found = MultiCodeGenerator.load(path / MULTICODE_FILE, G, layer)
    if len(found) != 1:
        raise ValueError(f"{path / MULTICODE_FILE}: holds {len(found)} targets' codes, a result folder holds one")
    return found


def _read_saved_png(path: Path, channels: int, resolution: int) -> torch.Tensor:
    """A PNG `save` wrote (the model's size, 8-bit) -> [1, C, H, W] in [-1, 1]."""
    if not path.is_file():
        raise ValueError(f"{path.parent}: {path.name} is missing")
    try:
        with Image.open(path) as im:
            if im.size != (resolution, resolution):
                raise ValueError(f"{path}: image is {im.size[0]}x{im.size[1]}, the model's is "
                                 f"{resolution}x{resolution}")
            im = im.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read the image ({e})") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1


__all__ = ["InversionResult", "FORMAT_VERSION", "read_result_report", "result_model_name", "is_complete_result"]
