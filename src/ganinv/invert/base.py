"""InversionResult, the method registry, and helpers shared by the inversion methods.

Inversion methods are plain functions `run(G, target, *, D, real_images, seed, callback, ...) ->
MethodOutput`; `ganinv.invert` looks them up here by name, applies the defaults, times them, computes
metrics and wraps everything into an `InversionResult`. Methods never mutate the caller's G or D: the
tuning methods (PTI, Clone) return a tuned copy.
"""
from __future__ import annotations

import copy
import io
import json
import math
import os
import platform
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..models.local import GATE_DEFAULTS, LocallyTunedGenerator
from ..models.stylegan2 import Generator
from ..utils import jsonable

FORMAT_VERSION = 1


@dataclass
class StepInfo:
    """What a method reports to the callback at each step."""

    step: int
    num_steps: int
    loss: float | None  # None for a method that minimizes no loss (the encoder's passes)
    psnr: float | None = None
    image: torch.Tensor | None = None  # current reconstruction, only every few steps
    stage: str = ""

    def progress_fields(self) -> dict[str, str]:
        """What a progress bar shows: the loss (when the method has one) and the PSNR, formatted."""
        fields = {}
        if self.loss is not None and math.isfinite(self.loss):
            fields["loss"] = f"{self.loss:.4f}"
        if self.psnr is not None and math.isfinite(self.psnr):
            fields["psnr"] = f"{self.psnr:.2f}"
        return fields


Callback = Callable[[StepInfo], Any]  # return True to ask the method to stop early


@dataclass
class MethodOutput:
    ws: torch.Tensor  # [N, num_ws, w_dim]
    space: str
    noise: dict[str, torch.Tensor] | None = None  # layer name -> [N, 1, H, W]
    G: Generator | None = None  # tuned copy (pti, clone)
    z: torch.Tensor | None = None
    history: list[dict] = field(default_factory=list)
    stop_reason: str = "num_steps"
    extras: dict = field(default_factory=dict)
    # The image of the returned latent (and noise, and tuned G) with noise_mode="const", unclamped, when
    # the method has rendered it anyway; `invert` then reuses it instead of rendering again.
    reconstruction: torch.Tensor | None = None


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}


@dataclass(frozen=True)
class Setting:
    """One setting of an inversion method: its name, default, type and allowed values.

    `type` is bool, int, float, str or list (a list of `item_type`, stored as a tuple). `optional`
    allows None (e.g. "no PSNR target"); `choices`, `min` and `max` bound the value (`min`/`max`
    inclusive). `check` returns the value in its type or raises ValueError with one line that names
    the setting.
    """

    name: str
    default: Any
    type: type = float
    help: str = ""
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    optional: bool = False
    item_type: type = float

    def check(self, value: Any, method: str = "") -> Any:
        where = f"{method} setting {self.name}" if method else f"setting {self.name}"
        if value is None and (self.optional or self.default is None):
            return None
        expected = _TYPE_NAMES.get(self.type, self.type.__name__)
        if self.type is list:
            expected = f"a list of {_TYPE_NAMES.get(self.item_type, self.item_type.__name__).removeprefix('a ')}s"
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise ValueError(f"{where} must be {expected}, got {value!r}")
            try:
                value = tuple(_coerce(item, self.item_type) for item in value)
            except (TypeError, ValueError):
                raise ValueError(f"{where} must be {expected}, got {value!r}") from None
        else:
            try:
                value = _coerce(value, self.type)
            except (TypeError, ValueError):
                raise ValueError(f"{where} must be {expected}"
                                 f"{' or None' if self.optional or self.default is None else ''}, "
                                 f"got {value!r}") from None
            if self.choices is not None and value not in self.choices:
                raise ValueError(f"{where} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
            if self.min is not None and value < self.min:
                raise ValueError(f"{where} must be >= {self.min}, got {value!r}")
            if self.max is not None and value > self.max:
                raise ValueError(f"{where} must be <= {self.max}, got {value!r}")
        return value

    def describe(self) -> str:
        """`name=default` plus the allowed values, for help texts."""
        default = list(self.default) if isinstance(self.default, tuple) else self.default
        bounds = ""
        if self.choices is not None:
            bounds = f" ({'|'.join(map(str, self.choices))})"
        elif self.min is not None and self.max is not None:
            bounds = f" ({self.min:g}..{self.max:g})"
        elif self.min:  # ">= 0" goes without saying for weights and rates
            bounds = f" (>= {self.min:g})"
        elif self.max is not None:
            bounds = f" (<= {self.max:g})"
        return f"{self.name}={default}{bounds}"


def _coerce(value: Any, kind: type) -> Any:
    """`value` as `kind`, accepting only lossless conversions (an integral float as int, an int as float)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if isinstance(value, bool):
        raise TypeError  # True is an int to Python, never a step count to a user
    if kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TypeError
    if kind is float:
        if isinstance(value, (int, float)):
            return float(value)
        raise TypeError
    if kind is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if isinstance(value, kind):
        return value
    raise TypeError


def settings_from_defaults(defaults: dict) -> tuple[Setting, ...]:
    """Settings typed after their default values (None defaults accept any number or None)."""
    out = []
    for name, default in defaults.items():
        if isinstance(default, (list, tuple)):
            item = type(default[0]) if default else float
            out.append(Setting(name, tuple(default), list, item_type=item))
        elif default is None:
            out.append(Setting(name, None, float, optional=True))
        else:
            out.append(Setting(name, default, type(default)))
    return tuple(out)


#: The locality gate of the tuning methods (ganinv.models.local) as method settings.
GATE_SETTINGS = (
    Setting("gate", GATE_DEFAULTS["gate"], bool, "let the tuned weights act only near the pivots"),
    Setting("gate_inner", GATE_DEFAULTS["gate_inner"], float,
            "radius (in prior-scale units) within which the tuned weights act fully", min=0.0),
    Setting("gate_outer", GATE_DEFAULTS["gate_outer"], float,
            "radius from which the original weights act", min=0.0),
)


@dataclass(frozen=True)
class MethodSpec:
    """A registered inversion method: `run(G, target, **settings) -> MethodOutput`, its typed settings and
    what it can do, so that `invert`, the CLI and the web app ask the entry rather than test its name.

    - `needs_encoder`: the method runs the model's encoder (`run` receives `encoder=`).
    - `starts_from_encoder`: when the model ships an encoder, `invert` starts the method from the
      encoder's ws (`run` receives `init_ws=`), unless the caller gives another start.
    - `step_setting` / `first_stage_step_setting`: the settings holding the number of steps of the
      main stage and of a first stage (pivot, h(x)); None where the method has none. `has_steps`
      is False for a method that is a fixed number of network passes.
    - `quick_steps`: a step count for interactive use (the web app), where the method's default is a
      benchmark setting; None keeps the default.
    - `tunes_generator`: the result holds a tuned copy of G (and its locality is reported).
    - `optimizes_noise`: the method may return optimized noise maps (PSNR with them reset is reported).
    - `presets`: named sets of defaults, chosen with the `preset` setting.

    `settings` may be given as a plain dict of defaults; each is then typed after its default.
    """

    name: str
    run: Callable[..., MethodOutput]
    settings: tuple[Setting, ...]
    summary: str
    tunes_generator: bool = False
    paper: str = ""
    needs_encoder: bool = False
    starts_from_encoder: bool = False
    step_setting: str | None = "num_steps"
    first_stage_step_setting: str | None = None
    quick_steps: int | None = None
    optimizes_noise: bool = False
    presets: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        settings = self.settings
        if isinstance(settings, dict):
            settings = settings_from_defaults(settings)
        object.__setattr__(self, "settings", tuple(settings))
        names = [s.name for s in self.settings]
        for key in (self.step_setting, self.first_stage_step_setting):
            if key is not None and key not in names:
                raise ValueError(f"method {self.name}: step setting {key!r} is not one of its settings")
        if self.presets and "preset" not in names:
            raise ValueError(f"method {self.name}: presets need a 'preset' setting")

    @property
    def defaults(self) -> dict:
        """Setting name -> default value."""
        return {s.name: s.default for s in self.settings}

    @property
    def has_steps(self) -> bool:
        return self.step_setting is not None

    def setting(self, name: str) -> Setting:
        for s in self.settings:
            if s.name == name:
                return s
        raise KeyError(name)

    def check_settings(self, settings: dict) -> dict:
        """The given settings checked against their types and bounds (one-line ValueError otherwise)."""
        known = {s.name: s for s in self.settings}
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ValueError(f"unknown settings for {self.name}: {', '.join(unknown)}; "
                             f"valid: {', '.join(sorted(known))}")
        return {name: known[name].check(value, self.name) for name, value in settings.items()}


@dataclass
class InversionResult:
    """One or more inverted targets. ws are always stored as w+ [N, num_ws, w_dim]."""

    method: str
    space: str
    target: torch.Tensor
    ws: torch.Tensor
    reconstruction: torch.Tensor
    noise: dict[str, torch.Tensor] | None = None
    G_tuned: Generator | None = None
    G_base: Generator | None = None
    model_name: str | None = None
    model_sha256: str | None = None
    z: torch.Tensor | None = None
    c: torch.Tensor | None = None
    metrics: dict[str, list] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)
    stop_reason: str = ""
    device: str = "cpu"
    threads: int = 1
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ws.shape[0])

    @property
    def generator(self) -> Generator:
        """The generator that reproduces this result: the tuned copy if any, else the base G."""
        G = self.G_tuned if self.G_tuned is not None else self.G_base
        if G is None:
            raise ValueError("this result has no generator attached; load it with a model")
        return G

    def __getitem__(self, index: int) -> "InversionResult":
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"result index {index} out of range for {n} targets")
        sl = slice(index % n, index % n + 1)
        pick = lambda t: None if t is None else t[sl]  # noqa: E731
        metrics = {k: [v[sl.start]] for k, v in self.metrics.items() if isinstance(v, list) and len(v) == n}
        G_tuned = self.G_tuned
        if isinstance(G_tuned, list):
            G_tuned = G_tuned[sl.start]
        return InversionResult(
            method=self.method, space=self.space, target=self.target[sl], ws=self.ws[sl],
            reconstruction=self.reconstruction[sl],
            noise=None if self.noise is None else {k: v[sl] for k, v in self.noise.items()},
            G_tuned=G_tuned, G_base=self.G_base, model_name=self.model_name,
            model_sha256=self.model_sha256, z=pick(self.z), c=pick(self.c), metrics=metrics,
            history=self.history, seconds=self.seconds / max(n, 1), settings=self.settings,
            stop_reason=self.stop_reason, device=self.device, threads=self.threads, extras=self.extras)

    @torch.no_grad()
    def render(self, ws: torch.Tensor | None = None, style_offsets: dict | None = None,
               noise: bool = True) -> torch.Tensor:
        """Image(s) in [-1, 1] from this result's generator and noise (optionally with edited ws/styles)."""
        G = self.generator
        device = next(G.parameters()).device
        ws = (self.ws if ws is None else ws).to(device)
        noise_maps = None
        if noise and self.noise is not None:
            noise_maps = {k: v.to(device) for k, v in self.noise.items()}
            if ws.shape[0] != self.ws.shape[0]:
                noise_maps = {k: v[:1].expand(ws.shape[0], -1, -1, -1) for k, v in noise_maps.items()}
        image = G.synthesis(ws, noise_mode="const", noise=noise_maps, style_offsets=style_offsets)
        return image.clamp(-1, 1).cpu()

    # ------------------------------------------------------------------ saving and loading

    def report(self) -> dict:
        import ganinv
        return {
            "format_version": FORMAT_VERSION, "ganinv_version": ganinv.__version__,
            "model": {"name": self.model_name, "sha256": self.model_sha256},
            "method": self.method, "space": self.space, "settings": jsonable(self.settings),
            "metrics": jsonable(self.metrics), "seconds": self.seconds, "device": self.device,
            "threads": self.threads, "stop_reason": self.stop_reason, "history": jsonable(self.history),
            "num_ws": int(self.ws.shape[1]), "w_dim": int(self.ws.shape[2]),
            "tuned_generator": self.G_tuned is not None, "extras": jsonable(self.extras),
        }

    def save(self, outdir: str | os.PathLike) -> list[Path]:
        """Write one folder per target (outdir itself for a single target, else outdir/0000, ...)."""
        outdir = Path(outdir)
        if len(self) == 1:
            return [self._save_one(outdir)]
        return [self[i]._save_one(outdir / f"{i:04d}") for i in range(len(self))]

    def _save_one(self, outdir: Path) -> Path:
        from safetensors.torch import save_file

        from ..data.io import save_image
        from ..models.checkpoints import save_native
        from ..utils import atomic_path, write_json

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
            with atomic_path(outdir / "noise.safetensors") as tmp:
                save_file({k: v.detach().cpu().contiguous() for k, v in self.noise.items()}, str(tmp))
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
        write_json(outdir / "report.json", self.report())
        return outdir

    @classmethod
    def load(cls, path: str | os.PathLike, model=None) -> "InversionResult":
        """Restore a saved result (folder or zip of one). `model` defaults to the base model named in
        report.json (embedded name), verified by sha256 when recorded."""
        path = Path(path)
        if path.is_file() and zipfile.is_zipfile(path):
            with tempfile.TemporaryDirectory(prefix="ganinv-result-") as tmp_name:
                tmp = Path(tmp_name)
                with zipfile.ZipFile(path) as zf:
                    for member in zf.namelist():
                        target = (tmp / member).resolve()
                        if not str(target).startswith(str(tmp.resolve())):
                            raise ValueError(f"{path}: unsafe path {member!r} in zip")
                    zf.extractall(tmp)
                inner = [p.parent for p in tmp.rglob("report.json")]
                if len(inner) != 1:
                    raise ValueError(f"{path}: expected exactly one result (report.json) in the zip, "
                                     f"found {len(inner)}")
                # Everything is read into memory, so the extracted files can go.
                return cls.load(inner[0], model=model)
        report_path = path / "report.json"
        if not report_path.is_file():
            raise ValueError(f"{path}: not an inversion result (no report.json)")
        try:
            report = json.loads(report_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{report_path}: invalid JSON ({e})") from None
        if int(report.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{path}: result format_version {report['format_version']} is newer than this ganinv")
        from ..models.checkpoints import load_native
        from ..models.registry import load_model

        if model is None:
            name = (report.get("model") or {}).get("name")
            try:
                model = load_model(name)
            except Exception as e:  # noqa: BLE001 - name a clear reason
                raise ValueError(f"{path}: cannot find the base model {name!r} ({e}); pass model=...") from None
        else:
            model = load_model(model)
        expected = (report.get("model") or {}).get("sha256")
        if expected and model.sha256 and expected != model.sha256:
            raise ValueError(f"{path}: result was made with model sha256 {expected[:12]}..., "
                             f"but the given model is {model.sha256[:12]}...")
        with np.load(path / "latent.npz", allow_pickle=False) as data:
            ws = torch.from_numpy(data["w"]).float()
            z = torch.from_numpy(data["z"]).float() if "z" in data else None
            c = torch.from_numpy(data["c"]).float() if "c" in data else None
        G = model.G
        if ws.ndim != 3 or ws.shape[1:] != (G.num_ws, G.w_dim):
            raise ValueError(f"{path}: latent w has shape {tuple(ws.shape)}, model expects [1, {G.num_ws}, {G.w_dim}]")
        noise = None
        if (path / "noise.safetensors").is_file():
            from safetensors.torch import load_file
            noise = load_file(str(path / "noise.safetensors"))
        G_tuned = None
        if (path / "generator").is_dir():
            G_tuned, _, card, extra = load_native(path / "generator")
            G_tuned.to(next(G.parameters()).device)
            gate = card.get("locality_gate")
            if gate is not None:
                try:
                    pivots = extra["gate.pivots"].float().to(next(G.parameters()).device)
                    G_tuned = LocallyTunedGenerator(G, G_tuned, pivots, float(gate["inner_radius"]),
                                                    float(gate["outer_radius"]))
                except (KeyError, TypeError, ValueError) as e:
                    raise ValueError(f"{path / 'generator'}: invalid locality gate ({e!r})") from None
        target = _read_saved_png(path / "target.png", G.img_channels)
        result = cls(method=report.get("method", "?"), space=report.get("space", "w+"), target=target, ws=ws,
                     reconstruction=target, noise=noise, G_tuned=G_tuned, G_base=G,
                     model_name=(report.get("model") or {}).get("name"), model_sha256=expected, z=z, c=c,
                     metrics=report.get("metrics", {}), history=report.get("history", []),
                     seconds=float(report.get("seconds", 0)), settings=report.get("settings", {}),
                     stop_reason=report.get("stop_reason", ""), device=report.get("device", "cpu"),
                     threads=int(report.get("threads", 1)), extras=report.get("extras", {}))
        result.reconstruction = result.render()
        return result

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


def _read_saved_png(path: Path, channels: int) -> torch.Tensor:
    """A PNG this module wrote (exact size, 8-bit) -> [1, C, H, W] in [-1, 1]."""
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1


# ---------------------------------------------------------------------- shared method helpers


def frozen_copy(G: Generator) -> Generator:
    G = copy.deepcopy(G).eval()
    G.requires_grad_(False)
    return G


def frozen_view(net: torch.nn.Module) -> torch.nn.Module:
    """The same network over the same weight and buffer storage, with parameters that require no grad.

    For methods that take gradients through G with respect to their own latents: the caller's network
    is neither copied nor touched (its requires_grad flags stay as they are), autograd records nothing for
    its weights, and the inference caches of the layers (ganinv.models.layers.derived_weight) apply.
    """
    memo: dict = {id(p): torch.nn.Parameter(p.detach(), requires_grad=False) for p in net.parameters()}
    memo.update({id(b): b for b in net.buffers()})
    return copy.deepcopy(net, memo)


def check_target(G: Generator, target: torch.Tensor) -> torch.Tensor:
    if not isinstance(target, torch.Tensor):
        raise TypeError("target must be a float tensor [N, C, H, W] in [-1, 1]; load files with ganinv.data.io.load_image")
    if target.ndim == 3:
        target = target.unsqueeze(0)
    expected = (G.img_channels, G.img_resolution, G.img_resolution)
    if target.ndim != 4 or tuple(target.shape[1:]) != expected:
        raise ValueError(f"target must have shape [N, {expected[0]}, {expected[1]}, {expected[2]}], "
                         f"got {tuple(target.shape)}")
    if not torch.isfinite(target).all():
        raise ValueError("target contains NaN or inf")
    return target.float()


def w_stats(G: Generator, num_samples: int = 10_000, seed: int = 123) -> tuple[torch.Tensor, float]:
    """Mean w and the scalar std of w around it (as the StyleGAN2 projector)."""
    device = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([num_samples, G.z_dim], generator=gen).to(device)
    c = None
    if G.c_dim:
        labels = torch.randint(0, G.c_dim, [num_samples], generator=gen)
        c = torch.nn.functional.one_hot(labels, G.c_dim).float().to(device)
    with torch.no_grad():
        w = G.mapping(z, c, update_w_avg=False)[:, 0]
    mean = w.mean(dim=0)
    std = float(((w - mean).square().sum() / num_samples) ** 0.5)
    return mean, std


def psnr_of(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    mse = (reconstruction.clamp(-1, 1) - target).square().flatten(1).mean(dim=1)
    return 10 * torch.log10(4 / mse.clamp_min(1e-12))


def run_info() -> dict:
    return {"threads": torch.get_num_threads(), "platform": platform.platform()}


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
