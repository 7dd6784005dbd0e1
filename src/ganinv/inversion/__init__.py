"""Inversion: one entry point, `invert`, over an explicit registry of methods.

    result = ganinv.invert(model_or_G, target, method="clone", seed=0, **settings)

Methods: optimize (Image2StyleGAN / StyleGAN2 projector, Z/W/W+), pti (Roich et al. 2022),
clone (Feng et al., "Near Perfect GAN Inversion"), multicode (mGANprior, Gu et al. 2020), and, when an
encoder is available, encoder (e4e/ReStyle) and hybrid (In-domain inversion, Zhu et al. 2020).
Restoration (inpainting, colorization, super-resolution) passes a `degradation` (degradation.py).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from typing import Any

import torch

from ..metrics import METRICS, face_identity, load_lpips, lpips_distance
from ..models.local import locally_tuned, prior_scale
from ..models.multicode import MultiCodeGenerator
from ..models.prior import sample_prior
from ..models.registry import Model, load_model, resolve_device
from . import clone, encoder, multicode, optimize, pti
from .base import Callback, InversionResult, MethodOutput, MethodSpec, Setting, StepInfo, check_target

#: The inversion methods by name. Callers (CLI, web app, benchmarks, tests) read what a method can do
#: from its entry (see MethodSpec); registering a method here makes it available everywhere.
METHODS: dict[str, MethodSpec] = {
    "optimize": optimize.SPEC,
    "pti": pti.SPEC,
    "clone": clone.SPEC,
    "encoder": encoder.ENCODER_SPEC,
    "hybrid": encoder.HYBRID_SPEC,
    "multicode": multicode.SPEC,
}

#: Metrics `invert` can report: mse and psnr always; the others on request (`metrics=`).
#: psnr_const_noise is PSNR with optimized noise maps reset to the model's constant noise (reported by
#: default for results that hold noise maps, which can memorize a target). identity is the cosine
#: similarity of dlib face descriptors (aligned face photos; None, "n/a", without the faces extra).
METRIC_NAMES = ("mse", "psnr", "ssim", "lpips_alex", "psnr_const_noise", "identity")


def list_methods() -> dict[str, MethodSpec]:
    return dict(METHODS)


def _on_device(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`net` itself when it already lives on `device`, else a copy there (the caller's stays put).
    A network lives on one device; its first parameter tells which (walking all of them costs more than
    a render of a small generator)."""
    current = next(net.parameters()).device
    if current.type == device.type and (device.index is None or current.index == device.index):
        return net
    return copy.deepcopy(net).to(device)


def _metrics(reconstruction: torch.Tensor, target: torch.Tensor, names: tuple[str, ...],
             lpips_dir: str | None) -> dict:
    out: dict = {}
    for name in names:
        if name in METRICS:
            # SSIM needs its 11x11 window to fit; smaller images report it as unavailable.
            small = name == "ssim" and min(target.shape[-2:]) < 11
            out[name] = None if small else METRICS[name](reconstruction, target).tolist()
        elif name == "lpips_alex":
            lpips_model = load_lpips("alex", lpips_dir).to(target.device)
            out[name] = lpips_distance(reconstruction, target, lpips_model).tolist()
        elif name == "identity":
            out[name] = face_identity(reconstruction, target)
    return out


def _locality(G_base, tuned: list, ws: torch.Tensor | list, num_samples: int = 64, seed: int = 0) -> list[dict]:
    """For each tuned generator: mean |G+(w) - G(w)| over seeded prior samples, relative to the same
    change at its pivots (`ws`, or one pivot tensor per tuned generator). G's own images of the prior
    samples are rendered once for all of them."""
    pivots = list(ws) if isinstance(ws, (list, tuple)) else [ws] * len(tuned)
    reports = []
    with torch.no_grad():
        w = sample_prior(G_base, num_samples, seed=seed)
        base_prior = G_base.synthesis(w)
        base_pivots: dict[int, torch.Tensor] = {}
        for G_tuned, pivot in zip(tuned, pivots):
            if id(pivot) not in base_pivots:
                base_pivots[id(pivot)] = G_base.synthesis(pivot)
            prior_change = (G_tuned.synthesis(w) - base_prior).abs().mean().item()
            pivot_change = (G_tuned.synthesis(pivot) - base_pivots[id(pivot)]).abs().mean().item()
            out = {"prior_mean_abs_change": prior_change, "pivot_mean_abs_change": pivot_change,
                   "locality_ratio": prior_change / max(pivot_change, 1e-12)}
            if hasattr(G_tuned.synthesis, "gate"):
                # How many of the prior samples the locality gate lets the tuning reach at all.
                out["prior_share_in_gate"] = float((G_tuned.synthesis.gate(w) > 0).float().mean())
            reports.append(out)
    return reports


def _render(result_G, G, ws: torch.Tensor, noise: dict | None) -> torch.Tensor:
    """The const-noise images of ws with the result's generator (one per target when it is a list)."""
    with torch.no_grad():
        if isinstance(result_G, list):
            return torch.cat([gen.synthesis(ws[i:i + 1], noise_mode="const",
                                            noise=None if noise is None else {k: v[i:i + 1] for k, v in noise.items()})
                              for i, gen in enumerate(result_G)])
        gen = result_G if result_G is not None else G
        return gen.synthesis(ws, noise_mode="const", noise=noise)


def invert(model: Model | torch.nn.Module | str | None, target: torch.Tensor, method: str = "optimize", *,
           D=None, real_images: torch.Tensor | None = None, seed: int = 0, callback: Callback | None = None,
           device: str | torch.device | None = None, init_from: str | InversionResult | None = None,
           metrics: Iterable[str] | None = None, compute_lpips: bool = False, lpips_dir: str | None = None,
           degradation=None, **settings: Any) -> InversionResult:
    """Invert target image(s) [N, C, H, W] in [-1, 1] with a registered method.

    `model` is a Model bundle (from load_model), a bare Generator, or a name/path. D and real_images
    default to the model's own. Settings override the method's defaults (see METHODS[name].settings;
    a value of the wrong type or out of range is refused). `init_from` starts a method from another
    method's latent (a method name or a result); methods that `starts_from_encoder` start from the
    model's encoder when it has one.

    The result's metrics are mse and psnr, plus psnr_const_noise when the method returned noise maps;
    `metrics` asks for more (any of METRIC_NAMES; `compute_lpips=True` adds lpips_alex). Tuning methods
    also report the locality of their tuned generator. `degradation` (an Inpaint, Colorize or
    SuperResolution from ganinv.inversion.degradation; methods with `accepts_degradation`) restores: the
    loss and the metrics compare the degraded rendering with the (degraded) target, the reconstruction is
    the full rendering, and the encoder start is skipped. The caller's G, D and encoder are never
    modified: a method only takes gradients with respect to its own latents, and tuning methods tune
    copies (on another `device`, G and D are copied there).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    spec = METHODS[method]
    settings = spec.check_settings(settings)
    wanted = ("mse", "psnr", *(metrics or ()), *(("lpips_alex",) if compute_lpips else ()))
    unknown = sorted(set(wanted) - set(METRIC_NAMES))
    if unknown:
        raise ValueError(f"unknown metrics {', '.join(unknown)}; available: {', '.join(METRIC_NAMES)}")
    bundle = load_model(model)
    dev = resolve_device(device) if device is not None else next(bundle.G.parameters()).device
    G = _on_device(bundle.G, dev)
    D = D if D is not None else bundle.D
    D = _on_device(D, dev) if D is not None else None
    if real_images is None:
        real_images = bundle.real_images
    if degradation is not None and not spec.accepts_degradation:
        takers = ", ".join(name for name, entry in METHODS.items() if entry.accepts_degradation)
        raise ValueError(f"method {method} does not restore degraded targets; use one of {takers}")
    target = (check_target(G, target) if degradation is None else degradation.observe(target, G)).to(dev)
    # The global generators (random noise maps in some methods' steps); torch.manual_seed would also
    # visit every other backend, which costs more than the rest of this function.
    torch.default_generator.manual_seed(seed)
    if dev.type == "cuda":
        torch.cuda.manual_seed_all(seed)

    started = time.perf_counter()
    init_ws = None
    init_note = None
    if init_from is not None:
        if isinstance(init_from, InversionResult):
            init_ws = init_from.ws.to(dev)
            init_note = f"given {init_from.method} result"
        else:
            first = invert(bundle, target, init_from, D=D, real_images=real_images, seed=seed, callback=callback,
                           device=dev, degradation=degradation)
            init_ws = first.ws.to(dev)
            init_note = f"{init_from} (default settings)"
    kwargs = dict(D=D, real_images=real_images, seed=seed, callback=callback, lpips_dir=lpips_dir)
    if degradation is not None:
        kwargs["degradation"] = degradation
    # The encoder was trained on clean images: a degraded target starts from the method's own start.
    if init_ws is None and spec.starts_from_encoder and bundle.encoder is not None and degradation is None:
        try:
            init_ws = encoder.run_encoder(G, target, encoder=bundle.encoder, seed=seed).ws
            init_note = "encoder (shipped with the model)"
        except ValueError as e:
            # e.g. an encoder left over from another generator: fall back to the method's own start.
            init_note = f"encoder unusable ({e}); used the method's own start"
    if init_ws is not None:
        kwargs["init_ws"] = init_ws
    if spec.needs_encoder:
        kwargs["encoder"] = bundle.encoder
    output: MethodOutput = spec.run(G, target, **kwargs, **settings)
    seconds = time.perf_counter() - started

    result_G = output.G
    if isinstance(result_G, (list, tuple)):
        # One tuned generator per target (PTI); a single target keeps a plain generator.
        result_G = result_G[0] if len(result_G) == 1 else list(result_G)
    ws = output.ws.to(dev)
    reconstruction = output.reconstruction
    if reconstruction is None:
        reconstruction = _render(result_G, G, ws, output.noise)
    reconstruction = reconstruction.detach().clamp(-1, 1)
    if output.noise is not None and metrics is None:
        wanted = (*wanted, "psnr_const_noise")
    observe = degradation if degradation is not None else (lambda image: image)
    values = _metrics(observe(reconstruction), target, tuple(dict.fromkeys(wanted)), lpips_dir)
    if "psnr_const_noise" in wanted:
        if output.noise is None:
            values["psnr_const_noise"] = values["psnr"]  # no noise maps: the same image
        else:
            const_rec = _render(result_G, G, ws, None).clamp(-1, 1)
            values["psnr_const_noise"] = METRICS["psnr"](observe(const_rec), target).tolist()
    extras = dict(output.extras)
    G_base = bundle.G
    # A method whose presets change its defaults (clone's "paper") reports the settings it really used.
    effective = extras.pop("settings", {})
    gate = extras.pop("gate", None)
    if isinstance(result_G, list):
        pivots = [ws[i:i + 1] for i in range(len(result_G))]
        if gate is not None:
            # Each target's tuning acts only near its own pivot.
            scale = prior_scale(G)
            gated = [locally_tuned(G, tuned, pivot, inner=gate["inner"], outer=gate["outer"], scale=scale)
                     for tuned, pivot in zip(result_G, pivots)]
            extras["locality"] = _locality(G, gated, pivots)
            extras["locality_ungated"] = _locality(G, result_G, pivots)
            extras["gate"] = {**gate, **gated[0].gate_settings}
            result_G = gated
        else:
            extras["locality"] = _locality(G, result_G, pivots)
    elif result_G is not None and gate is not None:
        # The tuning acts only near the pivots (ganinv.models.local); what G+ alone would do to prior
        # samples is kept beside the gated figure.
        gated = locally_tuned(G, result_G, ws, inner=gate["inner"], outer=gate["outer"])
        extras["locality"], extras["locality_ungated"] = _locality(G, [gated, result_G], ws)
        extras["gate"] = {**gate, **gated.gate_settings}
        result_G = gated
    elif isinstance(result_G, MultiCodeGenerator):
        # Not a tuned copy: the model's own G composing the result's codes. It renders the result (as its
        # G_base; directions apply to the centre ws, which moves every code) with the caller's G's weights.
        G_base, result_G = result_G.rebased(bundle.G), None
    elif result_G is not None:
        extras["locality"], = _locality(G, [result_G], ws)
    if init_note:
        extras["init"] = init_note
    if degradation is not None:
        extras["degradation"] = degradation.describe()
        target = degradation.display(target, G.img_resolution)
    return InversionResult(
        method=method, space=output.space, target=target.detach().cpu(), ws=output.ws.detach().cpu(),
        reconstruction=reconstruction.cpu(),
        noise=None if output.noise is None else {k: v.detach().cpu() for k, v in output.noise.items()},
        G_tuned=(None if result_G is None else [g.cpu() for g in result_G] if isinstance(result_G, list)
                 else result_G.cpu()), G_base=G_base, model_name=bundle.name,
        model_sha256=bundle.sha256, z=None if output.z is None else output.z.detach().cpu(), metrics=values,
        history=output.history, seconds=seconds, settings={**spec.defaults, **settings, **effective, "seed": seed},
        stop_reason=output.stop_reason, device=str(dev), threads=torch.get_num_threads(), extras=extras)


__all__ = ["invert", "InversionResult", "METHODS", "METRIC_NAMES", "list_methods", "StepInfo", "MethodSpec",
           "Setting"]
