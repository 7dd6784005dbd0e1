"""Encoder-based inversion methods: `encoder` and `hybrid`.

- `encoder`: one or more passes of the e4e/ReStyle encoder (Tov et al., "Designing an Encoder for
  StyleGAN Image Manipulation", SIGGRAPH 2021; Alaluf et al., "ReStyle: A Residual-Based StyleGAN
  Encoder via Iterative Refinement", ICCV 2021). Each pass sees the target and the current
  reconstruction and adds a residual to ws; pass 1 starts from w_avg. The network is `ganinv.models.encoder`,
  its training recipe `ganinv.train.encoder_trainer`.
- `hybrid`: In-domain GAN inversion (Zhu, Shen, Zhao and Zhou, "In-Domain GAN Inversion for Real Image
  Editing", ECCV 2020): start from the encoder's latent, then optimize ws for reconstruction while a
  domain regularizer keeps ws where the encoder maps its own reconstruction,

      L = L_recon(G(w), x) + lambda_dom * mean((w - E(G(w)))^2) / (per-coordinate std of prior w)^2

  with E the encoder's one-pass prediction. The regularizer keeps the latent in the region the encoder
  was trained to produce (and so editable); the encoder start makes few steps enough.
"""
from __future__ import annotations

import copy
import math

import torch

from ..losses import frozen_parameters
from ..models.stylegan2 import Generator
from .base import Callback, MethodOutput, MethodSpec, Setting, StepInfo, frozen_view, psnr_of
from ..models.encoder import Encoder, restyle
from ..models.official_encoders import EncoderForGenerator, OfficialEncoder
from .objective import OBJECTIVE_SETTINGS, build_objective

MISSING_ENCODER = ("this model has no encoder; train one with `ganinv train-encoder --model M --data DIR "
                   "--outdir RUN`, then `ganinv export-encoder RUN --model-dir MODEL_FOLDER` (or pass encoder=...)")

ENCODER_SETTINGS = (
    Setting("iterations", 2, int, "ReStyle passes of the encoder", min=1),
)
ENCODER_DEFAULTS = {s.name: s.default for s in ENCODER_SETTINGS}

HYBRID_SETTINGS = (
    Setting("encoder_iterations", 2, int, "ReStyle passes of the encoder for the start", min=1),
    Setting("num_steps", 30, int, "optimization steps", min=0),
    Setting("learning_rate", 0.05, float, "Adam learning rate (peak of the schedule)", min=0.0),
    Setting("lr_rampup", 0.1, float, "fraction of the steps of linear warm-up", min=0.0, max=1.0),
    Setting("lr_rampdown", 0.25, float, "fraction of the steps of cosine ramp-down", min=0.0, max=1.0),
    Setting("domain_weight", 0.5, float, "weight of the domain regularizer", min=0.0),
    *OBJECTIVE_SETTINGS,
    Setting("target_psnr", None, float, "stop when this PSNR is reached", optional=True),
    Setting("preview_every", 10, int, "steps between preview images sent to the callback", min=1),
)
HYBRID_DEFAULTS = {s.name: s.default for s in HYBRID_SETTINGS}


def _ready_encoder(encoder: Encoder | OfficialEncoder | None, G: Generator, device: torch.device) -> Encoder:
    """The encoder, on the target's device and in eval mode, checked against G (never mutated).
    A pSp / e4e / ReStyle encoder is seen through ganinv's encoder interface for G (`for_generator`)."""
    if encoder is None:
        raise ValueError(MISSING_ENCODER)
    if isinstance(encoder, OfficialEncoder):
        encoder = encoder.for_generator(G)
    if not isinstance(encoder, (Encoder, EncoderForGenerator)):
        raise TypeError(f"encoder must be a ganinv Encoder (load one with load_encoder), got {type(encoder).__name__}")
    if encoder.w_avg.device != device or encoder.training:
        encoder = copy.deepcopy(encoder).to(device).eval()
    encoder.check_generator(G)
    return encoder


def _check_iterations(value, name: str, encoder=None) -> int:
    """The number of passes; an encoder that predicts ws in one pass (pSp, e4e: `max_iterations` 1) runs once."""
    iterations = int(value)
    if iterations < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    limit = getattr(encoder, "max_iterations", None)
    return min(iterations, limit) if limit else iterations


def run_encoder(G: Generator, target: torch.Tensor, *, encoder: Encoder | None = None, D=None, real_images=None,
                seed: int = 0, callback: Callback | None = None, init_ws: torch.Tensor | None = None,
                lpips_dir: str | None = None, **settings) -> MethodOutput:
    """ReStyle passes of the encoder (from w_avg, or from `init_ws` when given)."""
    s = {**ENCODER_DEFAULTS, **settings}
    iterations = _check_iterations(s["iterations"], "iterations")
    encoder = _ready_encoder(encoder, G, target.device)
    iterations = _check_iterations(iterations, "iterations", encoder)
    if init_ws is not None and getattr(encoder, "max_iterations", None) == 1:
        raise ValueError("this encoder (pSp/e4e) predicts ws from the image alone and cannot start from a given latent")
    if init_ws is not None and init_ws.ndim == 2:
        init_ws = init_ws.unsqueeze(1).repeat(1, G.num_ws, 1)
    with torch.no_grad():
        ws, images = restyle(G, encoder, target, iterations, start_ws=init_ws, keep_images=callback is not None)
        # The result's image: the passes only render their inputs, so the last ws is rendered here.
        reconstruction = G.synthesis(ws, noise_mode="const")
    history = []
    if callback is not None:
        # The image after each pass is already made (the next pass's input, and the result's image);
        # report how the error falls pass by pass. The encoder minimizes no loss here: loss is None.
        for index, image in enumerate([*images[1:], reconstruction]):
            psnr = float(psnr_of(image, target).mean())
            history.append({"step": index, "psnr": psnr})
            callback(StepInfo(step=index, num_steps=iterations, loss=None, psnr=psnr, image=image, stage="encoder"))
    return MethodOutput(ws=ws.detach(), space="w+", history=history, stop_reason="iterations",
                        extras={"iterations": iterations}, reconstruction=reconstruction)


def _lr_schedule(t: float, base: float, rampup: float, rampdown: float) -> float:
    """The StyleGAN2 projector's schedule: linear warm-up, cosine ramp-down."""
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if rampup > 0:
        ramp = ramp * min(1.0, (t + 1e-8) / rampup)
    return base * ramp


def run_hybrid(G: Generator, target: torch.Tensor, *, encoder: Encoder | None = None, D=None, real_images=None,
               seed: int = 0, callback: Callback | None = None, init_ws: torch.Tensor | None = None,
               lpips_dir: str | None = None, **settings) -> MethodOutput:
    """Encoder start, then domain-regularized optimization of ws (In-domain inversion)."""
    s = {**HYBRID_DEFAULTS, **settings}
    num_steps = int(s["num_steps"])
    if num_steps < 0:
        raise ValueError("num_steps must be >= 0")
    if float(s["domain_weight"]) < 0:
        raise ValueError("domain_weight must be >= 0")
    encoder = _ready_encoder(encoder, G, target.device)
    # Gradients reach ws only: G is used through a view with frozen parameters over the same weights,
    # and the caller's encoder keeps its flags.
    with frozen_parameters(encoder):
        return _optimize_in_domain(frozen_view(G), encoder, target, s, D=D, init_ws=init_ws, callback=callback,
                                   lpips_dir=lpips_dir)


def _optimize_in_domain(G: Generator, encoder: Encoder, target: torch.Tensor, s: dict, *, D, init_ws,
                        callback: Callback | None, lpips_dir: str | None) -> MethodOutput:
    num_steps = int(s["num_steps"])
    n = target.shape[0]
    with torch.no_grad():
        if init_ws is None:
            start, _ = restyle(G, encoder, target,
                               _check_iterations(s["encoder_iterations"], "encoder_iterations", encoder))
        else:
            start = init_ws.to(target.device).float()
            if start.ndim == 2:
                start = start.unsqueeze(1).repeat(1, G.num_ws, 1)
    loss_fn = build_objective(s, D=D, lpips_dir=lpips_dir).to(target.device)
    ws = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([ws], betas=(0.9, 0.999), lr=float(s["learning_rate"]))
    scale = float(encoder.w_scale) ** 2
    avg_image = encoder.avg_image.expand(n, -1, -1, -1)
    best_loss = torch.full([n], float("inf"), device=target.device)
    best_ws = start.detach().clone()
    best_image = torch.zeros_like(target)  # the image of best_ws, so `invert` need not render it again
    history: list[dict] = []
    stop_reason = "num_steps"
    for step in range(num_steps + 1):
        image = G.synthesis(ws, noise_mode="const")
        reconstruction, terms = loss_fn(image, target, reduction="none")
        psnr_each = psnr_of(image.detach(), target)
        with torch.no_grad():
            improved = reconstruction.detach() < best_loss
            best_loss = torch.where(improved, reconstruction.detach(), best_loss)
            best_ws[improved] = ws.detach()[improved]
            best_image[improved] = image.detach()[improved]
        psnr = float(psnr_each.mean())
        if step == num_steps:
            break  # the last update is evaluated above so it can win, not taken further
        if s["target_psnr"] is not None and bool((psnr_each >= float(s["target_psnr"])).all()):
            stop_reason = f"reached target_psnr {s['target_psnr']} at step {step}"
            break
        # E(G(w)): the encoder's one-pass prediction for the current reconstruction.
        re_encoded = encoder.start_ws(n) + encoder(image, avg_image)
        domain = (ws - re_encoded).square().flatten(1).mean(dim=1) / scale
        per_image = reconstruction + float(s["domain_weight"]) * domain
        total = per_image.sum()
        if not torch.isfinite(total):
            stop_reason = f"non-finite loss at step {step}; kept the best result so far"
            break
        lr = _lr_schedule(step / max(num_steps, 1), float(s["learning_rate"]), float(s["lr_rampup"]),
                          float(s["lr_rampdown"]))
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        total.backward(inputs=[ws])  # the caller's G, D and encoder get no gradients
        optimizer.step()
        record = {"step": step, "loss": float(per_image.detach().mean()), "psnr": psnr, "lr": lr,
                  "domain": float(domain.detach().mean()), **{k: float(v.mean()) for k, v in terms.items()}}
        history.append(record)
        if callback is not None:
            show = image.detach() if step % max(1, int(s["preview_every"])) == 0 else None
            if callback(StepInfo(step=step, num_steps=num_steps, loss=record["loss"], psnr=psnr, image=show,
                                 stage="hybrid")):
                stop_reason = f"stopped by callback at step {step}"
                break
    return MethodOutput(ws=best_ws.detach(), space="w+", history=history, stop_reason=stop_reason,
                        extras={"encoder_iterations": int(s["encoder_iterations"]) if init_ws is None else 0},
                        reconstruction=best_image if bool(torch.isfinite(best_loss).all()) else None)


ENCODER_SPEC = MethodSpec(
    "encoder", run_encoder, ENCODER_SETTINGS,
    "e4e encoder (base w + per-layer offsets) with ReStyle passes; milliseconds per image",
    paper="Tov et al. 2021 (e4e); Alaluf et al. 2021 (ReStyle); Richardson et al. 2021 (pSp)",
    needs_encoder=True, step_setting=None)
HYBRID_SPEC = MethodSpec(
    "hybrid", run_hybrid, HYBRID_SETTINGS,
    "encoder start, then optimization regularized toward the encoder's own mapping",
    paper="Zhu et al. 2020 (In-Domain GAN Inversion)", needs_encoder=True, quick_steps=100)
METHOD_SPECS: dict[str, MethodSpec] = {"encoder": ENCODER_SPEC, "hybrid": HYBRID_SPEC}

__all__ = ["ENCODER_DEFAULTS", "HYBRID_DEFAULTS", "ENCODER_SPEC", "HYBRID_SPEC", "METHOD_SPECS", "MISSING_ENCODER", "run_encoder", "run_hybrid"]
