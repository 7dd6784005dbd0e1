"""Latent optimization in Z, W or W+ (with per-layer noise maps).

Abdal et al., "Image2StyleGAN: How to Embed Images Into the StyleGAN Latent Space?" (ICCV 2019) for
the extended W+ space; the schedule (Adam with learning-rate warm-up and cosine ramp-down, decaying
noise added to w, multi-scale noise regularization, noise renormalization each step) follows the
projector of Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020).
Unlike that projector we keep the optimized noise maps in the result (and report PSNR with them reset,
since per-pixel noise can memorize a target).
"""
from __future__ import annotations

import math

import torch

from ..losses import NoiseRegularization, normalize_noise_
from ..models.prior import w_stats
from ..models.stylegan2 import Generator
from .base import Callback, MethodOutput, MethodSpec, Setting, StepInfo, frozen_view, psnr_of
from .objective import OBJECTIVE_SETTINGS, build_objective

SPACES = ("z", "w", "w+")

SETTINGS = (
    Setting("space", "w+", str, "latent space optimized", choices=SPACES),
    Setting("num_steps", 300, int, "optimization steps", min=1),
    Setting("learning_rate", 0.1, float, "Adam learning rate (peak of the schedule)", min=0.0),
    Setting("lr_rampup", 0.05, float, "fraction of the steps of linear warm-up", min=0.0, max=1.0),
    Setting("lr_rampdown", 0.25, float, "fraction of the steps of cosine ramp-down", min=0.0, max=1.0),
    Setting("initial_noise_factor", 0.05, float, "noise added to w at the start, in prior std", min=0.0),
    Setting("noise_ramp", 0.75, float, "fraction of the steps over which the w noise decays", min=1e-6),
    Setting("optimize_noise", True, bool, "optimize the per-layer noise maps too"),
    Setting("noise_init", "const", str, "start of the noise maps", choices=("const", "random")),
    Setting("noise_regularize_weight", 1e5, float, "weight of the multi-scale noise regularization", min=0.0),
    *OBJECTIVE_SETTINGS,
    Setting("init", "w_avg", str, "start latent", choices=("w_avg",)),
    Setting("preview_every", 10, int, "steps between preview images sent to the callback", min=1),
)
DEFAULTS = {s.name: s.default for s in SETTINGS}


def _lr_schedule(t: float, base: float, rampup: float, rampdown: float) -> float:
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if rampup > 0:
        ramp = ramp * min(1.0, t / rampup)
    return base * ramp


def run(G: Generator, target: torch.Tensor, *, D=None, real_images=None, seed: int = 0,
        callback: Callback | None = None, init_ws: torch.Tensor | None = None,
        lpips_dir: str | None = None, degradation=None, **settings) -> MethodOutput:
    s = {**DEFAULTS, **settings}
    # Restoration (ganinv.inversion.degradation): the loss compares the degraded rendering with the observation.
    observe = degradation if degradation is not None else (lambda image: image)
    if degradation is not None:
        target = degradation.observe(target, G)
    space = s["space"]
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    num_steps = int(s["num_steps"])
    if num_steps < 1:
        raise ValueError("num_steps must be >= 1")
    device = target.device
    n = target.shape[0]
    G = frozen_view(G)  # gradients reach only our latents and noise maps; the caller's G stays as it is
    gen = torch.Generator(device="cpu").manual_seed(int(seed))

    def draw(*shape: int) -> torch.Tensor:
        # One draw per step, shared by the batch: image i of a batch sees the random numbers a batch of
        # one would, so batching changes only the speed, not the results.
        return torch.randn([1, *shape], generator=gen).repeat(n, *[1] * len(shape)).to(device)
    w_avg, w_std = w_stats(G)
    loss_fn = build_objective(s, D=D, lpips_dir=lpips_dir).to(device)
    noise_reg = NoiseRegularization()

    # Parameters to optimize.
    z_param = None
    if space == "z":
        if init_ws is not None:
            raise ValueError("init_ws cannot start an optimization in Z; use space 'w' or 'w+'")
        z_param = draw(G.z_dim).requires_grad_(True)
        params = [z_param]
    else:
        if init_ws is not None:
            start = init_ws.detach().to(device).float()
            if start.ndim == 2:
                start = start.unsqueeze(1).repeat(1, G.num_ws, 1)
            start = start[:, :1] if space == "w" else start
            if start.shape[0] == 1 and n > 1:
                start = start.repeat(n, 1, 1)
        else:
            start = w_avg.reshape(1, 1, -1).repeat(n, 1 if space == "w" else G.num_ws, 1).to(device)
        w_param = start.clone().requires_grad_(True)
        params = [w_param]

    noise_bufs = G.synthesis.noise_buffers()
    noise = None
    if s["optimize_noise"] and noise_bufs:  # a generator without noise inputs (StyleGAN3) has none to fit
        if s["noise_init"] not in ("const", "random"):
            raise ValueError(f"noise_init must be 'const' or 'random', got {s['noise_init']!r}")
        # Starting from the model's own constant noise keeps the start point an image the model makes.
        noise = {name: (buf.detach().reshape(1, 1, *buf.shape).repeat(n, 1, 1, 1).clone().to(device)
                        if s["noise_init"] == "const"
                        else draw(1, *buf.shape)).requires_grad_(True)
                 for name, buf in noise_bufs.items()}
        params += list(noise.values())
    optimizer = torch.optim.Adam(params, betas=(0.9, 0.999), lr=s["learning_rate"])

    def current_ws(noise_scale: float = 0.0) -> torch.Tensor:
        if space == "z":
            return G.mapping(z_param, None, update_w_avg=False)
        w = w_param
        if noise_scale > 0:
            w = w + draw(*w.shape[1:]) * noise_scale
        return w.repeat(1, G.num_ws, 1) if space == "w" else w

    best_loss = torch.full([n], float("inf"), device=device)
    best_ws = current_ws().detach().clone()
    best_noise = {k: v.detach().clone() for k, v in noise.items()} if noise else None
    best_z = z_param.detach().clone() if z_param is not None else None
    # The image of the best latent, kept while it was rendered without the w noise of the early steps
    # (so `invert` need not render it again); `clean[i]` says whether image i's copy is valid.
    best_image = torch.zeros([n, G.img_channels, G.img_resolution, G.img_resolution], device=device)
    clean = torch.zeros([n], dtype=torch.bool, device=device)
    history: list[dict] = []
    stop_reason = "num_steps"
    for step in range(num_steps):
        t = step / num_steps
        w_noise_scale = w_std * s["initial_noise_factor"] * max(0.0, 1.0 - t / s["noise_ramp"]) ** 2
        lr = _lr_schedule(t, s["learning_rate"], s["lr_rampup"], s["lr_rampdown"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        noisy = space != "z" and w_noise_scale > 0
        ws = current_ws(w_noise_scale if noisy else 0.0)
        image = G.synthesis(ws, noise_mode="const", noise=noise)
        per_image, terms = loss_fn(observe(image), target, reduction="none")
        total = per_image.sum()
        if noise is not None and s["noise_regularize_weight"] > 0:
            total = total + s["noise_regularize_weight"] * noise_reg(noise, reduction="sum")
        if not torch.isfinite(total):
            stop_reason = f"non-finite loss at step {step}; kept the best result so far"
            break
        with torch.no_grad():
            # Track the best latent per image on the (noise-free) loss just computed.
            improved = per_image.detach() < best_loss
            if improved.any():
                best_loss = torch.where(improved, per_image.detach(), best_loss)
                clean_ws = current_ws().detach()
                best_ws[improved] = clean_ws[improved]
                best_image[improved] = image.detach()[improved]
                clean[improved] = not noisy
                if best_noise is not None:
                    for k in best_noise:
                        best_noise[k][improved] = noise[k].detach()[improved]
                if best_z is not None:
                    best_z[improved] = z_param.detach()[improved]
        optimizer.zero_grad(set_to_none=True)
        # Gradients for our own latents (and noise) only: G and D are the caller's and stay untouched.
        total.backward(inputs=params)
        optimizer.step()
        if noise is not None:
            with torch.no_grad():
                normalize_noise_(noise)
        record = {"step": step, "loss": float(per_image.detach().mean()), "lr": lr,
                  **{k: float(v.mean()) for k, v in terms.items()}}
        psnr = float(psnr_of(observe(image.detach()), target).mean())
        record["psnr"] = psnr
        history.append(record)
        if callback is not None:
            show = image.detach() if (step % max(1, s["preview_every"]) == 0 or step == num_steps - 1) else None
            if callback(StepInfo(step=step, num_steps=num_steps, loss=record["loss"], psnr=psnr, image=show,
                                 stage="optimize")):
                stop_reason = f"stopped by callback at step {step}"
                break
    # The last step's parameters were never evaluated; evaluate once so they can win.
    with torch.no_grad():
        image = G.synthesis(current_ws(), noise_mode="const", noise=noise)
        per_image, _ = loss_fn(observe(image), target, reduction="none")
        if torch.isfinite(per_image).all():
            improved = per_image < best_loss
            clean_ws = current_ws()
            best_ws[improved] = clean_ws[improved]
            best_image[improved] = image[improved]
            clean[improved] = True
            if best_noise is not None:
                for k in best_noise:
                    best_noise[k][improved] = noise[k][improved]
            if best_z is not None:
                best_z[improved] = z_param[improved]
    return MethodOutput(ws=best_ws.detach(), space=space, noise=best_noise, z=best_z, history=history,
                        stop_reason=stop_reason, reconstruction=best_image if bool(clean.all()) else None)


SPEC = MethodSpec("optimize", run, SETTINGS, "latent optimization in Z, W or W+ with per-layer noise maps",
                  paper="Abdal et al. 2019 (Image2StyleGAN); Karras et al. 2020 (projector)",
                  quick_steps=200, optimizes_noise=True, accepts_degradation=True)
