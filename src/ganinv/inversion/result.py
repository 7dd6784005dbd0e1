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
                        metrics, seconds, device, threads, stop_reason, history, and the input (path
                        and sha256 of the file) when the caller records it

The folder is built under a hidden name beside the target (`.NAME.partial-...`) and renamed into place
only once every file is written; an existing folder is first renamed aside and deleted after the new
one is in place. So a folder under its real name is always complete, an overwritten result is exactly
the new result (no file of the old one survives), and an interrupted save leaves the old result intact
(or, between the two renames, no result at all), never a mixture.

`InversionResult.load(dir_or_zip, model=None)` restores it; given the folder `save` wrote for several
targets (outdir/0000, ...), it restores the whole batch (`concatenate`), with one tuned generator per
target where the method tuned one per target (PTI). A result folder (or zip) is untrusted input:
every file is checked (JSON types, array headers, shapes, dtypes and finiteness, noise layer names, image
sizes, zip sizes and member paths), every file must lie inside the folder, and a problem raises one
`ResultError` line naming the file. Without `model`, only an embedded model named in report.json, or a
model folder inside the result folder, is loaded. Callers that only need to look at a result folder use
`read_result_report`, `result_model_name` and `is_complete_result` instead of reading files themselves.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import struct
import tempfile
import threading
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
from ..errors import GanInvError
from ..latent import Latent
from ..models.checkpoints import load_native, save_native
from ..models.local import LocallyTunedGenerator
from ..models.multicode import FILE_NAME as MULTICODE_FILE, MultiCodeGenerator
from ..models.registry import EMBEDDED_MODELS, load_model
from ..models.storage import load_tensors, save_tensors
from ..utils import atomic_path, jsonable, write_json

FORMAT_VERSION = 1
REPORT_FILE = "report.json"
#: Files every complete result folder has (generator/ too when report.json says tuned_generator).
REQUIRED_FILES = ("latent.npz", "target.png", "reconstruction.png", REPORT_FILE)
#: Names a result folder may hold; an existing folder with anything else is not replaced by `save`.
RESULT_ENTRIES = frozenset(REQUIRED_FILES + ("noise.safetensors", "generator", MULTICODE_FILE, "alignment.json"))
#: extras that hold one entry per target when each target has its own tuned generator.
PER_TARGET_EXTRAS = ("locality", "locality_ungated")
#: JSON files a caller may add to a single result with `save(..., attachments=...)`.
ATTACHMENTS = ("alignment.json",)
#: Limits on a result zip (the tuned generator of a 1024 px model is a few hundred MB): total bytes
#: unpacked, bytes of one member, number of members. Declared sizes are checked first, and the bytes
#: actually unpacked are counted while extracting.
MAX_ZIP_BYTES = 2 * 2 ** 30
MAX_ZIP_MEMBER_BYTES = 1 * 2 ** 30
MAX_ZIP_MEMBERS = 256
#: A member larger than 1 MiB may unpack to at most this many times its compressed size (weights and
#: PNGs hardly compress; a zip bomb unpacks to a thousand times its size).
MAX_ZIP_RATIO = 100
MAX_REPORT_BYTES = 64 * 2 ** 20
#: latent.npz holds a few small arrays; anything much larger is not one.
MAX_LATENT_BYTES = 64 * 2 ** 20
#: Failures that reading an untrusted file can raise besides our own errors (malformed data reaching
#: numpy, torch, Pillow, zipfile or json; absurd sizes; deep nesting).
UNTRUSTED_FILE_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OSError, EOFError,
                         RuntimeError, RecursionError, OverflowError, MemoryError, struct.error, zlib.error,
                         zipfile.BadZipFile, SyntaxError, UnicodeError, NotImplementedError)


class ResultError(GanInvError):
    """A result folder or zip that cannot be used (missing, malformed, not this input's): names the file."""


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
    "input": ((dict,), "an object", {}),
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
    #: What was inverted, when the caller records it: {"path": ..., "sha256": ... of the input file}.
    input: dict = field(default_factory=dict)

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
        extras = dict(self.extras)
        if isinstance(self.G_tuned, (list, tuple)):
            # One tuned generator per target: its locality figures are per target too.
            for key in PER_TARGET_EXTRAS:
                if isinstance(extras.get(key), list) and len(extras[key]) == n:
                    extras[key] = extras[key][i]
        return {**selected, "target": self.target[i:i + 1],
                "reconstruction": self.reconstruction[i:i + 1], "metrics": metrics,
                "seconds": self.seconds / max(n, 1), "extras": extras}

    @classmethod
    def concatenate(cls, results: list["InversionResult"]) -> "InversionResult":
        """One result of several single-target results of the same model and method (what `load` makes
        of a folder that `save` wrote for a batch): a tuned result keeps one tuned generator per target."""
        if not results:
            raise ValueError("nothing to concatenate")
        first = results[0]
        if len(results) == 1:
            return first
        if any(len(r) != 1 for r in results):
            raise ValueError("concatenate takes single-target results")

        def joined(values):
            if all(v is None for v in values):
                return None
            if any(v is None for v in values):
                raise ValueError("cannot concatenate results where only some have this field")
            return torch.cat(values)

        tuned = [r.G_tuned for r in results]
        if any(t is None for t in tuned) and not all(t is None for t in tuned):
            raise ValueError("cannot concatenate tuned and untuned results")
        noise = None
        if any(r.noise is not None for r in results):
            if any(r.noise is None for r in results):
                raise ValueError("cannot concatenate results where only some have noise maps")
            noise = {k: torch.cat([r.noise[k] for r in results]) for k in first.noise}
        metrics = {k: [x for r in results for x in r.metrics.get(k, [None])]
                   for k, v in first.metrics.items() if isinstance(v, list)}
        extras = dict(first.extras)
        for key in PER_TARGET_EXTRAS:
            if all(key in r.extras for r in results):
                extras[key] = [r.extras[key] for r in results]
        return cls(ws=torch.cat([r.ws for r in results]), G_base=first.G_base,
                   G_tuned=None if tuned[0] is None else tuned, noise=noise,
                   z=joined([r.z for r in results]), c=joined([r.c for r in results]),
                   truncation_psi=first.truncation_psi, method=first.method, space=first.space,
                   target=torch.cat([r.target for r in results]),
                   reconstruction=torch.cat([r.reconstruction for r in results]), model_name=first.model_name,
                   model_sha256=first.model_sha256, metrics=metrics, history=first.history,
                   seconds=sum(r.seconds for r in results), settings=first.settings, stop_reason=first.stop_reason,
                   device=first.device, threads=first.threads, extras=extras)

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
            "input": jsonable(self.input),
            **({"multicode": {"layer": self.G_base.layer, "codes": self.G_base.num_codes}}
               if isinstance(self.G_base, MultiCodeGenerator) else {}),
        }

    def save(self, outdir: str | os.PathLike, attachments: dict[str, object] | None = None) -> list[Path]:
        """Write one folder per target (outdir itself for a single target, else outdir/0000, ...).

        `attachments` ({name in ATTACHMENTS: JSON data}) are written into a single target's folder with the
        rest, e.g. the face alignment `edit --paste-back` reads.

        The whole of outdir is built beside it and swapped in (see the module docstring): an existing
        result there is replaced completely, and only after the new one is complete. An existing outdir
        that holds anything but result files raises ResultError instead of being replaced."""
        outdir = Path(outdir)
        attachments = dict(attachments or {})
        unknown = sorted(set(attachments) - set(ATTACHMENTS))
        if unknown or (attachments and len(self) != 1):
            raise ResultError(f"{outdir}: attachments are {', '.join(ATTACHMENTS)} for a single result, got "
                              f"{', '.join(unknown) or f'{len(self)} results'}")
        with atomic_folder(outdir) as building:
            if len(self) == 1:
                self._write_folder(building)
                for name, data in attachments.items():
                    write_json(building / name, data)
            else:
                for i in range(len(self)):
                    self[i]._write_folder(building / f"{i:04d}")
        if len(self) == 1:
            return [outdir]
        return [outdir / f"{i:04d}" for i in range(len(self))]

    def _write_folder(self, outdir: Path) -> Path:
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
            folder = self.save(Path(tmp) / "result")[0]
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                for p in sorted(folder.rglob("*")):
                    if p.is_file():
                        zf.write(p, p.relative_to(folder.parent).as_posix())
            return buf.getvalue()

    # ------------------------------------------------------------------ loading


    @classmethod
    def load(cls, path: str | os.PathLike, model=None) -> "InversionResult":
        """Restore a saved result (folder or zip of one).

        `model` defaults to the base model report.json names, if that is an embedded model (or a model
        folder inside the result folder), verified by sha256 when recorded; any other model must be
        given. Raises ResultError (one line, naming the file) for anything that is not a readable result."""
        path = Path(path)
        if path.is_file():
            with _extracted_zip(path) as (root, folder):
                # Everything is read into memory, so the extracted files can go.
                try:
                    return cls.load(folder, model=model)
                except ValueError as e:  # name the file inside the zip, not the temporary copy
                    raise ResultError(str(e).replace(f"{root}{os.sep}", f"{path}:").replace(str(root), str(path))
                                      ) from None
        targets = _target_folders(path)
        if targets:
            # A batch saved as one folder per target (outdir/0000, outdir/0001, ...): the base model is
            # loaded once for all of them.
            bundle = (_load_base_model(resolve_result_model(targets[0]), targets[0]) if model is None
                      else load_model(model))
            return cls.concatenate([cls.load(folder, model=bundle) for folder in targets])
        report = read_result_report(path)

        recorded = report.get("model") or {}
        name, expected = recorded.get("name"), recorded.get("sha256")
        if model is None:
            model = _load_base_model(resolve_result_model(path, report), path)
        else:
            model = load_model(model)
        if expected and model.sha256 and expected != model.sha256:
            raise ResultError(f"{path}: result was made with model sha256 {expected[:12]}..., "
                              f"but the given model is {model.sha256[:12]}...")
        G = model.G
        device = next(G.parameters()).device
        arrays = _read_latent(_member(path, "latent.npz"), G)
        noise_path = _member(path, "noise.safetensors")
        noise = _read_noise(noise_path, G) if noise_path.exists() else None
        G_tuned = None
        generator_path = _member(path, "generator")
        if generator_path.exists():
            G_tuned = _read_tuned_generator(generator_path, G).to(device)
        elif report["tuned_generator"]:
            raise ResultError(f"{path}: report.json says the generator was tuned, but generator/ is missing")
        if "multicode" in report or _member(path, MULTICODE_FILE).exists():
            G = _read_multicode(path, report, G)  # renders the result: the model's G composing its codes
        target = _read_saved_png(_member(path, "target.png"), G.img_channels, G.img_resolution)
        result = cls(ws=arrays["w"], G_base=G, G_tuned=G_tuned, noise=noise, z=arrays.get("z"), c=arrays.get("c"),
                     method=report["method"], space=report["space"], target=target, reconstruction=target,
                     model_name=name, model_sha256=expected, metrics=report["metrics"], history=report["history"],
                     seconds=float(report["seconds"]), settings=report["settings"],
                     stop_reason=report["stop_reason"], device=report["device"], threads=report["threads"],
                     extras=report["extras"], input=report["input"])
        try:
            result.reconstruction = result.render()
        except (RuntimeError, ValueError) as e:
            raise ResultError(f"{path}: cannot render the result ({str(e).splitlines()[0] if str(e) else e!r})"
                              ) from None
        return result


def _target_folders(path: Path) -> list[Path]:
    """The per-target folders (0000, 0001, ...) of a batch that `save` wrote, in order; [] for anything else
    (a single result folder, a zip)."""
    if not path.is_dir() or (path / REPORT_FILE).exists():
        return []
    folders = []
    for i in range(sum(1 for _ in path.iterdir())):
        folder = path / f"{i:04d}"
        if not folder.is_dir() or folder.is_symlink():
            break
        folders.append(folder)
    return folders


# ---------------------------------------------------------------------- writing folders atomically


def _hidden_prefix(name: str, kind: str) -> str:
    """`.NAME.KIND-` (NAME shortened with a hash when long), the prefix of the hidden siblings of NAME."""
    if len(name.encode()) > 150:
        name = name[:64] + "~" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return f".{name}.{kind}-"


def _hidden_sibling(target: Path, kind: str) -> Path:
    return target.parent / f"{_hidden_prefix(target.name, kind)}{os.getpid()}-{secrets.token_hex(4)}"


#: Hidden folders this process is building or setting aside right now (threads may save concurrently).
_IN_PROGRESS: set[str] = set()
_IN_PROGRESS_LOCK = threading.Lock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove_stale_siblings(target: Path) -> None:
    """Hidden folders a killed `save` of the same target left (half-built or set aside), whose process is gone."""
    for kind in ("partial", "old"):
        prefix = _hidden_prefix(target.name, kind)
        try:
            siblings = [p for p in target.parent.iterdir() if p.name.startswith(prefix)]
        except OSError:
            return
        for sibling in siblings:
            match = re.match(r"(\d+)-", sibling.name[len(prefix):])
            if not match:
                continue
            pid = int(match.group(1))
            with _IN_PROGRESS_LOCK:
                busy = sibling.name in _IN_PROGRESS
            if (pid == os.getpid() and not busy) or (pid != os.getpid() and not _pid_alive(pid)):
                _remove(sibling)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _check_replaceable(target: Path) -> None:
    """Refuse to replace anything but a result folder (complete or not), an empty folder or nothing."""
    if not (target.exists() or target.is_symlink()):
        return
    if not target.is_dir():
        raise ResultError(f"{target}: exists and is not a folder; refusing to replace it with a result")
    try:
        names = [p.name for p in target.iterdir()]
    except OSError as e:
        raise ResultError(f"{target}: cannot read the existing folder ({e.strerror or e})") from None
    foreign = sorted(n for n in names if n not in RESULT_ENTRIES and not n.startswith(".")
                     and not re.fullmatch(r"\d{4,}", n))
    if foreign and REPORT_FILE not in names:
        raise ResultError(f"{target}: holds files that are not part of an inversion result "
                          f"({', '.join(foreign[:3])}); refusing to replace it")


@contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty hidden folder beside `target`; when the block succeeds, swap it in as `target`.

    An existing `target` is renamed aside, the new folder renamed in, and only then the old one deleted;
    if the second rename fails, the old folder is put back. A block that raises leaves `target` as it
    was and removes the hidden folder. Hidden folders that a killed process left for the same target
    are removed first. Raises ResultError when `target` exists and is not a result folder."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _check_replaceable(target)
    _remove_stale_siblings(target)
    while True:
        building = _hidden_sibling(target, "partial")
        try:
            os.mkdir(building)  # mode from the umask, like any other output folder
            break
        except FileExistsError:
            continue
    with _IN_PROGRESS_LOCK:
        _IN_PROGRESS.add(building.name)
    try:
        yield building
        _swap_in(building, target)
    except BaseException:
        _remove(building)
        raise
    finally:
        with _IN_PROGRESS_LOCK:
            _IN_PROGRESS.discard(building.name)


def _swap_in(new: Path, target: Path) -> None:
    old = None
    try:
        if target.exists() or target.is_symlink():
            _check_replaceable(target)  # again: it may have changed while the new folder was built
            old = _hidden_sibling(target, "old")
            with _IN_PROGRESS_LOCK:
                _IN_PROGRESS.add(old.name)
            os.rename(target, old)
        try:
            os.rename(new, target)
        except BaseException:
            if old is not None:
                try:
                    os.rename(old, target)
                except OSError:
                    pass
            raise
        if old is not None:
            _remove(old)
    finally:
        if old is not None:
            with _IN_PROGRESS_LOCK:
                _IN_PROGRESS.discard(old.name)


# ---------------------------------------------------------------------- looking at saved results


def read_result_report(path: str | os.PathLike) -> dict:
    """report.json of a result folder (or of the single result in a zip), checked: a JSON object whose
    known fields have the right types and whose format this ganinv reads. Missing optional fields are
    filled with their defaults. Raises ResultError (one line) otherwise."""
    path = Path(path)
    if path.is_dir():
        report_path = path / REPORT_FILE
        if not report_path.is_file():
            raise ResultError(f"{path}: not an inversion result (no {REPORT_FILE})")
        report_path = _member(path, REPORT_FILE)
        try:
            if report_path.stat().st_size > MAX_REPORT_BYTES:
                raise ResultError(f"{report_path}: too large for a result report")
            raw = report_path.read_bytes()
        except OSError as e:
            raise ResultError(f"{report_path}: cannot read ({e.strerror or e})") from None
        return _check_report(raw, report_path)
    if path.is_file():
        with _open_zip(path) as zf:
            member = _report_member(zf, path)
            if zf.getinfo(member).file_size > MAX_REPORT_BYTES:
                raise ResultError(f"{path}: {member} is too large for a result report")
            return _check_report(zf.read(member), Path(f"{path}:{member}"))
    raise ResultError(f"{path}: no such result folder or zip")


def result_model_name(path: str | os.PathLike) -> str | None:
    """The name of the model a saved result (folder or zip) was made with, None if it names none."""
    return (read_result_report(path).get("model") or {}).get("name")


def resolve_result_model(path: str | os.PathLike, report: dict | None = None) -> str | Path:
    """What to load as the base model of a saved result when the user names none: the embedded model
    report.json names, or the model folder it names by a path inside the result folder (never a path
    outside it: a result is untrusted and must not make ganinv load an arbitrary file). Raises
    ResultError asking for the model otherwise."""
    path = Path(path)
    report = read_result_report(path) if report is None else report
    name = (report.get("model") or {}).get("name")
    if not name:
        raise ResultError(f"{path}: the result does not name its model; pass the model (--model)")
    if name in EMBEDDED_MODELS:
        return name
    if path.is_dir() and not os.path.isabs(name) and "\x00" not in name:
        candidate = path / name
        try:
            root, resolved = path.resolve(), candidate.resolve()
        except (OSError, RuntimeError, ValueError):
            resolved = None
        if resolved is not None and resolved != root and resolved.is_relative_to(root) and resolved.exists():
            return candidate
    raise ResultError(f"{path}: the result names the model {name!r}, which is neither an embedded model "
                      f"({', '.join(EMBEDDED_MODELS)}) nor a model folder inside the result; pass the model "
                      "(--model)")


def _load_base_model(name_or_path: str | Path, path: Path):
    try:
        return load_model(name_or_path)
    except UNTRUSTED_FILE_ERRORS as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ResultError(f"{path}: cannot load the base model {str(name_or_path)!r} ({reason}); "
                          "pass the model (--model)") from None


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


def result_input_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 of the input file recorded in a complete result folder's report; None when the folder
    is not a complete result or records none. Never raises."""
    if not is_complete_result(path):
        return None
    try:
        digest = read_result_report(path)["input"].get("sha256")
    except (ValueError, OSError):
        return None
    return digest if isinstance(digest, str) else None


def _member(folder: Path, name: str) -> Path:
    """folder/name, refused when it leads outside the folder (a symbolic link to elsewhere)."""
    path = folder / name
    if path.is_symlink():
        try:
            inside = path.resolve().is_relative_to(folder.resolve())
        except (OSError, RuntimeError):
            inside = False
        if not inside:
            raise ResultError(f"{path}: leads outside the result folder (a link); refusing to read it")
    return path


def _check_report(raw: bytes, where: Path) -> dict:
    try:
        report = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultError(f"{where}: invalid JSON ({e})") from None
    except RecursionError:
        raise ResultError(f"{where}: invalid JSON (nested too deeply)") from None
    except (MemoryError, OverflowError, ValueError) as e:
        raise ResultError(f"{where}: invalid JSON ({type(e).__name__})") from None
    if not isinstance(report, dict):
        raise ResultError(f"{where}: expected a JSON object, got {type(report).__name__}")
    version = report.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ResultError(f"{where}: format_version must be an integer, got {_short(version)}")
    if version > FORMAT_VERSION:
        raise ResultError(f"{where}: result format_version {_short(version)} is newer than this ganinv reads "
                          f"({FORMAT_VERSION}); upgrade ganinv")
    model = report.get("model")
    if model is not None:
        if not isinstance(model, dict):
            raise ResultError(f"{where}: 'model' must be an object with name and sha256")
        for key in ("name", "sha256"):
            if model.get(key) is not None and not isinstance(model.get(key), str):
                raise ResultError(f"{where}: model {key} must be a string, got {type(model.get(key)).__name__}")
    checked = dict(report)
    for key, (types, description, default) in _REPORT_FIELDS.items():
        value = report.get(key)
        if value is None:
            checked[key] = default.copy() if isinstance(default, (dict, list)) else default
        elif not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ResultError(f"{where}: {key!r} must be {description}, got {type(value).__name__}")
    if not 1 <= checked["threads"] <= 1 << 20:
        raise ResultError(f"{where}: 'threads' must be between 1 and {1 << 20}")
    try:
        checked["seconds"] = float(checked["seconds"])
    except OverflowError:
        raise ResultError(f"{where}: 'seconds' is out of range") from None
    return checked


def _short(value) -> str:
    """repr of a value from an untrusted file, cut short for a one-line message."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        text = f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


@contextmanager
def _open_zip(path: Path) -> Iterator[zipfile.ZipFile]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, struct.error):
        raise ResultError(f"{path}: not an inversion result (neither a result folder nor a zip of one)") from None
    except OSError as e:
        raise ResultError(f"{path}: cannot read ({e.strerror or e})") from None
    with zf:
        try:
            yield zf
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, OSError,
                struct.error, MemoryError) as e:
            raise ResultError(f"{path}: corrupt or unsupported zip ({e})") from None


def _report_member(zf: zipfile.ZipFile, path: Path) -> str:
    found = [name for name in zf.namelist() if name == REPORT_FILE or name.endswith("/" + REPORT_FILE)]
    if len(found) != 1:
        raise ResultError(f"{path}: expected exactly one result ({REPORT_FILE}) in the zip, found {len(found)}")
    return found[0]


def _is_zip_symlink(member: zipfile.ZipInfo) -> bool:
    return (member.external_attr >> 16) & 0o170000 == 0o120000


@contextmanager
def _extracted_zip(path: Path) -> Iterator[tuple[Path, Path]]:
    """(temporary folder, the result folder in it) of a result zip, extracted; removed afterwards.

    Refuses zips with too many members, members (declared or actual) larger than the limits, links,
    and names that would land outside the folder."""
    with tempfile.TemporaryDirectory(prefix="ganinv-result-") as tmp_name:
        tmp = Path(tmp_name).resolve()
        with _open_zip(path) as zf:
            members = zf.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                raise ResultError(f"{path}: {len(members)} files in the zip (at most {MAX_ZIP_MEMBERS}); "
                                  "a result has a handful")
            declared = 0
            for member in members:
                name = member.filename
                if _is_zip_symlink(member):
                    raise ResultError(f"{path}: {name!r} in the zip is a link; result zips hold plain files")
                target = (tmp / name).resolve()
                if "\x00" in name or os.path.isabs(name) or not target.is_relative_to(tmp):
                    raise ResultError(f"{path}: unsafe path {name!r} in zip")
                if member.file_size > MAX_ZIP_MEMBER_BYTES:
                    raise ResultError(f"{path}: {name!r} unpacks to {member.file_size:,} bytes "
                                      f"(at most {MAX_ZIP_MEMBER_BYTES:,} per file)")
                if member.file_size > 2 ** 20 and member.file_size > MAX_ZIP_RATIO * max(member.compress_size, 1):
                    raise ResultError(f"{path}: {name!r} has a compression ratio over {MAX_ZIP_RATIO} "
                                      f"({member.compress_size:,} -> {member.file_size:,} bytes); not a result zip")
                declared += member.file_size
            if declared > MAX_ZIP_BYTES:
                raise ResultError(f"{path}: the zip unpacks to {declared:,} bytes (at most {MAX_ZIP_BYTES:,})")
            inner = Path(_report_member(zf, path)).parent
            written = 0
            for member in members:
                target = (tmp / member.filename).resolve()
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                size = 0
                with zf.open(member) as source, open(target, "xb") as sink:
                    while chunk := source.read(1 << 20):
                        size += len(chunk)
                        written += len(chunk)
                        if size > min(member.file_size, MAX_ZIP_MEMBER_BYTES) or written > MAX_ZIP_BYTES:
                            raise ResultError(f"{path}: {member.filename!r} unpacks to more bytes than "
                                              "declared or allowed")
                        sink.write(chunk)
        yield tmp, tmp / inner


def _npy_header(data, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the header of array `key` of an open npz, without reading the array."""
    names = data.zip.namelist()
    member = f"{key}.npy" if f"{key}.npy" in names else key
    with data.zip.open(member) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    return tuple(int(n) for n in shape), np.dtype(dtype)


def _read_latent(path: Path, G) -> dict[str, torch.Tensor]:
    """latent.npz -> {'w': [1, num_ws, w_dim], 'z': [1, z_dim], 'c': [1, c_dim]} (z, c when present).

    Each array's header is checked (dtype, shape) before the array is read, so a header claiming
    absurd sizes costs nothing; values must be finite."""
    if not path.is_file():
        raise ResultError(f"{path.parent}: latent.npz is missing")
    try:
        if path.stat().st_size > MAX_LATENT_BYTES:
            raise ResultError(f"{path}: {path.stat().st_size:,} bytes is too large for a latent file")
        raw = path.read_bytes()
        # From memory: np.load of a path leaves the file open when the archive turns out to be broken.
        data = np.load(io.BytesIO(raw), allow_pickle=False) if raw[:4] == b"PK\x03\x04" else None
    except OSError as e:
        raise ResultError(f"{path}: cannot read ({e.strerror or e})") from None
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error, struct.error) as e:
        raise ResultError(f"{path}: cannot read ({e})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ResultError(f"{path}: not an .npz archive (expected the arrays w, z, c)")
    expected = {"w": (1, G.num_ws, G.w_dim), "z": (1, G.z_dim), "c": (1, G.c_dim)}
    out = {}
    with data:
        if "w" not in data.files:
            raise ResultError(f"{path}: no array 'w' (expected shape [1, {G.num_ws}, {G.w_dim}])")
        for key, shape in expected.items():
            if key not in data.files:
                continue
            try:
                found_shape, dtype = _npy_header(data, key)
            except UNTRUSTED_FILE_ERRORS as e:
                raise ResultError(f"{path}: cannot read array {key!r} ({_reason(e)})") from None
            if dtype.kind not in "fiu":
                raise ResultError(f"{path}: array {key!r} has dtype {dtype}, expected float32")
            if found_shape != shape:
                if key == "w":
                    raise ResultError(f"{path}: latent w has shape {found_shape}, model expects "
                                      f"[1, {G.num_ws}, {G.w_dim}]")
                raise ResultError(f"{path}: array {key!r} has shape {found_shape}, expected {list(shape)}")
            try:
                array = data[key]
            except UNTRUSTED_FILE_ERRORS as e:
                raise ResultError(f"{path}: cannot read array {key!r} ({_reason(e)})") from None
            if tuple(array.shape) != shape or array.dtype.kind not in "fiu":
                raise ResultError(f"{path}: array {key!r} does not match its header")
            if not np.isfinite(array).all():
                raise ResultError(f"{path}: array {key!r} contains NaN or inf")
            out[key] = torch.from_numpy(np.asarray(array, dtype=np.float32).copy())
    return out


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return text or type(error).__name__


def _read_noise(path: Path, G) -> dict[str, torch.Tensor]:
    """noise.safetensors -> {layer: [1, 1, H, W]}, layers, sizes and values checked against G."""
    if not path.is_file():
        raise ResultError(f"{path}: not a regular file")
    buffers = G.synthesis.noise_buffers()
    # float64 maps of every layer plus the header: anything larger is not this model's noise
    limit = 8 * sum(b.numel() for b in buffers.values()) + (1 << 20)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ResultError(f"{path}: cannot read ({e.strerror or e})") from None
    if size > limit:
        raise ResultError(f"{path}: {size:,} bytes is too large for this model's noise maps")
    try:
        noise = load_tensors(path, what="noise maps", error=ResultError)
    except GanInvError:
        raise
    except UNTRUSTED_FILE_ERRORS as e:
        raise ResultError(f"{path}: cannot read the noise maps ({_reason(e)})") from None
    for name, value in noise.items():
        if name not in buffers:
            raise ResultError(f"{path}: noise map {name!r} is not a noise layer of this model "
                              f"(layers: {', '.join(buffers)})")
        shape = (1, 1, *buffers[name].shape[-2:])
        if tuple(value.shape) != shape:
            raise ResultError(f"{path}: noise map {name!r} has shape {tuple(value.shape)}, expected {list(shape)}")
        if not value.is_floating_point() or not torch.isfinite(value).all():
            raise ResultError(f"{path}: noise map {name!r} must be finite floats")
    return {k: v.float() for k, v in noise.items()}


def _read_tuned_generator(path: Path, G):
    """generator/ -> the tuned G (wrapped in its locality gate when the card has one)."""
    if not path.is_dir():
        raise ResultError(f"{path}: not a folder (expected the tuned generator's model folder)")
    try:
        G_tuned, _, card, extra = load_native(path)
    except UNTRUSTED_FILE_ERRORS as e:
        raise ResultError(f"{path}: cannot load the tuned generator ({_reason(e)})") from None
    keys = ("num_ws", "w_dim", "img_resolution", "img_channels")
    if any(getattr(G_tuned, k) != getattr(G, k) for k in keys):
        raise ResultError(f"{path}: the tuned generator does not match the base model's architecture "
                          f"({', '.join(f'{k} {getattr(G_tuned, k)} vs {getattr(G, k)}' for k in keys)})")
    for name, tensor in G_tuned.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ResultError(f"{path}: the tuned generator's {name} contains NaN or inf")
    gate = card.get("locality_gate")
    if gate is None:
        return G_tuned
    try:
        pivots = extra["gate.pivots"].float().to(next(G.parameters()).device)
        if not torch.isfinite(pivots).all():
            raise ValueError("pivots contain NaN or inf")
        return LocallyTunedGenerator(G, G_tuned.to(pivots.device), pivots, float(gate["inner_radius"]),
                                     float(gate["outer_radius"]))
    except UNTRUSTED_FILE_ERRORS as e:
        raise ResultError(f"{path}: invalid locality gate ({e!r})") from None


def _read_multicode(path: Path, report: dict, G) -> MultiCodeGenerator:
    """multicode.safetensors + report.json's "multicode": {"layer": L} -> the multi-code generator over G."""
    info = report.get("multicode")
    layer = info.get("layer") if isinstance(info, dict) else None
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ResultError(f"{path / REPORT_FILE}: 'multicode' must be an object with an integer 'layer', got {info!r}")
    if not _member(path, MULTICODE_FILE).is_file():
        raise ResultError(f"{path}: report.json describes a multi-code result, but {MULTICODE_FILE} is missing")
    try:
        found = MultiCodeGenerator.load(_member(path, MULTICODE_FILE), G, layer)
    except UNTRUSTED_FILE_ERRORS as e:
        raise ResultError(f"{path / MULTICODE_FILE}: {_reason(e)}") from None
    if len(found) != 1:
        raise ResultError(f"{path / MULTICODE_FILE}: holds {len(found)} targets' codes, a result folder holds one")
    return found


def _read_saved_png(path: Path, channels: int, resolution: int) -> torch.Tensor:
    """A PNG `save` wrote (the model's size, 8-bit) -> [1, C, H, W] in [-1, 1]."""
    if not path.is_file():
        raise ResultError(f"{path.parent}: {path.name} is missing")
    try:
        with Image.open(path) as im:
            size = im.size
            if size == (resolution, resolution):
                arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError) + UNTRUSTED_FILE_ERRORS as e:
        raise ResultError(f"{path}: cannot read the image ({_reason(e)})") from None
    if size != (resolution, resolution):
        raise ResultError(f"{path}: image is {size[0]}x{size[1]}, the model's is {resolution}x{resolution}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1


__all__ = ["InversionResult", "FORMAT_VERSION", "ResultError", "atomic_folder", "read_result_report",
           "result_model_name", "resolve_result_model", "result_input_sha256", "is_complete_result"]
