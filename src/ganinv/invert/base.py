"""The method registry's types and helpers shared by the inversion methods.

Inversion methods are plain functions `run(G, target, *, D, real_images, seed, callback, ...) ->
MethodOutput`; `ganinv.invert` looks them up here by name, applies the defaults, times them, computes
metrics and wraps everything into an `InversionResult` (defined in `result.py`, importable from here
too). Methods never mutate the caller's G or D: the tuning methods (PTI, Clone) return a tuned copy.
"""
from __future__ import annotations

import copy
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..models.stylegan2 import Generator
from .result import FORMAT_VERSION, InversionResult  # noqa: F401 - re-exported: the older import path


@dataclass
class StepInfo:
    """What a method reports to the callback at each step."""

    step: int
    num_steps: int
    loss: float
    psnr: float | None = None
    image: torch.Tensor | None = None  # current reconstruction, only every few steps
    stage: str = ""


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


@dataclass(frozen=True)
class MethodSpec:
    name: str
    run: Callable[..., MethodOutput]
    defaults: dict
    summary: str
    tunes_generator: bool = False
    paper: str = ""


# ---------------------------------------------------------------------- shared method helpers


def frozen_copy(G: Generator) -> Generator:
    G = copy.deepcopy(G).eval()
    G.requires_grad_(False)
    return G


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
