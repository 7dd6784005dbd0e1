"""Pivotal Tuning Inversion.

Roich, Mokady, Bermano and Cohen-Or, "Pivotal Tuning for Latent-based Editing of Real Images"
(ACM TOG 2022). A pivot latent is found by optimization in W (an editable region of the latent
space); the generator's weights are then tuned so that the pivot reproduces the target, while a
locality regularizer keeps the tuned generator close to the original at latents interpolated from
the pivot toward prior samples (their Eq. 4-5). The caller's generator is never modified: the result
holds a tuned copy. The regularizer leaves prior samples changed by a third to two thirds of the
pivot's change here (benchmarks/inversion.py); with `gate` on (the default) the tuned copy is wrapped
by ganinv.models.local so that it acts only within `gate_inner`/`gate_outer` of the pivot.

With N targets, each gets its own tuned copy, and each copy's result equals what the target alone gives:
the copies' weights are stacked and tuned together, one batched forward and backward per step
(`_tune_per_image`). `shared_generator=True` tunes one copy for all targets instead.
"""
from __future__ import annotations

import copy

import torch
from torch.func import functional_call, vmap

from ..models.local import gate_request
from ..models.stylegan2 import Generator
from ..utils import adam
from . import optimize
from .base import GATE_SETTINGS, Callback, MethodOutput, MethodSpec, Setting, StepInfo, psnr_of
from .objective import OBJECTIVE_SETTINGS, build_objective

SETTINGS = (
    Setting("pivot_space", "w", str, "space of the pivot optimization", choices=("w", "w+")),
    Setting("pivot_steps", 200, int, "steps of the pivot optimization", min=1),
    Setting("num_steps", 150, int, "generator tuning steps", min=1),
    Setting("learning_rate", 3e-3, float, "Adam learning rate of the tuning", min=0.0),
    *OBJECTIVE_SETTINGS,
    Setting("locality_weight", 1.0, float, "weight of the locality regularizer", min=0.0),
    Setting("locality_every", 1, int, "steps between locality terms", min=1),
    Setting("locality_alpha", 30.0, float, "distance from the pivot toward prior samples", min=0.0),
    Setting("locality_batch", 4, int, "prior samples per locality term", min=1),
    Setting("target_psnr", None, float, "stop when this PSNR is reached (per target)", optional=True),
    Setting("shared_generator", False, bool, "tune one generator for all targets instead of one per target"),
    *GATE_SETTINGS,
    Setting("preview_every", 10, int, "steps between preview images sent to the callback", min=1),
)
DEFAULTS = {s.name: s.default for s in SETTINGS}


def run(G: Generator, target: torch.Tensor, *, D=None, real_images=None, seed: int = 0,
        callback: Callback | None = None, init_ws: torch.Tensor | None = None,
        lpips_dir: str | None = None, degradation=None, **settings) -> MethodOutput:
    s = {**DEFAULTS, **settings}
    # Restoration (ganinv.inversion.degradation): pivot and tuning compare the degraded rendering.
    observe = degradation if degradation is not None else (lambda image: image)
    if degradation is not None:
        target = degradation.observe(target, G)
    gate = gate_request(s)
    device = target.device
    history: list[dict] = []
    if init_ws is None:
        def pivot_callback(info: StepInfo):
            if callback is not None:
                info.stage = "pivot"
                return callback(info)
            return None
        pivot = optimize.run(G, target, D=D, seed=seed, callback=pivot_callback, lpips_dir=lpips_dir,
                             space=s["pivot_space"], num_steps=s["pivot_steps"], optimize_noise=False,
                             mse_weight=s["mse_weight"], laplacian_weight=s["laplacian_weight"],
                             lpips_weight=s["lpips_weight"], dfeat_weight=s["dfeat_weight"],
                             degradation=degradation)
        pivot_ws = pivot.ws
        history.extend({**h, "stage": "pivot"} for h in pivot.history)
    else:
        pivot_ws = init_ws.detach().to(device).float()
        if pivot_ws.ndim == 2:
            pivot_ws = pivot_ws.unsqueeze(1).repeat(1, G.num_ws, 1)

    tune = _tune_shared if s["shared_generator"] else _tune_per_image
    tuned, best_image, stop_reason = tune(G, pivot_ws, target, s, seed=seed, callback=callback,
                                          history=history, loss_fn=build_objective(s, D=D, lpips_dir=lpips_dir)
                                          .to(device), observe=observe)
    return MethodOutput(ws=pivot_ws.detach(), space="w" if init_ws is None and s["pivot_space"] == "w" else "w+",
                        G=tuned, history=history, stop_reason=stop_reason, extras={"gate": gate},
                        reconstruction=best_image)


def _locality_latents(G: Generator, pivots: torch.Tensor, gen: torch.Generator, s: dict) -> torch.Tensor:
    """[P, locality_batch, num_ws, w_dim]: latents on the segments from each pivot [P, num_ws, w_dim]
    toward the same prior samples, at distance locality_alpha (PTI's Eq. 4)."""
    device = pivots.device
    z = torch.randn([s["locality_batch"], G.z_dim], generator=gen).to(device)
    c = None
    if G.c_dim:
        labels = torch.randint(0, G.c_dim, [s["locality_batch"]], generator=gen)
        c = torch.nn.functional.one_hot(labels, G.c_dim).float().to(device)
    w_z = G.mapping(z, c, update_w_avg=False).unsqueeze(0)
    pivots = pivots.unsqueeze(1)
    direction = w_z - pivots
    norm = direction.flatten(2).norm(dim=2).clamp_min(1e-8)[..., None, None]
    # PTI's alpha=30 is for 512-d W; never step past the prior sample itself.
    return pivots + direction / norm * norm.clamp(max=s["locality_alpha"])


def _tune_per_image(G: Generator, pivot_ws: torch.Tensor, target: torch.Tensor, s: dict, *, seed: int,
                    callback: Callback | None, history: list, loss_fn, observe):
    """Tune one copy of the synthesis weights per target, all in one batched call per step.

    Each target's weights are a slice of parameters stacked along a new leading dimension and rendered with
    `torch.func.vmap` over `functional_call`, so one forward and one backward serve all targets. The loss is
    a sum of per-target terms and Adam works elementwise, so each slice takes exactly the steps it would take
    alone; the locality samples come from the same seeded draws a lone run makes (the same z for every
    target, each on its own pivot's segment). A target that reaches target_psnr (or a non-finite loss)
    stops: its kept state no longer changes and it leaves the loss. Returns (one tuned generator per
    target, their best images, the stop reason)."""
    num = pivot_ws.shape[0]
    device = pivot_ws.device
    template = copy.deepcopy(G.synthesis).eval().requires_grad_(False)
    names = [name for name, _ in template.named_parameters()]
    stacked = {name: p.detach().unsqueeze(0).repeat(num, *([1] * p.ndim)).requires_grad_(True)
               for name, p in template.named_parameters()}
    params = list(stacked.values())
    optimizer = adam(params, lr=s["learning_rate"])

    def render_one(weights: dict, ws: torch.Tensor) -> torch.Tensor:
        return functional_call(template, weights, (ws,), {"noise_mode": "const"})

    render_all = vmap(render_one)
    gen = torch.Generator(device="cpu").manual_seed(int(seed) + 1)
    num_steps = int(s["num_steps"])
    reasons = ["num_steps"] * num
    active = torch.ones(num, dtype=torch.bool, device=device)
    best_loss = torch.full([num], float("inf"), device=device)
    best = {name: p.detach().clone() for name, p in stacked.items()}
    best_image = None
    stopped_by_callback = False
    for step in range(num_steps):
        ws = pivot_ws.unsqueeze(1)  # [N, 1, num_ws, w_dim]: each target's pivot, then its locality latents
        local_step = s["locality_weight"] > 0 and step % max(1, int(s["locality_every"])) == 0
        if local_step:
            with torch.no_grad():
                w_r = _locality_latents(G, pivot_ws, gen, s)
                reference = G.synthesis(w_r.flatten(0, 1), noise_mode="const").unflatten(0, w_r.shape[:2])
            ws = torch.cat([ws, w_r], dim=1)
        images = render_all(stacked, ws)
        image = images[:, 0]
        per_image, terms = loss_fn(observe(image), target, reduction="none")
        total_each = per_image
        index = active.nonzero().flatten()
        record = {"step": step, "stage": "tune", "loss": float(per_image.detach()[index].mean()),
                  **{k: float(v[index].mean() if v.ndim else v) for k, v in terms.items()}}
        if local_step:
            local = (images[:, 1:] - reference).square().flatten(1).mean(dim=1)
            total_each = total_each + s["locality_weight"] * local
            record["locality"] = float(local.detach()[index].mean())
        finite = torch.isfinite(total_each.detach())
        for i in (active & ~finite).nonzero().flatten().tolist():
            reasons[i] = f"non-finite loss at step {step}; kept the best result so far"
        active &= finite
        psnr = psnr_of(observe(image.detach()), target)
        index = active.nonzero().flatten()
        if len(index) == 0:
            break
        record["psnr"] = float(psnr[index].mean())
        history.append(record)
        loss_now = per_image.detach()
        improved = active & (loss_now < best_loss)
        if bool(improved.any()):
            best_loss = torch.where(improved, loss_now, best_loss)
            for name in names:
                best[name][improved] = stacked[name].detach()[improved]
            best_image = image.detach().clone() if best_image is None else best_image
            best_image[improved] = image.detach()[improved]
        if s["target_psnr"] is not None:
            reached = active & (psnr >= s["target_psnr"])
            for i in reached.nonzero().flatten().tolist():
                reasons[i] = f"reached target_psnr {s['target_psnr']} at step {step}"
            active &= ~reached
            index = active.nonzero().flatten()
            if len(index) == 0:
                break
        optimizer.zero_grad(set_to_none=True)
        total_each[index].sum().backward(inputs=params)
        optimizer.step()
        if callback is not None:
            show = image.detach() if step % max(1, s["preview_every"]) == 0 else None
            if callback(StepInfo(step=step, num_steps=num_steps, loss=record["loss"], psnr=record["psnr"],
                                 image=show, stage="tune")):
                for i in index.tolist():
                    reasons[i] = f"stopped by callback at step {step}"
                stopped_by_callback = True
                break
    # The state after the last step has not been scored yet.
    last = torch.tensor([r == "num_steps" for r in reasons], device=device) & active
    if bool(last.any()) and not stopped_by_callback:
        with torch.no_grad():
            image = render_all(stacked, pivot_ws.unsqueeze(1))[:, 0]
            per_image, _ = loss_fn(observe(image), target, reduction="none")
        improved = last & torch.isfinite(per_image) & (per_image < best_loss)
        for name in names:
            best[name][improved] = stacked[name].detach()[improved]
        best_image = image.clone() if best_image is None else best_image
        best_image[improved] = image[improved]
    tuned = []
    for i in range(num):
        G_tuned = copy.deepcopy(G)
        with torch.no_grad():
            for name, p in G_tuned.synthesis.named_parameters():
                p.copy_(best[name][i])
        tuned.append(G_tuned.eval().requires_grad_(False))
    return tuned, best_image, _stop_reason(reasons)


def _stop_reason(reasons: list[str]) -> str:
    """One reason when all targets stopped alike, else each target's."""
    if len(set(reasons)) == 1:
        return reasons[0]
    return "; ".join(f"target {i}: {reason}" for i, reason in enumerate(reasons))


def _tune_shared(G: Generator, pivot_ws: torch.Tensor, target: torch.Tensor, s: dict, *, seed: int,
                 callback: Callback | None, history: list, loss_fn, observe):
    """Tune one generator for all targets (the multi-target variant, `shared_generator=True`): the loss is
    the sum over targets and the locality term is taken about the mean pivot."""
    G_orig = G
    G_tuned = copy.deepcopy(G).train()
    G_tuned.requires_grad_(True)
    G_tuned.mapping.requires_grad_(False)  # only the synthesis network is tuned (as in PTI)
    params = [p for p in G_tuned.synthesis.parameters() if p.requires_grad]
    optimizer = adam(params, lr=s["learning_rate"])
    gen = torch.Generator(device="cpu").manual_seed(int(seed) + 1)
    num_steps = int(s["num_steps"])
    stop_reason = "num_steps"
    best = (float("inf"), copy.deepcopy(G_tuned.state_dict()))
    best_image = None  # the image of the best state, so `invert` need not render it again
    for step in range(num_steps):
        image = G_tuned.synthesis(pivot_ws, noise_mode="const")
        per_image, terms = loss_fn(observe(image), target, reduction="none")
        total = per_image.sum()
        record = {"step": step, "stage": "tune", "loss": float(per_image.detach().mean()),
                  **{k: float(v.mean()) for k, v in terms.items()}}
        if s["locality_weight"] > 0 and step % max(1, int(s["locality_every"])) == 0:
            with torch.no_grad():
                w_r = _locality_latents(G_orig, pivot_ws.mean(dim=0, keepdim=True), gen, s)[0]
                reference = G_orig.synthesis(w_r, noise_mode="const")
            local = (G_tuned.synthesis(w_r, noise_mode="const") - reference).square().mean()
            total = total + s["locality_weight"] * local * target.shape[0]
            record["locality"] = float(local.detach())
        if not torch.isfinite(total):
            stop_reason = f"non-finite loss at step {step}; kept the best result so far"
            break
        psnr = float(psnr_of(observe(image.detach()), target).mean())
        record["psnr"] = psnr
        history.append(record)
        if record["loss"] < best[0]:
            best = (record["loss"], copy.deepcopy(G_tuned.state_dict()))
            best_image = image.detach()
        if s["target_psnr"] is not None and psnr >= s["target_psnr"]:
            stop_reason = f"reached target_psnr {s['target_psnr']} at step {step}"
            break
        optimizer.zero_grad(set_to_none=True)
        total.backward(inputs=params)
        optimizer.step()
        if callback is not None:
            show = image.detach() if step % max(1, s["preview_every"]) == 0 else None
            if callback(StepInfo(step=step, num_steps=num_steps, loss=record["loss"], psnr=psnr, image=show,
                                 stage="tune")):
                stop_reason = f"stopped by callback at step {step}"
                break
    if stop_reason == "num_steps":
        with torch.no_grad():
            image = G_tuned.synthesis(pivot_ws, noise_mode="const")
            per_image, _ = loss_fn(observe(image), target, reduction="none")
        if torch.isfinite(per_image).all() and float(per_image.mean()) < best[0]:
            best = (float(per_image.mean()), copy.deepcopy(G_tuned.state_dict()))
            best_image = image
    G_tuned.load_state_dict(best[1])
    G_tuned.eval().requires_grad_(False)
    return G_tuned, best_image, stop_reason


SPEC = MethodSpec("pti", run, SETTINGS, "W pivot, then tune the synthesis weights with a locality regularizer",
                  tunes_generator=True, paper="Roich et al. 2022 (Pivotal Tuning)", starts_from_encoder=True,
                  first_stage_step_setting="pivot_steps", quick_steps=100, accepts_degradation=True)
