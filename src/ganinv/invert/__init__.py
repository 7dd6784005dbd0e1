"""Inversion: one entry point, `invert`, over an explicit registry of methods.

    result = ganinv.invert(model_or_G, target, method="clone", seed=0, **settings)

Methods: optimize (Image2StyleGAN / StyleGAN2 projector, Z/W/W+), pti (Roich et al. 2022),
clone (Feng et al., "Near Perfect GAN Inversion"), and, when an encoder is available,
encoder (e4e/ReStyle) and hybrid (In-domain inversion, Zhu et al. 2020).
"""
from __future__ import annotations

import time
from typing import Any

import torch

from ..models.local import locally_tuned
from ..models.prior import sample_prior
from ..models.registry import Model, load_model, resolve_device
from . import clone, optimize, pti
from .base import Callback, InversionResult, MethodOutput, MethodSpec, StepInfo, check_target, frozen_copy

METHODS: dict[str, MethodSpec] = {
    "optimize": MethodSpec("optimize", optimize.run, optimize.DEFAULTS,
                           "latent optimization in Z, W or W+ with per-layer noise maps",
                           paper="Abdal et al. 2019 (Image2StyleGAN); Karras et al. 2020 (projector)"),
    "pti": MethodSpec("pti", pti.run, pti.DEFAULTS,
                      "W pivot, then tune the synthesis weights with a locality regularizer",
                      tunes_generator=True, paper="Roich et al. 2022 (Pivotal Tuning)"),
    "clone": MethodSpec("clone", clone.run, clone.DEFAULTS,
                        "tune G and D locally: reconstruction (default MSE + fine-weighted Laplacian bands; "
                        "paper: Laplacian L1) + adversarial local loss with probability p, GAN loss as global "
                        "term, stop at epsilon or target_psnr; --preset paper for the paper's settings",
                        tunes_generator=True,
                        paper="Feng et al. (Near Perfect GAN Inversion)"),
}


def _register_optional() -> None:
    """The encoder-based methods register only when their module is present."""
    try:
        from . import encoder as encoder_method
    except ImportError:
        return
    METHODS.update(encoder_method.METHOD_SPECS)


_register_optional()


def list_methods() -> dict[str, MethodSpec]:
    return dict(METHODS)


def _locality(G_base, tuned: list, ws: torch.Tensor, num_samples: int = 64, seed: int = 0) -> list[dict]:
    """For each tuned generator: mean |G+(w) - G(w)| over seeded prior samples, relative to the same
    change at the pivot (G's own images are rendered once for all of them)."""
    reports = []
    with torch.no_grad():
        w = sample_prior(G_base, num_samples, seed=seed)
        base_prior, base_pivot = G_base.synthesis(w), G_base.synthesis(ws)
        for G_tuned in tuned:
            prior_change = (G_tuned.synthesis(w) - base_prior).abs().mean().item()
            pivot_change = (G_tuned.synthesis(ws) - base_pivot).abs().mean().item()
            out = {"prior_mean_abs_change": prior_change, "pivot_mean_abs_change": pivot_change,
                   "locality_ratio": prior_change / max(pivot_change, 1e-12)}
            if hasattr(G_tuned.synthesis, "gate"):
                # How many of the prior samples the locality gate lets the tuning reach at all.
                out["prior_share_in_gate"] = float((G_tuned.synthesis.gate(w) > 0).float().mean())
            reports.append(out)
    return reports


def invert(model: Model | torch.nn.Module | str | None, target: torch.Tensor, method: str = "optimize", *,
           D=None, real_images: torch.Tensor | None = None, seed: int = 0, callback: Callback | None = None,
           device: str | torch.device | None = None, init_from: str | InversionResult | None = None,
           compute_lpips: bool = False, lpips_dir: str | None = None, **settings: Any) -> InversionResult:
    """Invert target image(s) [N, C, H, W] in [-1, 1] with a registered method.

    `model` is a Model bundle (from load_model), a bare Generator, or a name/path. D and real_images
    default to the model's own. Settings override the method's defaults (see METHODS[name].defaults).
    `init_from` starts pti/clone from another method's latent (a method name or a result).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    spec = METHODS[method]
    unknown = sorted(set(settings) - set(spec.defaults) - {"preset"})
    if unknown:
        raise ValueError(f"unknown settings for {method}: {unknown}; valid: {sorted(spec.defaults)}")
    bundle = load_model(model)
    dev = resolve_device(device) if device is not None else next(bundle.G.parameters()).device
    G = frozen_copy(bundle.G).to(dev)
    D = D if D is not None else bundle.D
    D = frozen_copy(D).to(dev) if D is not None else None
    if real_images is None:
        real_images = bundle.real_images
    target = check_target(G, target).to(dev)
    torch.manual_seed(seed)

    started = time.perf_counter()
    init_ws = None
    init_note = None
    if init_from is not None:
        if isinstance(init_from, InversionResult):
            init_ws = init_from.ws.to(dev)
            init_note = f"given {init_from.method} result"
        else:
            first = invert(bundle, target, init_from, D=D, real_images=real_images, seed=seed, callback=callback,
                           device=dev)
            init_ws = first.ws.to(dev)
            init_note = f"{init_from} (default settings)"
    kwargs = dict(D=D, real_images=real_images, seed=seed, callback=callback, lpips_dir=lpips_dir)
    if init_ws is not None:
        kwargs["init_ws"] = init_ws
    if bundle.encoder is not None and method in ("pti", "clone") and init_ws is None and "encoder" in METHODS:
        try:
            init_ws = METHODS["encoder"].run(G, target, encoder=bundle.encoder, seed=seed).ws
            kwargs["init_ws"] = init_ws
            init_note = "encoder (shipped with the model)"
        except ValueError as e:
            # e.g. an encoder left over from another generator: fall back to the method's own h(x).
            init_note = f"encoder unusable ({e}); used the method's own start"
    if method in ("encoder", "hybrid"):
        kwargs["encoder"] = bundle.encoder
    output: MethodOutput = spec.run(G, target, **kwargs, **settings)
    seconds = time.perf_counter() - started

    result_G = output.G
    with torch.no_grad():
        gen = result_G if result_G is not None else G
        reconstruction = gen.synthesis(output.ws.to(dev), noise_mode="const", noise=output.noise).clamp(-1, 1)
    from ..metrics import compute_metrics, load_lpips
    lpips_model = load_lpips("alex", lpips_dir).to(dev) if compute_lpips else None
    metrics = compute_metrics(reconstruction, target, lpips=lpips_model)
    extras = dict(output.extras)
    if output.noise is not None:
        with torch.no_grad():
            const_rec = G.synthesis(output.ws.to(dev), noise_mode="const").clamp(-1, 1)
        metrics["psnr_const_noise"] = compute_metrics(const_rec, target)["psnr"]
    # A method whose presets change its defaults (clone's "paper") reports the settings it really used.
    effective = extras.pop("settings", {})
    gate = extras.pop("gate", None)
    if result_G is not None and gate is not None:
        # The tuning acts only near the pivots (ganinv.models.local); what G+ alone would do to prior
        # samples is kept beside the gated figure.
        gated = locally_tuned(G, result_G, output.ws.to(dev), inner=gate["inner"], outer=gate["outer"])
        extras["locality"], extras["locality_ungated"] = _locality(G, [gated, result_G], output.ws.to(dev))
        extras["gate"] = {**gate, **gated.gate_settings}
        result_G = gated
    elif result_G is not None:
        extras["locality"], = _locality(G, [result_G], output.ws.to(dev))
    if init_note:
        extras["init"] = init_note
    return InversionResult(
        method=method, space=output.space, target=target.detach().cpu(), ws=output.ws.detach().cpu(),
        reconstruction=reconstruction.detach().cpu(),
        noise=None if output.noise is None else {k: v.detach().cpu() for k, v in output.noise.items()},
        G_tuned=result_G.cpu() if result_G is not None else None, G_base=bundle.G, model_name=bundle.name,
        model_sha256=bundle.sha256, z=None if output.z is None else output.z.detach().cpu(), metrics=metrics,
        history=output.history, seconds=seconds, settings={**spec.defaults, **settings, **effective, "seed": seed},
        stop_reason=output.stop_reason, device=str(dev), threads=torch.get_num_threads(), extras=extras)


__all__ = ["invert", "InversionResult", "METHODS", "list_methods", "StepInfo", "MethodSpec"]


class _CallableModule(__import__("types").ModuleType):
    """`ganinv.invert` is both this subpackage and the function: importing the subpackage sets the
    package attribute to the module, so the module forwards calls to `invert`."""

    def __call__(self, *args, **kwargs):
        return invert(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
