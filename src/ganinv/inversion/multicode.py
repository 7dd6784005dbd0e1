"""Multi-code inversion (mGANprior).

Gu, Shen and Zhou, "Image Processing Using Multi-Code GAN Prior" (CVPR 2020). One latent code rarely
reproduces an image the GAN never saw; mGANprior optimizes K codes, runs each through the generator up
to an intermediate layer L, composes their feature maps with learned per-channel importance weights
(sum_k alpha_k * F_k, their Eq. 2) and runs the rest of the generator on the composition; codes and
weights are optimized jointly on the reconstruction loss (their Eq. 3-4). For StyleGAN2 the later
blocks also need styles: they read the mean of the K codes, and the skip branch's partial RGB image
is composed like the features (ganinv.models.multicode explains both choices).

Here the codes live in W+ (or W with `space="w"`), start at seeded prior samples pulled toward w_avg
(`init_truncation`), the importance weights at 1/K, and both follow the same Adam schedule as
`optimize` (warm-up and cosine ramp-down). The result's `ws` is the codes' centre and the generator that
renders it (`result.G_base`; nothing is tuned, so `G_tuned` stays None) a `MultiCodeGenerator` over the
model's G, so it saves, loads, renders and edits like any result, an edit moving every code.
Composing at an earlier block (smaller `layer`) leaves more of the generator to shape the composition
(closer to the prior, more editable); a later block fits the target more closely.
"""
from __future__ import annotations

import torch

from ..errors import GanInvError
from ..models.multicode import MultiCodeGenerator
from ..models.prior import sample_prior, w_stats
from ..models.stylegan2 import Generator
from .base import Callback, MethodOutput, MethodSpec, Setting, StepInfo, frozen_view, psnr_of
from .optimize import _lr_schedule
from .objective import OBJECTIVE_SETTINGS, build_objective

SETTINGS = (
    Setting("codes", 8, int, "number of latent codes K", min=1, max=64),
    Setting("layer", None, int, "synthesis block index L after which the codes' features are composed "
            "(0 = the 4 px block; None: the middle block)", min=0, optional=True),
    Setting("space", "w+", str, "space of each code", choices=("w", "w+")),
    Setting("num_steps", 300, int, "optimization steps", min=1),
    Setting("learning_rate", 0.05, float, "Adam learning rate of the codes (peak of the schedule)", min=0.0),
    Setting("importance_learning_rate", 0.01, float, "Adam learning rate of the importance weights", min=0.0),
    Setting("lr_rampup", 0.05, float, "fraction of the steps of linear warm-up", min=0.0, max=1.0),
    Setting("lr_rampdown", 0.25, float, "fraction of the steps of cosine ramp-down", min=0.0, max=1.0),
    Setting("init_truncation", 0.5, float, "start codes: prior samples pulled toward w_avg by this psi",
            min=0.0, max=1.0),
    *OBJECTIVE_SETTINGS,
    Setting("preview_every", 10, int, "steps between preview images sent to the callback", min=1),
)
DEFAULTS = {s.name: s.default for s in SETTINGS}


def default_layer(G: Generator) -> int:
    """The middle synthesis block (e.g. the 16 px block of a 32 or 64 px model)."""
    return len(G.synthesis.block_resolutions) // 2


def run(G: Generator, target: torch.Tensor, *, D=None, real_images=None, seed: int = 0,
        callback: Callback | None = None, init_ws: torch.Tensor | None = None, lpips_dir: str | None = None,
        degradation=None, **settings) -> MethodOutput:
    s = {**DEFAULTS, **settings}
    if not hasattr(G.synthesis, "block_resolutions"):
        raise GanInvError(f"multicode composes the features of a StyleGAN2 synthesis block; this "
                          f"{type(G).__module__.rsplit('.', 1)[-1]} generator has no such blocks (use optimize, "
                          "pti or clone)")
    G = frozen_view(G)  # gradients reach only the codes and weights; the caller's G stays as it is
    blocks = len(G.synthesis.block_resolutions)
    layer = default_layer(G) if s["layer"] is None else int(s["layer"])
    if not 0 <= layer <= blocks - 2:
        raise ValueError(f"multicode layer must be 0..{blocks - 2} for this {G.img_resolution} px model (blocks at "
                         f"{', '.join(map(str, G.synthesis.block_resolutions))} px), got {layer}")
    k = int(s["codes"])
    num_steps = int(s["num_steps"])
    device = target.device
    observe = degradation if degradation is not None else (lambda image: image)
    if degradation is not None:
        target = degradation.observe(target, G)
    n = target.shape[0]
    loss_fn = build_objective(s, D=D, lpips_dir=lpips_dir).to(device)
    w_avg, _ = w_stats(G)
    w_avg = w_avg.to(device).reshape(1, 1, 1, -1)

    # Start codes: seeded prior samples pulled toward w_avg (distinct codes break the symmetry between them).
    prior = sample_prior(G, n * k, seed=seed)[:, :1].to(device).reshape(n, k, 1, -1)
    start = w_avg + float(s["init_truncation"]) * (prior - w_avg)
    if init_ws is not None:
        # A given start latent becomes the centre; the codes keep their spread around it.
        centre = init_ws.detach().to(device).float()
        centre = centre.unsqueeze(1).repeat(1, G.num_ws, 1) if centre.ndim == 2 else centre
        centre = centre.repeat(n, 1, 1) if centre.shape[0] == 1 and n > 1 else centre
        start = start - start.mean(dim=1, keepdim=True) + (centre[:, :1] if s["space"] == "w" else centre).unsqueeze(1)
    if s["space"] == "w+" and start.shape[2] == 1:
        start = start.repeat(1, 1, G.num_ws, 1)
    codes = start.clone().requires_grad_(True)
    wrapper = MultiCodeGenerator(G, layer, torch.zeros([1, k, G.num_ws, G.w_dim], device=device),
                                 torch.zeros([1, k, G.synthesis.channels[G.synthesis.block_resolutions[layer]]],
                                             device=device),
                                 torch.zeros([1, k, G.img_channels], device=device)
                                 if getattr(G.synthesis, f"b{G.synthesis.block_resolutions[layer]}").num_torgb else None)
    synthesis = wrapper.synthesis
    importance = torch.full(list(synthesis.importance.shape[1:]), 1.0 / k, device=device)
    importance = importance.unsqueeze(0).repeat(n, 1, 1).requires_grad_(True)
    skip = None
    if synthesis.skip_importance is not None:
        skip = torch.full([n, k, G.img_channels], 1.0 / k, device=device).requires_grad_(True)
    weights = [importance] + ([skip] if skip is not None else [])
    optimizer = torch.optim.Adam([{"params": [codes], "lr": s["learning_rate"], "base": s["learning_rate"]},
                                  {"params": weights, "lr": s["importance_learning_rate"],
                                   "base": s["importance_learning_rate"]}], betas=(0.9, 0.999))

    def full_codes() -> torch.Tensor:
        return codes.expand(-1, -1, G.num_ws, -1) if s["space"] == "w" else codes

    def render() -> tuple[torch.Tensor, torch.Tensor]:
        all_codes = full_codes()
        centre = all_codes.mean(dim=1)
        return synthesis.compose(centre, all_codes, importance, skip, noise_mode="const"), centre

    best_loss = torch.full([n], float("inf"), device=device)
    best_codes = full_codes().detach().clone()
    best_importance = importance.detach().clone()
    best_skip = None if skip is None else skip.detach().clone()
    best_image = torch.zeros([n, G.img_channels, G.img_resolution, G.img_resolution], device=device)
    history: list[dict] = []
    stop_reason = "num_steps"

    def keep_best(per_image: torch.Tensor, image: torch.Tensor) -> None:
        improved = per_image.detach() < best_loss
        if improved.any():
            best_loss[improved] = per_image.detach()[improved]
            best_codes[improved] = full_codes().detach()[improved]
            best_importance[improved] = importance.detach()[improved]
            if skip is not None:
                best_skip[improved] = skip.detach()[improved]
            best_image[improved] = image.detach()[improved]

    for step in range(num_steps):
        t = step / num_steps
        for group in optimizer.param_groups:
            group["lr"] = _lr_schedule(t, group["base"], s["lr_rampup"], s["lr_rampdown"])
        image, _ = render()
        per_image, terms = loss_fn(observe(image), target, reduction="none")
        total = per_image.sum()
        if not torch.isfinite(total):
            stop_reason = f"non-finite loss at step {step}; kept the best result so far"
            break
        with torch.no_grad():
            keep_best(per_image, image)
        optimizer.zero_grad(set_to_none=True)
        total.backward(inputs=[codes, *weights])
        optimizer.step()
        psnr = float(psnr_of(observe(image.detach()), target).mean())
        record = {"step": step, "loss": float(per_image.detach().mean()), "psnr": psnr,
                  "lr": optimizer.param_groups[0]["lr"], **{name: float(v.mean()) for name, v in terms.items()}}
        history.append(record)
        if callback is not None:
            show = image.detach() if (step % max(1, s["preview_every"]) == 0 or step == num_steps - 1) else None
            if callback(StepInfo(step=step, num_steps=num_steps, loss=record["loss"], psnr=psnr, image=show,
                                 stage="multicode")):
                stop_reason = f"stopped by callback at step {step}"
                break
    with torch.no_grad():  # the last step's parameters were never evaluated
        image, _ = render()
        per_image, _ = loss_fn(observe(image), target, reduction="none")
        if torch.isfinite(per_image).all():
            keep_best(per_image, image)

    centre = best_codes.mean(dim=1)
    result_G = MultiCodeGenerator(G, layer, best_codes - centre.unsqueeze(1), best_importance, best_skip)
    return MethodOutput(ws=centre, space=s["space"], G=result_G, history=history, stop_reason=stop_reason,
                        reconstruction=best_image,
                        extras={"multicode": {"codes": k, "layer": layer,
                                              "layer_resolution": G.synthesis.block_resolutions[layer]}})


SPEC = MethodSpec("multicode", run, SETTINGS,
                  "K codes run to synthesis block L, their features composed with learned per-channel "
                  "importance, the rest of G run on the composition (edits move every code)",
                  paper="Gu et al. 2020 (mGANprior, Image Processing Using Multi-Code GAN Prior)",
                  quick_steps=150, accepts_degradation=True)
