"""The web UI's logic, free of any web framework: workspace, per-session editor state, the shared
direction library, streamed inversion, edits and exports.

The interface follows the upload -> invert -> factorize -> slide loop of the closed-form
factorization demo (Shen & Zhou, "Closed-Form Factorization of Latent Semantics in GANs", CVPR 2021)
put behind an inversion step, as in the upload-invert-slider interfaces built on it. `server.py`
wires these pieces to Gradio; tests drive them directly.

Everything the app writes lives under one `Workspace` (a temporary folder removed on shutdown); each
browser session gets its own `EditorSession` (its target, result, sliders and export folder), kept in
a `SessionStore` keyed by the session id, so sessions never see each other's images.
"""
from __future__ import annotations

import io
import json
import math
import os
import queue
import secrets
import shutil
import tempfile
import threading
import time
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from PIL import Image

from ..data.io import ImageLoadError, load_image, to_pil
from ..editing import Direction, edit_many, find_ganspace_directions, find_sefa_directions, layer_groups, load_direction
from ..inversion import METHODS, InversionResult, StepInfo, invert
from ..latent import Latent, latent_from_seed
from ..models.registry import Model
from ..utils import atomic_path, parse_layers
from ..errors import GanInvError

#: Most sliders shown at once (SeFa/GANSpace count control goes up to this).
MAX_SLIDERS = 10
#: Directions kept for typed layer ranges (besides the presets), least recently used dropped first.
MAX_CACHED_RANGES = 64
#: Slider range in prior standard deviations (the Direction strength unit; +/-3 is a large edit).
STRENGTH_LIMIT = 5.0
#: Uploads larger than this are refused (the server passes the same limit to the framework).
DEFAULT_MAX_UPLOAD_MB = 10.0
#: Uploaded images with more pixels than this are refused before decoding (decompression bombs).
MAX_UPLOAD_PIXELS = 40_000_000
#: Uploads with more pixels than this count as large: at most MAX_LARGE_DECODES of them are decoded at
#: once (a full decode of a 40-megapixel RGB image holds about 120 MB), the others wait their turn.
LARGE_UPLOAD_PIXELS = 4_000_000
MAX_LARGE_DECODES = 2
_large_decodes = threading.BoundedSemaphore(MAX_LARGE_DECODES)
#: Displayed images are upscaled (nearest neighbour) to at least this many pixels on a side.
DISPLAY_SIZE = 256
#: Held-out images offered as examples.
MAX_EXAMPLES = 24
#: Seeds drawn at once in the sampling tab.
MAX_SEEDS = 32
#: Step counts offered by default in the UI where a method names no `quick_steps` (the methods' own
#: defaults are benchmark settings and can take minutes on a CPU); the user can raise them up to
#: MAX_UI_STEPS. Which settings hold the steps, each method's registry entry says.
UI_DEFAULT_STEPS = 200
UI_DEFAULT_FIRST_STAGE_STEPS = 100
MAX_UI_STEPS = 3000
FITS = ("crop", "pad")
FAMILIES = {"sefa": "SeFa (closed form)", "ganspace": "GANSpace (PCA of W)",
            "shipped": "InterFaceGAN (shipped)", "voynov": "Voynov-Babenko (shipped)",
            "steerability": "Steerability walks (shipped)"}
#: Shipped directions of these finders get a family of their own; any other shipped direction (InterFaceGAN,
#: StyleSpace, an imported file) is offered under 'shipped'.
OWN_FAMILY_METHODS = ("voynov", "steerability")


def _component_label(direction, i: int) -> str:
    """A component's label without the method's name, which the family name already says
    ('voynov all #0' -> 'all #0'; 'zoom' stays)."""
    label = direction.labels[i] if direction.labels else f"#{i}"
    if label.lower().startswith(direction.method + " "):
        label = label[len(direction.method) + 1:]
    return label


class AppError(GanInvError):
    """A user-facing problem (bad upload, nothing to invert yet): the message is shown as is."""


# ---------------------------------------------------------------------------------------------- workspace


class Workspace:
    """The one folder the app writes to: framework cache, examples, per-session exports.

    Created under the system temporary folder (or `parent`) and removed by `cleanup()`; the server
    also removes it at exit."""

    def __init__(self, parent: str | os.PathLike | None = None) -> None:
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="ganinv-serve-", dir=parent))
        for name in ("cache", "sessions", "examples"):
            (self.root / name).mkdir()

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def session_dir(self, session_id: str) -> Path:
        safe = "".join(ch for ch in session_id if ch.isalnum() or ch in "-_")[:64] or "anonymous"
        return self.root / "sessions" / safe

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- images


def display_image(image: torch.Tensor, size: int = DISPLAY_SIZE) -> Image.Image:
    """[1, C, H, W] or [C, H, W] in [-1, 1] -> PIL, upscaled by an integer factor (nearest) so that
    small generator outputs are visible pixel for pixel."""
    pil = to_pil(image)
    factor = max(1, size // max(pil.width, pil.height))
    if factor > 1:
        pil = pil.resize((pil.width * factor, pil.height * factor), Image.NEAREST)
    return pil


def read_upload(path: str | os.PathLike, model: Model, fit: str = "crop",
                max_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 2 ** 20)) -> torch.Tensor:
    """An uploaded file -> target [1, C, R, R] in [-1, 1] for the model, or AppError with a message a
    user can act on (too large, not an image, corrupt)."""
    if fit not in FITS:
        raise AppError(f"unknown fit {fit!r}; choose crop or pad")
    path = Path(path)
    name = path.name
    try:
        size = path.stat().st_size
    except OSError:
        raise AppError(f"The upload '{name}' could not be read; please try again.") from None
    if size > max_bytes:
        raise AppError(f"'{name}' is {size / 2 ** 20:.1f} MB; the limit is {max_bytes / 2 ** 20:.0f} MB. "
                       "Please upload a smaller image.")
    G = model.G
    large = LARGE_UPLOAD_PIXELS < _header_pixels(path) <= MAX_UPLOAD_PIXELS
    try:
        if large:
            with _large_decodes:
                return load_image(path, G.img_resolution, G.img_channels, fit=fit, max_pixels=MAX_UPLOAD_PIXELS)
        return load_image(path, G.img_resolution, G.img_channels, fit=fit, max_pixels=MAX_UPLOAD_PIXELS)
    except ImageLoadError as e:
        reason = str(e).split(": ", 1)[-1]
        raise AppError(f"Could not use '{name}' as an image ({reason}). Please upload a PNG, JPEG, WebP, "
                       "GIF or BMP picture.") from None


def _header_pixels(path: Path) -> int:
    """Width x height from the image header alone (no pixel data decoded); 0 when unreadable (the full
    load then reports the problem)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
        return int(width) * int(height)
    except Exception:  # noqa: BLE001 - load_image gives the user-facing error
        return 0


# ---------------------------------------------------------------------------------------------- directions


@dataclass(frozen=True)
class SliderSpec:
    """One slider: component `index` of `direction`, shown with `label`."""

    direction: Direction
    index: int
    label: str


class DirectionLibrary:
    """Directions of one model, shared by every session: found on first use and cached.

    Families: 'sefa' (closed-form, for a layer range), 'ganspace' (PCA of W, applied to a layer range),
    'voynov' and 'steerability' (the model's shipped directions of those trained finders), and 'shipped'
    (its other shipped directions, InterFaceGAN's, by name). A layer range is a
    preset ('all', 'coarse', 'middle', 'fine') or any range of ws indices as the CLI takes it ('0-1',
    '2-5', '6-', '0,2,4-5')."""

    def __init__(self, model: Model, num_std_samples: int = 10_000, ganspace_samples: int = 20_000) -> None:
        self.model = model
        self.num_std_samples = num_std_samples
        self.ganspace_samples = max(ganspace_samples, model.G.w_dim + 1)
        self._cache: OrderedDict[tuple[str, str], Direction] = OrderedDict()
        self._lock = threading.Lock()
        groups = layer_groups(model.G)
        self.groups: dict[str, list[int]] = {"all": list(range(model.G.num_ws)), **groups}
        self.shipped: list[SliderSpec] = []
        self.trained: dict[str, list[SliderSpec]] = {}
        for name, path in sorted((model.directions or {}).items()):
            try:
                direction, _ = load_direction(str(path), model=model)
            except ValueError:
                continue  # a broken or mismatched file is left out rather than breaking the app
            if direction.method in ("sefa", "ganspace"):
                continue  # offered through their own families
            if direction.method in OWN_FAMILY_METHODS:
                short = FAMILIES[direction.method].split(" (")[0]
                self.trained.setdefault(direction.method, []).extend(
                    SliderSpec(direction, i, f"{short} {_component_label(direction, i)}")
                    for i in range(len(direction)))
                continue
            for i in range(len(direction)):
                label = str(direction.settings.get("attribute") or direction.name)
                if len(direction) > 1:
                    label = f"{label} [{direction.label(i)}]"
                self.shipped.append(SliderSpec(direction, i, label))

    def families(self) -> dict[str, str]:
        out = {k: v for k, v in FAMILIES.items() if k in ("sefa", "ganspace")}
        if self.shipped:
            out["shipped"] = FAMILIES["shipped"]
        out.update({k: FAMILIES[k] for k in OWN_FAMILY_METHODS if self.trained.get(k)})
        return out

    def presets(self) -> list[str]:
        """Layer-range presets present in this generator: all, then coarse / middle / fine."""
        return list(self.groups)

    def layer_choice(self, layers: str) -> tuple[str, list[int]]:
        """(name, ws indices) of a preset or of any layer range; a range that equals a preset is named
        after it. AppError with the accepted forms for anything else."""
        text = str(layers or "").strip()
        if text in self.groups:
            return text, self.groups[text]
        num_ws = self.model.G.num_ws
        hint = f"give ws indices 0-{num_ws - 1} like 0-1, 2-5, 6-, 0,2,4-5 or a preset ({', '.join(self.groups)})"
        if not text:
            raise AppError(f"no layers given; {hint}.")
        if not any(ch.isdigit() for ch in text) and text.lower() != "all":
            raise AppError(f"unknown layer preset {text!r}; {hint}.")
        try:
            indices = parse_layers(text, num_ws)
        except ValueError as e:
            raise AppError(f"{str(e).split(';')[0]}; {hint}.") from None
        if not indices:
            raise AppError(f"layers {text!r} select no ws index; {hint}.")
        for name, group in self.groups.items():
            if group == indices:
                return name, group
        return _range_text(indices), indices

    def max_count(self) -> int:
        return min(MAX_SLIDERS, self.model.G.w_dim)

    def direction(self, family: str, layers: str) -> Direction:
        """The directions of `family` for `layers` (a preset or any layer range)."""
        if family not in ("sefa", "ganspace"):
            raise AppError(f"unknown direction family {family!r}")
        name, indices = self.layer_choice(layers)
        key = (family, name)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._find(family, name, indices)
                custom = [k for k in self._cache if k[1] not in self.groups]
                for old in custom[:max(0, len(custom) - MAX_CACHED_RANGES)]:
                    del self._cache[old]  # presets stay; typed ranges are kept up to a bound
            self._cache.move_to_end(key)
            return self._cache[key]

    def _find(self, family: str, preset: str, indices: list[int]) -> Direction:
        shipped_name = f"{family}_{preset}" if (family, preset) != ("ganspace", "all") else "ganspace"
        shipped = (self.model.directions or {}).get(shipped_name)
        if shipped is not None:
            try:
                direction, _ = load_direction(str(shipped), model=self.model)
                if len(direction) >= self.max_count():
                    return direction
            except ValueError:
                pass  # fall back to finding it here
        layers = "all" if preset == "all" else indices
        if family == "sefa":
            return find_sefa_directions(self.model, layers=layers, num=self.max_count(),
                                        num_std_samples=self.num_std_samples, name=f"sefa_{preset}")
        return find_ganspace_directions(self.model, layers=layers, num=self.max_count(),
                                        num_samples=self.ganspace_samples, num_std_samples=self.num_std_samples,
                                        name=f"ganspace_{preset}")

    def sliders(self, family: str, layers: str = "all", count: int = 5) -> list[SliderSpec]:
        """The slider list for a family; `layers` (a preset or any layer range) and `count` apply to
        SeFa and GANSpace."""
        if family == "shipped":
            return list(self.shipped[:MAX_SLIDERS])
        if family in OWN_FAMILY_METHODS:
            if not self.trained.get(family):
                raise AppError(f"this model ships no {FAMILIES[family].split(' (')[0]} directions")
            return list(self.trained[family][:max(1, min(int(count), MAX_SLIDERS))])
        count = max(1, min(int(count), self.max_count()))
        preset, _ = self.layer_choice(layers)
        direction = self.direction(family, preset)
        short = "SeFa" if family == "sefa" else "GANSpace"
        specs = []
        for i in range(min(count, len(direction))):
            score = ""
            if direction.scores:
                score = f" ({direction.score_name or 'score'} {direction.scores[i]:.3g})"
            specs.append(SliderSpec(direction, i, f"{short} {preset} #{i}{score}"))
        return specs


def _range_text(indices: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8'."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


# ---------------------------------------------------------------------------------------------- inversion


@dataclass
class InversionProgress:
    """A progress report while an inversion runs (the latest step seen)."""

    step: int
    num_steps: int
    loss: float | None  # None for a method that minimizes no loss
    psnr: float | None
    stage: str
    image: torch.Tensor | None
    seconds: float

    @property
    def fraction(self) -> float:
        return min(1.0, max(0.0, self.step / max(self.num_steps, 1)))

    def text(self) -> str:
        stage = f"{self.stage} " if self.stage else ""
        psnr = f", PSNR {self.psnr:.1f} dB" if self.psnr is not None and math.isfinite(self.psnr) else ""
        loss = f", loss {self.loss:.4g}" if self.loss is not None and math.isfinite(self.loss) else ""
        return f"{stage}step {self.step}/{self.num_steps}{loss}{psnr}, {self.seconds:.1f} s"


def available_methods(model: Model) -> list[str]:
    """Registered inversion methods usable with this model (those that need an encoder need its encoder)."""
    return [name for name, spec in METHODS.items() if not spec.needs_encoder or model.encoder is not None]


def default_method(model: Model) -> str:
    """The first usable method that runs without steps (an encoder: instant), else the first usable one."""
    methods = available_methods(model)
    return next((name for name in methods if not METHODS[name].has_steps), methods[0])


def step_controls(method: str) -> tuple[int | None, int | None]:
    """(default main steps, default first-stage steps) for a method; None where it has no such control."""
    spec = METHODS[method]
    defaults = spec.defaults
    main = None
    if spec.has_steps:
        main = min(int(defaults[spec.step_setting]), spec.quick_steps or UI_DEFAULT_STEPS)
    first = None
    if spec.first_stage_step_setting is not None:
        first = UI_DEFAULT_FIRST_STAGE_STEPS
    return main, first


def inversion_settings(method: str, steps: int | None = None, first_stage_steps: int | None = None,
                       preview_every: int = 5) -> dict:
    """Method settings for the UI's step controls (only settings the method knows)."""
    if method not in METHODS:
        raise AppError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    spec = METHODS[method]
    settings: dict[str, Any] = {}
    if steps is not None and spec.has_steps:
        settings[spec.step_setting] = max(1, min(int(steps), MAX_UI_STEPS))
    if first_stage_steps is not None and spec.first_stage_step_setting is not None:
        settings[spec.first_stage_step_setting] = max(1, min(int(first_stage_steps), MAX_UI_STEPS))
    if "preview_every" in spec.defaults:
        settings["preview_every"] = preview_every
    return settings


def stream_inversion(model: Model, target: torch.Tensor, method: str, settings: dict, *, seed: int = 0,
                     stop: threading.Event | None = None, min_interval: float = 0.2,
                     ) -> Iterator[InversionProgress | InversionResult]:
    """Run `ganinv.invert` in a worker thread and yield InversionProgress reports (at most one per
    `min_interval` seconds, the latest step and the latest preview image), then the InversionResult.

    Setting `stop` (or closing the iterator) asks the method to stop at its next step; a stopped run
    still yields its result (the best latent so far). Errors in the method are raised here."""
    stop = stop or threading.Event()
    events: queue.Queue = queue.Queue()
    started = time.perf_counter()

    def callback(info: StepInfo) -> bool:
        events.put(("step", info))
        return stop.is_set()

    def work() -> None:
        try:
            result = invert(model, target, method, seed=seed, callback=callback, metrics=("ssim",), **settings)
            events.put(("done", result))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer thread
            events.put(("error", e))

    thread = threading.Thread(target=work, name=f"ganinv-invert-{method}", daemon=True)
    thread.start()
    latest: StepInfo | None = None
    latest_image: torch.Tensor | None = None
    last_yield = 0.0
    try:
        while True:
            try:
                # Block (never spin: a zero timeout would starve the worker thread of the GIL).
                kind, payload = events.get(timeout=max(min_interval, 0.05))
            except queue.Empty:
                kind, payload = "tick", None
            if kind == "step":
                latest = payload
                if payload.image is not None:
                    latest_image = payload.image
            elif kind == "error":
                raise payload
            elif kind == "done":
                yield payload
                return
            now = time.perf_counter()
            if latest is not None and now - last_yield >= min_interval:
                last_yield = now
                yield InversionProgress(step=latest.step, num_steps=latest.num_steps, loss=latest.loss,
                                        psnr=latest.psnr, stage=latest.stage,
                                        image=None if latest_image is None else latest_image[:1].detach().cpu(),
                                        seconds=now - started)
                latest_image = None
    finally:
        stop.set()
        thread.join(timeout=60)


def sample_subject(model: Model, seed: int, truncation_psi: float) -> Latent:
    """The prior sample `seed` (NVIDIA's seed convention; class 0 for conditional models) as a subject
    to edit."""
    latent = latent_from_seed(model, seed, truncation_psi=truncation_psi, class_index=0 if model.G.c_dim else None)
    latent.label = f"seed {seed}"
    return latent


def sample_export_fields(model: Model, seed: int, truncation_psi: float) -> dict:
    """How a prior sample is described when exported in the result format (InversionResult.from_subject)."""
    return {"method": "sample", "space": "w", "model_name": model.name, "model_sha256": model.sha256,
            "settings": {"seed": int(seed), "truncation_psi": float(truncation_psi)}, "stop_reason": "prior sample"}


def result_from_sample(model: Model, seed: int, truncation_psi: float) -> InversionResult:
    """A prior sample as a result record (target = reconstruction = its image), as its export saves it."""
    return InversionResult.from_subject(sample_subject(model, seed, truncation_psi),
                                        **sample_export_fields(model, seed, truncation_psi))


def sample_seeds(model: Model, seeds: list[int], truncation_psi: float) -> list[tuple[int, torch.Tensor]]:
    """(seed, image [1, C, H, W]) for each seed, NVIDIA's seed convention."""
    if not seeds:
        raise AppError("Give at least one seed, e.g. 0-7 or 1,5,42.")
    if len(seeds) > MAX_SEEDS:
        raise AppError(f"{len(seeds)} seeds asked for; at most {MAX_SEEDS} at once.")
    if not 0.0 <= truncation_psi <= 2.0:
        raise AppError("truncation psi must be between 0 and 2")
    out = []
    with torch.no_grad():
        for seed in seeds:
            if not 0 <= seed < 2 ** 32:
                raise AppError(f"seed {seed} is out of range (0 to 2^32-1)")
            out.append((seed, sample_subject(model, seed, truncation_psi).render()))
    return out


# ---------------------------------------------------------------------------------------------- sessions


@dataclass
class EditorSession:
    """One browser session's state: its target, the subject the sliders edit (an inversion result or a
    prior sample), sliders and export folder."""

    session_id: str
    folder: Path
    target: torch.Tensor | None = None
    target_label: str = ""
    upload_path: str | None = None  # the last upload, re-read when the fit changes
    faces: Any = None  # the last upload's faces (ganinv.app.faces.FacePhoto) when the face step found some
    subject: Latent | None = None
    #: InversionResult.from_subject's keywords describing a subject that is not an InversionResult
    #: (a prior sample) in the exported zip.
    export_fields: dict = field(default_factory=dict)
    unedited: torch.Tensor | None = None  # the subject's image with every slider at 0
    sliders: list[SliderSpec] = field(default_factory=list)
    strengths: list[float] = field(default_factory=list)
    samples: list[tuple[int, float]] = field(default_factory=list)  # (seed, psi) shown in the sample tab
    stop: threading.Event = field(default_factory=threading.Event)
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    client: str | None = None  # the address it was created for (per-client caps)
    connection: str | None = None  # the framework's connection id (closed with it)

    @property
    def result(self) -> Latent | None:
        """The subject being edited (an InversionResult after an inversion); None before."""
        return self.subject

    def set_target(self, target: torch.Tensor, label: str) -> None:
        """A new image to invert; any previous subject and edit are dropped, a running inversion of the
        previous target is asked to stop."""
        self.stop.set()
        self.target = target.detach().cpu()
        self.target_label = label
        self.subject = None
        self.unedited = None
        self.export_fields = {}
        self.strengths = [0.0] * len(self.sliders)

    def set_result(self, result: InversionResult) -> None:
        """An inversion's result becomes the subject (its first target when it holds several)."""
        self.set_subject(result)

    def set_subject(self, subject: Latent, **export_fields: Any) -> None:
        """The subject the sliders edit: an InversionResult, or any Latent, whose export is then
        described by `export_fields` (InversionResult.from_subject's keywords; method is required)."""
        subject = subject[0] if len(subject) > 1 else subject
        if isinstance(subject, InversionResult):
            unedited, export_fields = subject.reconstruction[:1], {}
        else:
            unedited = subject.render()
            export_fields = {"method": "latent", **export_fields}
        self.subject = subject
        self.unedited = unedited.clamp(-1, 1)
        self.export_fields = export_fields
        self.strengths = [0.0] * len(self.sliders)

    def set_sample(self, model: Model, seed: int, truncation_psi: float) -> torch.Tensor:
        """The prior sample `seed` becomes both the target and the subject (nothing to invert); returns
        its image [1, C, H, W]."""
        subject = sample_subject(model, seed, truncation_psi)
        image = subject.render()
        self.set_target(image, subject.label)
        self.set_subject(subject, **sample_export_fields(model, seed, truncation_psi))
        return image

    def set_sliders(self, specs: list[SliderSpec]) -> None:
        self.sliders = list(specs)
        self.strengths = [0.0] * len(self.sliders)

    def edits(self, strengths: list[float] | None = None) -> list[tuple[Direction, int, float]]:
        if strengths is not None:
            values = [float(s) for s in strengths[:len(self.sliders)]]
            values += [0.0] * (len(self.sliders) - len(values))
            self.strengths = [max(-STRENGTH_LIMIT, min(STRENGTH_LIMIT, v)) for v in values]
        return [(spec.direction, spec.index, s) for spec, s in zip(self.sliders, self.strengths) if s != 0.0]

    def render(self, strengths: list[float] | None = None) -> torch.Tensor:
        """The edited image [1, C, H, W] for the given slider values (also stored as the current ones)."""
        if self.subject is None:
            raise AppError("Invert an image first (or pick a sample in the Sample seeds tab).")
        edits = self.edits(strengths)
        if not edits:
            return self.unedited
        return edit_many(self.subject, edits)

    def export_record(self) -> InversionResult:
        """The subject as the result that the download zip holds."""
        if self.subject is None:
            raise AppError("Nothing to download yet: invert an image first.")
        if isinstance(self.subject, InversionResult):
            return self.subject
        return InversionResult.from_subject(self.subject, target=self.target, **self.export_fields)

    def export(self) -> tuple[Path, Path]:
        """Write the edited PNG (at the generator's resolution) and the result zip into this session's
        folder; returns their paths. The zip is `InversionResult.to_zip()` of the subject (a prior sample
        is recorded as a result with method 'sample') plus `edit/` (edit.json, edited.png and the
        direction files used), and loads back with `InversionResult.load`."""
        record = self.export_record()
        edited = self.render()
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        png_path = self.folder / f"ganinv-edited-{stamp}.png"
        png_buffer = io.BytesIO()
        to_pil(edited).save(png_buffer, format="PNG")
        png_bytes = png_buffer.getvalue()
        buffer = io.BytesIO(record.to_zip())
        with zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("edit/edited.png", png_bytes)
            edits = []
            saved: set[str] = set()
            with tempfile.TemporaryDirectory(dir=self.folder) as tmp:
                for spec, strength in zip(self.sliders, self.strengths):
                    if strength == 0.0:
                        continue
                    stem = _safe_stem(spec.direction.name)
                    if stem not in saved:
                        spec.direction.save(Path(tmp) / f"{stem}.json")
                        for suffix in (".json", ".safetensors"):
                            zf.write(Path(tmp) / f"{stem}{suffix}", f"edit/directions/{stem}{suffix}")
                        saved.add(stem)
                    edits.append({"direction": f"directions/{stem}.json:{spec.index}", "label": spec.label,
                                  "method": spec.direction.method, "strength": strength,
                                  "units": spec.direction.units})
            zf.writestr("edit/edit.json", json.dumps({
                "edits": edits, "note": "strength in prior standard deviations along each component; "
                "apply with ganinv.editing.edit_many(InversionResult.load(zip), ...)"}, indent=2))
        zip_path = self.folder / f"ganinv-{record.method}-result-{stamp}.zip"
        # Each file appears complete or not at all (a download never serves a half-written file).
        for path, data in ((png_path, png_bytes), (zip_path, buffer.getvalue())):
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        return png_path, zip_path

    def close(self) -> None:
        """Stop any running inversion, drop every tensor this session holds (its target, subject, a
        tuned generator) and remove its export folder."""
        self.stop.set()
        self.target = self.subject = self.unedited = None
        self.upload_path = None
        self.export_fields = {}
        self.sliders, self.strengths, self.samples = [], [], []
        shutil.rmtree(self.folder, ignore_errors=True)


def _safe_stem(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:80] or "direction"


class SessionHandle:
    """What a browser connection holds to find its session: the key the store issued, nothing else.

    The server keeps it (Gradio's per-connection `gr.State`, never sent to the browser); a client can
    neither read nor choose it. A copy is always a fresh, empty handle, so that Gradio's per-connection
    copy of the initial value never shares a key between connections."""

    __slots__ = ("key",)

    def __init__(self) -> None:
        self.key: str | None = None

    def __deepcopy__(self, memo: dict) -> "SessionHandle":
        return SessionHandle()

    def __repr__(self) -> str:
        return "SessionHandle(<key hidden>)" if self.key else "SessionHandle(None)"


class SessionStore:
    """Editor sessions under keys the server makes (`secrets.token_urlsafe`): a client can neither
    choose nor guess another's key, so it cannot reach, replace or evict a particular session.

    Capacity is shared fairly: at most `max_sessions` sessions in all and `max_per_client` per client
    (its network address). Room for a new session is made only by closing an idle one (no request for
    `min_idle_seconds`, no inversion running), least recently used first, and only a session of the same
    client when that client is at its own cap; when there is no idle session to close, the new session is
    refused with a message (AppError) and every existing one is kept. Sessions idle for `idle_seconds`
    are closed whenever the store is used. Closing a session frees its tensors and removes its folder."""

    def __init__(self, workspace: Workspace, max_sessions: int = 64, max_per_client: int = 16,
                 min_idle_seconds: float = 300.0, idle_seconds: float = 6 * 3600,
                 clock=time.monotonic) -> None:
        if max_sessions < 1 or max_per_client < 1:
            raise ValueError("max_sessions and max_per_client must be at least 1")
        self.workspace = workspace
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client
        self.min_idle_seconds = min_idle_seconds
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._sessions: OrderedDict[str, EditorSession] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def create(self, client: str | None = None, connection: str | None = None) -> EditorSession:
        """A new session under a fresh random key, for `client` (an address; None counts as one client)
        and the framework's `connection` id (used only to close it when that connection ends). Raises
        AppError when the server or this client is full of active sessions."""
        closed: list[EditorSession] = []
        try:
            with self._lock:
                now = self.clock()
                closed += self._expire(now)
                mine = [s for s in self._sessions.values() if s.client == client]
                if len(mine) >= self.max_per_client:
                    victim = self._idle_victim(mine, now)
                    if victim is None:
                        raise AppError(f"Too many editing sessions from your address ({len(mine)} open, all in "
                                       "use); close other tabs of this page or try again in a few minutes.")
                    closed.append(self._sessions.pop(victim.session_id))
                if len(self._sessions) >= self.max_sessions:
                    victim = self._idle_victim(list(self._sessions.values()), now)
                    if victim is None:
                        raise AppError(f"The server is busy: all {self.max_sessions} editing sessions are in "
                                       "use. Please try again in a few minutes.")
                    closed.append(self._sessions.pop(victim.session_id))
                key = secrets.token_urlsafe(24)
                while key in self._sessions:  # pragma: no cover - 192 random bits
                    key = secrets.token_urlsafe(24)
                session = EditorSession(key, self.workspace.session_dir(key), client=client, connection=connection,
                                        last_used=now)
                self._sessions[key] = session
                return session
        finally:
            for other in closed:
                other.close()

    def get(self, key: str | None) -> EditorSession | None:
        """The session under `key`, marked as used now; None when there is none (never issued, or
        closed since)."""
        closed: list[EditorSession] = []
        with self._lock:
            now = self.clock()
            closed += self._expire(now)
            session = self._sessions.get(key) if key else None
            if session is not None:
                session.last_used = now
                self._sessions.move_to_end(key)
        for other in closed:
            other.close()
        return session

    def session_for(self, handle: SessionHandle, client: str | None = None,
                    connection: str | None = None) -> EditorSession:
        """The session a connection's handle points to, created (and the handle set) when it has none
        or its session was closed. Raises AppError when a new session is refused."""
        if handle is None:
            raise AppError("This request carries no session; reload the page.")
        session = self.get(handle.key)
        if session is None:
            session = self.create(client=client, connection=connection)
            handle.key = session.session_id
        return session

    def release(self, handle: SessionHandle | None) -> None:
        """Close the session of a handle the framework discards (the connection's state expired)."""
        if isinstance(handle, SessionHandle):
            self.drop(handle.key)

    def drop(self, key: str | None) -> None:
        with self._lock:
            session = self._sessions.pop(key, None) if key else None
        if session is not None:
            session.close()

    def drop_connection(self, connection: str | None) -> None:
        """Close the sessions created for a framework connection that has ended (tab closed)."""
        if not connection:
            return
        with self._lock:
            gone = [self._sessions.pop(k) for k, s in list(self._sessions.items()) if s.connection == connection]
        for session in gone:
            session.close()

    def _idle_victim(self, candidates: list[EditorSession], now: float) -> EditorSession | None:
        for session in candidates:  # in least-recently-used order
            if now - session.last_used >= self.min_idle_seconds and not session.lock.locked():
                return session
        return None

    def _expire(self, now: float) -> list[EditorSession]:
        expired = [k for k, s in self._sessions.items()
                   if now - s.last_used > self.idle_seconds and not s.lock.locked()]
        return [self._sessions.pop(k) for k in expired]

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, key: str) -> bool:
        return key in self._sessions


__all__ = [
    "AppError", "Workspace", "DirectionLibrary", "SliderSpec", "EditorSession", "SessionHandle", "SessionStore",
    "InversionProgress", "stream_inversion", "available_methods", "default_method", "step_controls",
    "inversion_settings", "read_upload", "display_image", "sample_seeds", "sample_subject", "sample_export_fields",
    "result_from_sample",
    "MAX_SLIDERS", "STRENGTH_LIMIT", "DEFAULT_MAX_UPLOAD_MB", "FITS", "FAMILIES",
]
