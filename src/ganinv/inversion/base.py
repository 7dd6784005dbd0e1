"""The method registry's types and helpers shared by the inversion methods.

Inversion methods are plain functions `run(G, target, *, D, real_images, seed, callback, ...) ->
MethodOutput`; `ganinv.invert` looks them up here by name, applies the defaults, times them, computes
metrics and wraps everything into an `InversionResult` (defined in `result.py`, importable from here
too). Methods never mutate the caller's G or D: the tuning methods (PTI, Clone) return a tuned copy.
"""
from __future__ import annotations

import copy
import math
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import GanInvError
from ..models.local import GATE_DEFAULTS
from ..models.stylegan2 import Generator
from .result import FORMAT_VERSION, InversionResult  # noqa: F401 - re-exported: the older import path


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
    - `accepts_degradation`: `run` takes `degradation=` (ganinv.inversion.degradation) and compares the
      degraded rendering with the observation (restoration: inpainting, colorization, super-resolution).

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
    accepts_degradation: bool = False

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


def check_target(G: Generator, target: torch.Tensor, what: str | None = None) -> torch.Tensor:
    """The target as float [N, C, H, W] with G's channels and resolution (a single [C, H, W] image gains N = 1).

    Raises TypeError for a non-tensor, GanInvError (a ValueError) for a wrong shape or a non-finite
    value; `what` (e.g. a degradation's name) prefixes those messages as "what: ...".
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError("target must be a float tensor [N, C, H, W] in [-1, 1]; load files with ganinv.data.io.load_image")
    if target.ndim == 3:
        target = target.unsqueeze(0)
    prefix = f"{what}: " if what else ""
    expected = (G.img_channels, G.img_resolution, G.img_resolution)
    if target.ndim != 4 or tuple(target.shape[1:]) != expected:
        raise GanInvError(f"{prefix}target must have shape [N, {expected[0]}, {expected[1]}, {expected[2]}], "
                          f"got {tuple(target.shape)}")
    if not torch.isfinite(target).all():
        raise GanInvError(f"{prefix}target contains NaN or inf")
    return target.float()


from ..models.prior import w_stats  # noqa: E402,F401  (moved to models.prior)


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
