"""Clone: near-perfect inversion by locally tuning the generator.

Feng, Martinez et al., "Near Perfect GAN Inversion" (Algorithm 1). Starting from a latent h(x) found by
another method, the generator G (and discriminator D) are updated with

    L = 1_p[L_local] + L_global,   L_local = L_recon + lambda * L_adv_local          (paper eq. 2, 4)

where L_recon is the Laplacian-pyramid L1 loss between the target x and G(h(x)), L_adv_local the GAN
loss on the pair (x, G(h(x))), 1_p an indicator that fires with probability p, and L_global the
pre-trained GAN's own loss on real training images and prior samples (eq. 3), which keeps the rest of
the manifold in place. Iteration stops when L_recon < epsilon (or a PSNR target is reached).

Settings beyond the paper, measured in benchmarks/inversion.py and benchmarks/clone_sweep.py: the
global term can run every k-th iteration on a small batch (`global_every`, `global_batch`) and the local
adversarial pair (the lambda term for G and D's update on x vs G(z)) every k-th (`adv_every`; the
paper: 1). At 64 px the local adversarial pair alone costs more than the reconstruction step (D passes
for G's gradient and for D's update), and a target needs many hundreds of steps, so the defaults space
the two terms (every 16th and 32nd step) and tune at a higher rate than the GAN was trained with: that
is what makes CPU runs reach 35 dB within a minute (docs/benchmarks.md); `preset="paper"` restores
the paper's p = 1/8, lambda = 10 and a global step every iteration. Without real images (or without D) the global
term falls back to distillation against the frozen original generator, which the result records.
The objective G is tuned on is also ours by default: plain MSE plus a Laplacian-band MSE with the finest
bands weighted up (`band_weights`, finest first; ganinv.losses.laplacian_band_mse). Tuning a network on
one image fits its coarse structure in a few hundred steps and its finest detail last (the spectral bias
of Rahaman et al. 2019, as in Deep Image Prior); weighting the fine bands counters that and, measured on
emoji64 at equal steps, gains several dB (docs/benchmarks.md, "Clone's settings, measured"). L_recon is still computed every
local step, for the epsilon stop; `laplacian_weight` > 0 adds it to the objective (the paper preset
tunes on L_recon alone).
Past `gan_until_psnr` (35 dB by default) the GAN terms stop: the fit then refines detail the coarse
structure already agrees on, the steps cost no discriminator passes, and measured on emoji64 the fit
reaches 40-45 dB sooner (docs/benchmarks.md, "Clone to 50 dB"); runs that stop at 35 dB are unchanged,
and the locality gate still leaves the generator's prior samples untouched.
`locality_weight` > 0 adds, every `locality_every` steps, the mean squared change of G+(w) vs G(w) at
`locality_batch` prior samples to the reconstruction update (PTI's locality regularizer, Roich et al.
2022): the GAN loss is meant to keep G+ realistic, not unchanged away from the target. `frozen_params`
lists name parts of synthesis parameters left untouched; by default the 4 and 8 px blocks ("b4.", "b8.";
the paper preset tunes all). The coarse blocks set pose and shape, the attributes edits move: left as
trained, the tuned generator still answers edits, and photos still reach 35 dB (benchmarks/editability.py
and benchmarks/clone_sweep.py; figures in docs/benchmarks.md).

Neither term keeps the rest of the manifold in place at CPU-minute budgets (benchmarks/clone_sweep.py:
prior samples move more than the pivot). With `gate` on (the default; off in the paper preset) the
result's generator is wrapped by ganinv.models.local: G+'s weights render latents within `gate_inner`
of the pivot (fractions of the median distance between two prior latents: edits of a few prior
standard deviations), G's own from `gate_outer` on, a blend between.
"""
from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F

from ..losses import default_levels, laplacian_residual_terms
from ..models.local import gate_request
from ..models.stylegan2 import Generator
from ..utils import adam
from . import optimize
from .base import GATE_SETTINGS, Callback, MethodOutput, MethodSpec, Setting, StepInfo, psnr_of

# The paper's settings, with the pre-trained GAN's own optimizer (StyleGAN2: Adam, lr 0.0025, betas 0/0.99).
PAPER = dict(p=1 / 8, adv_lambda=10.0, adv_every=1, epsilon=1e-3, global_every=1, global_batch=4,
             laplacian_weight=1.0, mse_weight=0.0, band_weights=(), learning_rate=2.5e-3, d_learning_rate=2.5e-3,
             beta1=0.0, beta2=0.99,
             global_learning_rate=None, global_loss="gan", locality_weight=0.0,
             locality_every=2, locality_batch=2, adam_eps=1e-8, gate=False, frozen_params=(),
             lr_decay_from=None, gan_until_psnr=None)

PRESETS = {"fast": {}, "paper": PAPER}

SETTINGS = (
    Setting("preset", "fast", str, "named defaults: fast (ours) or paper (the paper's settings)",
            choices=tuple(PRESETS)),
    Setting("h", "optimize", str, "how h(x), the start latent, is found"),
    Setting("h_steps", 100, int, "steps of h(x)'s optimization", min=1),
    Setting("h_space", "w+", str, "space of h(x)'s optimization", choices=optimize.SPACES),
    Setting("num_steps", 3000, int, "generator tuning steps (at most)", min=1),
    Setting("p", 1.0, float, "probability of the local term at a step", min=0.0, max=1.0),
    Setting("adv_lambda", 0.01, float, "weight of the local adversarial loss", min=0.0),
    Setting("adv_every", 16, int, "steps between local adversarial pairs", min=1),
    Setting("epsilon", 1e-3, float, "stop when L_recon falls below this", min=0.0),
    Setting("target_psnr", None, float, "stop when this PSNR is reached", optional=True),
    Setting("global_every", 32, int, "steps between global (GAN loss) steps", min=1),
    Setting("global_batch", 2, int, "prior samples per global step", min=1),
    Setting("global_loss", "gan", str, "the global term", choices=("gan", "distillation")),
    Setting("global_weight", 1.0, float, "weight of the global term", min=0.0),
    Setting("global_learning_rate", 1e-3, float,
            "learning rate of the global term's own optimizer state (None: share the local one)",
            min=0.0, optional=True),
    Setting("locality_weight", 0.0, float, "weight of PTI's locality term at prior samples", min=0.0),
    Setting("locality_every", 2, int, "steps between locality terms", min=1),
    Setting("locality_batch", 2, int, "prior samples per locality term", min=1),
    Setting("frozen_params", ("b4.", "b8."), list, "name parts of synthesis weights left as trained",
            item_type=str),
    *GATE_SETTINGS,
    Setting("laplacian_weight", 0.0, float, "weight of L_recon (Laplacian-pyramid L1) in the objective", min=0.0),
    Setting("mse_weight", 1.0, float, "weight of the pixel MSE in the objective", min=0.0),
    Setting("band_weights", (30.0, 10.0, 3.0, 1.0), list, "Laplacian-band MSE weights, finest band first"),
    Setting("learning_rate", 2e-2, float, "Adam learning rate of G's tuning", min=0.0),
    Setting("d_learning_rate", 1e-3, float, "Adam learning rate of D", min=0.0),
    Setting("beta1", 0.9, float, "Adam beta1", min=0.0, max=1.0),
    Setting("beta2", 0.999, float, "Adam beta2", min=0.0, max=1.0),
    Setting("adam_eps", 1e-8, float, "Adam epsilon", min=0.0),
    Setting("lr_decay_from", None, float, "PSNR from which G's learning rates fall with the best PSNR reached "
            "(None: constant rates)", optional=True),
    Setting("lr_halving_db", 6.0, float, "dB of PSNR gain per halving of the learning rates", min=0.1),
    Setting("gan_until_psnr", 35.0, float, "run the local adversarial and global terms only until the "
            "reconstruction reaches this PSNR (None: throughout)", optional=True),
    Setting("max_seconds", None, float, "stop after this many seconds", min=0.0, optional=True),
    Setting("preview_every", 10, int, "steps between preview images sent to the callback", min=1),
)
DEFAULTS = {s.name: s.default for s in SETTINGS}


def _records_to_floats(history: list[dict]) -> None:
    """The records' terms kept on the device during the run, as floats, read back together."""
    places = [(record, key) for record in history for key, value in record.items()
              if isinstance(value, torch.Tensor)]
    if places:
        values = torch.stack([record[key].float() for record, key in places]).tolist()  # one read-back
        for (record, key), value in zip(places, values):
            record[key] = value


def _prior_latents(G: Generator, batch: int, gen: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    z = torch.randn([batch, G.z_dim], generator=gen).to(device)
    c = None
    if G.c_dim:
        labels = torch.randint(0, G.c_dim, [batch], generator=gen)
        c = F.one_hot(labels, G.c_dim).float().to(device)
    return z, c


def run(G: Generator, target: torch.Tensor, *, D=None, real_images: torch.Tensor | None = None, seed: int = 0,
        callback: Callback | None = None, init_ws: torch.Tensor | None = None, h_result=None,
        lpips_dir: str | None = None, degradation=None, **settings) -> MethodOutput:
    # Restoration (ganinv.inversion.degradation): L_recon and the objective see the degraded rendering.
    observe = degradation if degradation is not None else (lambda image: image)
    if degradation is not None:
        target = degradation.observe(target, G)

    preset = settings.get("preset", DEFAULTS["preset"])
    if preset not in PRESETS:
        raise ValueError(f"unknown clone preset {preset!r}; expected one of {sorted(PRESETS)}")
    s = {**DEFAULTS, **PRESETS[preset], **settings}
    gate = gate_request(s)
    for name in ("adv_every", "global_every"):
        if int(s[name]) < 1:
            raise ValueError(f"clone {name} must be >= 1, got {s[name]}")
    if isinstance(s["band_weights"], (str, int, float)):
        raise ValueError(f"clone band_weights must be a list of weights (finest band first), got {s['band_weights']!r}")
    # Finest band first; weights for levels coarser than a small image's pyramid has are dropped.
    band_weights = tuple(float(w) for w in (s["band_weights"] or ()))[:default_levels(*target.shape[-2:]) + 1]
    if (s["laplacian_weight"] < 0 or s["mse_weight"] < 0 or min(band_weights, default=0.0) < 0
            or s["laplacian_weight"] + s["mse_weight"] + sum(band_weights) <= 0):
        raise ValueError("clone needs a reconstruction objective: laplacian_weight, mse_weight and band_weights "
                         f"must be >= 0 and not all 0, got {s['laplacian_weight']}, {s['mse_weight']} and "
                         f"{list(band_weights)}")
    if isinstance(s["frozen_params"], str):
        raise ValueError(f"clone frozen_params must be a list of name parts, got {s['frozen_params']!r}")

    def frozen(name: str) -> bool:
        return any(part in name for part in s["frozen_params"])

    if all(frozen(name) for name, _ in G.synthesis.named_parameters()):
        raise ValueError(f"clone frozen_params {list(s['frozen_params'])} leave no synthesis weight to tune")
    # L_recon and the band MSE come from one pyramid of the residual; it needs a graph only when a term of
    # the objective uses it (L_recon alone is the epsilon stop).
    pyramid_in_objective = s["laplacian_weight"] != 0 or any(band_weights)
    device = target.device
    history: list[dict] = []
    started = time.perf_counter()

    # Step 1: z <- h(x).
    noise = None
    if init_ws is not None:
        ws = init_ws.detach().to(device).float()
        if ws.ndim == 2:
            ws = ws.unsqueeze(1).repeat(1, G.num_ws, 1)
        h_name = "given"
    elif s["h"] == "optimize":
        def h_callback(info: StepInfo):
            if callback is not None:
                info.stage = "h(x)"
                return callback(info)
            return None
        start = optimize.run(G, target, D=D, seed=seed, callback=h_callback, space=s["h_space"],
                             num_steps=s["h_steps"], optimize_noise=False, lpips_dir=lpips_dir,
                             degradation=degradation)
        ws = start.ws
        history.extend({**h, "stage": "h(x)"} for h in start.history)
        h_name = f"optimize({s['h_space']}, {s['h_steps']} steps)"
    else:
        raise ValueError(f"h={s['h']!r} needs init_ws from that method (ganinv.invert passes it)")

    # Steps 2-3: G(0) <- G, D(0) <- D (copies: the caller's networks are never touched).
    G_orig = G
    G_plus = copy.deepcopy(G).train()
    G_plus.requires_grad_(False)
    G_plus.synthesis.requires_grad_(True)
    for name, param in G_plus.synthesis.named_parameters():
        if frozen(name):
            param.requires_grad_(False)  # e.g. "b4." (a block), "const", "affine", "noise_strength"
    g_params = [p for p in G_plus.synthesis.parameters() if p.requires_grad]
    betas = (float(s["beta1"]), float(s["beta2"]))
    g_adam = dict(betas=betas, eps=float(s["adam_eps"]))
    g_opt = adam(g_params, lr=s["learning_rate"], **g_adam)
    # Separate optimizer state for the global term (when asked for): under Adam's per-parameter
    # normalization, the large and noisy GAN gradients would otherwise set the step of every weight
    # and swamp the reconstruction gradient; with two states each term moves G by its own rate.
    separate_global = s["global_learning_rate"] is not None
    g_opt_global = (adam(g_params, lr=s["global_learning_rate"], **g_adam)
                    if separate_global else g_opt)
    D_plus = None
    d_opt = None
    if D is not None:
        D_plus = copy.deepcopy(D).train()
        D_plus.requires_grad_(True)
        d_opt = adam(D_plus.parameters(), lr=s["d_learning_rate"], betas=betas)
    reals = None
    if s["global_loss"] not in ("gan", "distillation"):
        raise ValueError(f"global_loss must be 'gan' or 'distillation', got {s['global_loss']!r}")
    if real_images is not None and len(real_images) > 0 and D_plus is not None:
        reals = real_images.to(device).float()
    global_mode = "gan" if reals is not None and s["global_loss"] == "gan" else "distillation"
    if global_mode == "gan":
        global_note = "L_global: the GAN's own loss on real training images and prior samples"
    elif s["global_loss"] == "distillation":
        global_note = "L_global: distillation against the frozen original G (asked for)"
    else:
        global_note = ("L_global: distillation against the frozen original G (no "
                       + ("discriminator" if D is None else "real images") + " available)")

    gen = torch.Generator(device="cpu").manual_seed(int(seed) + 7)
    num_steps = int(s["num_steps"])
    stop_reason = "num_steps"
    best_objective = float("inf")
    # The best generator so far is kept in preallocated buffers: the objective improves on most steps, and a
    # deepcopy of the state dict each time cost ~9 ms per step at 64 px (a tenth of the step).
    live_state = G_plus.synthesis.state_dict()
    best_state = {name: value.detach().clone() for name, value in live_state.items()}
    last_recon = None
    best_image = None  # the image of the best state, so `invert` need not render it again
    best_psnr = float("-inf")
    base_rates = [(group, group["lr"]) for opt in {id(g_opt): g_opt, id(g_opt_global): g_opt_global}.values()
                  for group in opt.param_groups]
    gan_on = True  # the GAN terms, until the reconstruction reaches gan_until_psnr
    for step in range(num_steps):
        record: dict = {"step": step, "stage": "clone"}
        local_active = bool(torch.rand([], generator=gen) < s["p"]) or step == 0
        # The local adversarial pair (a D forward/backward for G and a D update) on every
        # `adv_every`-th step only: at 64 px it costs more than the reconstruction step itself.
        adv_now = (gan_on and local_active and D_plus is not None and s["adv_lambda"] > 0
                   and step % int(s["adv_every"]) == 0)
        g_loss = torch.zeros([], device=device)
        g_global_loss = torch.zeros([], device=device)
        image = None
        if local_active:
            image = G_plus.synthesis(ws, noise_mode="const")
            seen = observe(image)
            # L_recon (per image [N]) is always computed: it is what epsilon stops on.
            with torch.set_grad_enabled(torch.is_grad_enabled() and pyramid_in_objective):
                recon, band_mse = laplacian_residual_terms(seen, target, band_weights, reduction="none")
            # MSE drives PSNR directly; L1 gradients stall near the target (benchmarks/inversion.py).
            objective = s["mse_weight"] * (seen - target).square().flatten(1).mean(dim=1)
            if s["laplacian_weight"] != 0:
                objective = objective + s["laplacian_weight"] * recon
            if any(band_weights):
                objective = objective + band_mse
            g_loss = g_loss + objective.sum()
            if adv_now:
                D_plus.requires_grad_(False)
                adv_local = F.softplus(-D_plus(image)).sum()
                g_loss = g_loss + s["adv_lambda"] * adv_local
                record["adv_local"] = adv_local.detach()
        if s["locality_weight"] > 0 and step % max(1, int(s["locality_every"])) == 0:
            # Beyond the paper: the GAN loss is meant to keep G+ realistic, not unchanged away from the target.
            # PTI's locality idea (squared change of G+(w) vs G(w) at prior samples) in the same update
            # as the reconstruction, so the two gradients compete directly.
            z_loc, c_loc = _prior_latents(G, int(s["locality_batch"]), gen, device)
            with torch.no_grad():
                w_loc = G_orig.mapping(z_loc, c_loc, update_w_avg=False)
                reference = G_orig.synthesis(w_loc, noise_mode="const")
            local_change = (G_plus.synthesis(w_loc, noise_mode="const") - reference).square().mean()
            g_loss = g_loss + s["locality_weight"] * local_change
            record["locality"] = local_change.detach()
        do_global = gan_on and step % int(s["global_every"]) == 0
        if do_global:
            z, c = _prior_latents(G, int(s["global_batch"]), gen, device)
            with torch.no_grad():
                w_prior = G_orig.mapping(z, c, update_w_avg=False)
            if global_mode == "gan":
                fake = G_plus.synthesis(w_prior, noise_mode="random")
                D_plus.requires_grad_(False)
                g_global = F.softplus(-D_plus(fake)).mean()
            else:
                fake = G_plus.synthesis(w_prior, noise_mode="const")
                with torch.no_grad():
                    reference = G_orig.synthesis(w_prior, noise_mode="const")
                g_global = (fake - reference).abs().mean()
            g_global_loss = s["global_weight"] * g_global
            record["global_g"] = g_global.detach()
        if not separate_global:
            g_loss, g_global_loss = g_loss + g_global_loss, torch.zeros([], device=device)
        # One read-back per step: what the step decides on (stopping, the best state, the rate, finiteness).
        # The records' other terms stay on the device until the end; each read-back on a GPU waits for
        # every queued kernel, and five of them a step left the device idle between them.
        checked = [g_loss.detach(), g_global_loss.detach()]
        if local_active:
            checked += [recon.detach().mean(), objective.detach().mean(), psnr_of(seen.detach(), target).mean()]
        checked = torch.stack(checked).tolist()
        if local_active:
            last_recon, last_objective, record["psnr"] = checked[2:]
            record["recon"], record["objective"] = last_recon, last_objective
        if not all(math.isfinite(value) for value in checked):
            stop_reason = f"non-finite loss at step {step}; kept the best generator so far"
            break
        if local_active and s["lr_decay_from"] is not None and record["psnr"] > best_psnr:
            best_psnr = record["psnr"]
            # Adam moves every weight by about its learning rate whatever the gradient's size, so at a constant
            # rate the fit oscillates at an error set by the rate (several dB from step to step near 35 dB).
            # The image error scales with the weight steps: halving the rate per `lr_halving_db` dB of PSNR
            # gained (6 dB: the error's amplitude halves) keeps the steps in proportion to what is left.
            scale = 0.5 ** (max(0.0, best_psnr - s["lr_decay_from"]) / s["lr_halving_db"])
            for group, rate in base_rates:
                group["lr"] = rate * scale
            record["learning_rate_scale"] = scale
        if local_active and last_objective < best_objective:
            # The best generator by the reconstruction objective it is tuned on (L_recon alone under the
            # paper's settings; with the MSE term, L_recon alone could prefer a lower-PSNR step).
            best_objective = last_objective
            best_image = image.detach()
            with torch.no_grad():
                for name, value in live_state.items():
                    best_state[name].copy_(value)
        if local_active and s["gan_until_psnr"] is not None and record["psnr"] >= s["gan_until_psnr"]:
            gan_on = False  # from the next step on: the fit refines detail, the GAN terms' share is done
        if local_active:
            reached_eps = last_recon < s["epsilon"]
            reached_psnr = s["target_psnr"] is not None and record["psnr"] >= s["target_psnr"]
            if reached_eps or reached_psnr:
                stop_reason = (f"L_recon {last_recon:.2e} < epsilon {s['epsilon']}" if reached_eps
                               else f"PSNR {record['psnr']:.2f} >= target_psnr {s['target_psnr']}") + f" at step {step}"
                history.append(record)
                best_image = image.detach()  # G+ stays at this step's weights
                break
        # Both gradients are taken before either step changes the weights in place.
        updates = [(torch.autograd.grad(loss, g_params, allow_unused=True), opt)
                   for loss, opt in ((g_loss, g_opt), (g_global_loss, g_opt_global)) if loss.requires_grad]
        for grads, opt in updates:
            for param, grad in zip(g_params, grads):
                param.grad = grad
            opt.step()

        # Discriminator update with the same terms (local pair with weight lambda, global batch).
        if D_plus is not None and (adv_now or (do_global and global_mode == "gan")):
            D_plus.requires_grad_(True)
            d_loss = torch.zeros([], device=device)
            if adv_now:
                # A degraded observation is no real image: D's local pair then has the fake side only.
                real_term = F.softplus(-D_plus(target)).sum() if degradation is None else 0.0
                d_loss = d_loss + s["adv_lambda"] * (F.softplus(D_plus(image.detach())).sum() + real_term)
            if do_global and global_mode == "gan":
                idx = torch.randint(0, len(reals), [int(s["global_batch"])], generator=gen)
                d_loss = d_loss + F.softplus(D_plus(fake.detach())).mean() + F.softplus(-D_plus(reals[idx])).mean()
            if d_loss.requires_grad and torch.isfinite(d_loss):
                d_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                d_opt.step()
                record["d_loss"] = d_loss.detach()
        history.append(record)
        if callback is not None and local_active:
            show = image.detach() if step % max(1, s["preview_every"]) < 1 / max(s["p"], 1e-3) else None
            if callback(StepInfo(step=step, num_steps=num_steps, loss=last_recon, psnr=record.get("psnr"),
                                 image=show, stage="clone")):
                stop_reason = f"stopped by callback at step {step}"
                break
        if s["max_seconds"] is not None and time.perf_counter() - started > s["max_seconds"]:
            stop_reason = f"max_seconds {s['max_seconds']} reached at step {step}"
            break

    _records_to_floats(history)
    if not stop_reason.startswith("L_recon") and not stop_reason.startswith("PSNR"):
        # Keep the best generator seen on the reconstruction objective (also after a NaN).
        G_plus.synthesis.load_state_dict(best_state)
    G_plus.eval().requires_grad_(False)
    return MethodOutput(ws=ws.detach(), space=s["h_space"] if init_ws is None else "w+", noise=noise, G=G_plus,
                        history=history, stop_reason=stop_reason,
                        extras={"h": h_name, "global_mode": global_mode, "global_note": global_note,
                                "preset": preset, "gate": gate, "settings": s},
                        reconstruction=best_image)


SPEC = MethodSpec("clone", run, SETTINGS,
                  "tune G and D locally: reconstruction (default MSE + fine-weighted Laplacian bands; paper: "
                  "Laplacian L1) + adversarial local loss with probability p, GAN loss as global term, stop at "
                  "epsilon or target_psnr; --preset paper for the paper's settings",
                  tunes_generator=True, paper="Feng et al. (Near Perfect GAN Inversion)", starts_from_encoder=True,
                  first_stage_step_setting="h_steps", quick_steps=300, presets=PRESETS, accepts_degradation=True)
