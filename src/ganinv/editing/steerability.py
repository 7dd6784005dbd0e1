"""Steerability walks: linear directions in W learned to reproduce simple image transformations
(Jahanian, Chai & Isola, "On the 'steerability' of generative adversarial networks", ICLR 2020).

For each transformation T (zoom, horizontal and vertical shift, brightness, and a shift of each colour
channel for RGB models) a vector d is learned so that G(w + alpha d) looks like T_alpha applied to G(w):
the loss is the masked L2 distance between the two, the mask leaving out the pixels T_alpha has no data
for (outside the image after a shift or zoom-out). The training is self-supervised: the target is the
generator's own image, transformed. Alpha is drawn per sample from [-1, 1] and maps to the transformation
amounts in `AMOUNTS` (e.g. alpha 1 = a shift of a quarter of the image, a zoom of 1.6x).

`measure_walk` reports how well a walk follows its request: for a range of alphas it compares the
transformation measured between G(w) and G(w + alpha d) (by image registration: a brute-force search for
the shift or scale that best aligns the two; mean intensity for brightness and colour) with the one asked.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..models.prior import sample_prior
from ..utils import adam, parse_layers
from .direction import Direction, model_identity, prior_std

#: transformation -> its amount at alpha = 1 (shift: fraction of the image side; zoom: log2 of the scale;
#: brightness and colour: change in [-1, 1] pixel units).
AMOUNTS = {"zoom": math.log2(1.6), "shift_x": 0.25, "shift_y": 0.25, "brightness": 0.5,
           "color_r": 0.5, "color_g": 0.5, "color_b": 0.5}
GEOMETRIC = ("zoom", "shift_x", "shift_y")


def transformations_for(G) -> list[str]:
    return [t for t in AMOUNTS if not (t.startswith("color_") and G.img_channels != 3)]


def _affine_grid(kind: str, amounts: torch.Tensor, shape) -> torch.Tensor:
    """Sampling grids that show the image shifted right/down by `amount` of its side, or zoomed in by
    2**amount (centred)."""
    n = len(amounts)
    theta = torch.zeros(n, 2, 3, device=amounts.device)
    if kind == "zoom":
        scale = torch.pow(2.0, -amounts)
        theta[:, 0, 0] = scale
        theta[:, 1, 1] = scale
    else:
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, 0 if kind == "shift_x" else 1, 2] = -2 * amounts  # grid units span 2 per image side
    return F.affine_grid(theta, list(shape), align_corners=False)


def transform(image: torch.Tensor, kind: str, amounts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(T_amount(image), mask of the pixels that have data) for a batch of amounts [N]."""
    amounts = amounts.to(image.device, image.dtype)
    if kind in GEOMETRIC:
        grid = _affine_grid(kind, amounts, image.shape)
        moved = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        ones = torch.ones_like(image[:, :1])
        mask = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return moved, (mask > 0.999).to(image.dtype)
    if kind == "brightness":
        return image + amounts.reshape(-1, 1, 1, 1), torch.ones_like(image[:, :1])
    channel = "rgb".index(kind[-1])
    offset = torch.zeros(len(amounts), image.shape[1], 1, 1, device=image.device, dtype=image.dtype)
    offset[:, channel, 0, 0] = amounts
    return image + offset, torch.ones_like(image[:, :1])


def learn_walk(G, kind: str, *, layers="all", steps: int = 300, batch_size: int = 16,
               learning_rate: float = 0.01, seed: int = 0) -> tuple[torch.Tensor, list[float]]:
    """The walk vector d [w_dim] for one transformation, and the loss per step."""
    device = next(G.parameters()).device
    G = G.eval().requires_grad_(False)
    layer_list = parse_layers(layers, G.num_ws)
    gen = torch.Generator().manual_seed(int(seed))
    prior = sample_prior(G, 2048, seed=seed)[:, 0].to(device)
    mask_ws = torch.zeros(G.num_ws, 1, device=device)
    mask_ws[layer_list] = 1
    d = torch.zeros(G.w_dim, device=device, requires_grad=True)
    optimizer = adam([d], lr=learning_rate)
    scale = float(prior.std(0).mean())  # d is learned in units of the prior's spread
    losses = []
    for _ in range(steps):
        w = prior[torch.randint(0, len(prior), [batch_size], generator=gen).to(device)]
        alpha = (torch.rand(batch_size, generator=gen) * 2 - 1).to(device)
        ws = w.unsqueeze(1).repeat(1, G.num_ws, 1)
        with torch.no_grad():
            target, valid = transform(G.synthesis(ws, noise_mode="const"), kind, alpha * AMOUNTS[kind])
        moved = ws + mask_ws * (alpha.reshape(-1, 1, 1) * scale * d)
        image = G.synthesis(moved, noise_mode="const")
        loss = ((image - target).square() * valid).sum() / (valid.sum() * image.shape[1]).clamp_min(1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return d.detach() * scale, losses


def _best_alignment(before: torch.Tensor, after: torch.Tensor, kind: str, candidates: torch.Tensor) -> float:
    """The amount among `candidates` whose transformation of `before` best matches `after` (masked MSE)."""
    errors = []
    for amount in candidates:
        moved, valid = transform(before, kind, amount.repeat(len(before)))
        errors.append(float(((moved - after).square() * valid).sum() / valid.sum().clamp_min(1)))
    return float(candidates[int(torch.tensor(errors).argmin())])


@torch.no_grad()
def measure_walk(G, direction: Direction, index: int, kind: str, alphas=(-1.0, -0.5, 0.5, 1.0),
                 num_samples: int = 16, seed: int = 1) -> list[dict]:
    """Requested vs achieved transformation amount along a learned walk, per alpha (in walk units: alpha
    = 1 asks for `AMOUNTS[kind]`). Achieved: found by registration of G(w + alpha d) against G(w)."""
    device = next(G.parameters()).device
    vector = direction.vectors[index].to(device)
    walk_norm = float(direction.settings["walk_norms"][index])
    ws = sample_prior(G, num_samples, seed=seed).to(device)
    base = G.synthesis(ws, noise_mode="const")
    rows = []
    span = 1.5 * AMOUNTS[kind]
    candidates = torch.linspace(-span, span, 61, device=device)
    for alpha in alphas:
        moved = ws.clone()
        moved[:, direction.layers] += alpha * walk_norm * vector
        image = G.synthesis(moved, noise_mode="const")
        if kind in GEOMETRIC:
            achieved = [_best_alignment(base[i:i + 1], image[i:i + 1], kind, candidates) for i in range(len(base))]
        elif kind == "brightness":
            achieved = (image - base).mean(dim=(1, 2, 3)).tolist()
        else:
            channel = "rgb".index(kind[-1])
            achieved = (image - base)[:, channel].mean(dim=(1, 2)).tolist()
        requested = alpha * AMOUNTS[kind]
        achieved_t = torch.tensor(achieved)
        rows.append({"transformation": kind, "alpha": alpha, "requested": requested,
                     "achieved_median": float(achieved_t.median()), "achieved_mean": float(achieved_t.mean()),
                     "abs_error_median": float((achieved_t - requested).abs().median())})
    return rows


def find_steerability_directions(model, *, layers: str | list[int] = "all", transformations: str = "all",
                                 steps: int = 300, batch_size: int = 16, learning_rate: float = 0.01,
                                 num_std_samples: int = 10_000, seed: int = 0, name: str | None = None
                                 ) -> Direction:
    """One learned linear walk per transformation (zoom, shift_x, shift_y, brightness, color_r/g/b for
    RGB models), as a 'w' Direction on the ws indices `layers`. Scores: the final masked L2 loss of each
    walk (lower is better). Strength units: prior std along each walk, like every finder; the strength
    that gives alpha = 1 (the `AMOUNTS` transformation) is in settings['strength_for_alpha_1']."""
    G = getattr(model, "G", model)
    layer_list = parse_layers(layers, G.num_ws)
    available = transformations_for(G)
    kinds = available if transformations == "all" else [t.strip() for t in transformations.split(",") if t.strip()]
    unknown = sorted(set(kinds) - set(available))
    if unknown:
        raise ValueError(f"unknown transformations {', '.join(unknown)}; available: {', '.join(available)}")
    walks, scores = [], []
    for offset, kind in enumerate(kinds):
        d, losses = learn_walk(G, kind, layers=layer_list, steps=steps, batch_size=batch_size,
                               learning_rate=learning_rate, seed=seed + offset)
        walks.append(d.cpu())
        scores.append(sum(losses[-20:]) / len(losses[-20:]))
    walks = torch.stack(walks)
    norms = walks.norm(dim=1).clamp_min(1e-12)
    vectors = walks / norms.unsqueeze(1)
    std = prior_std(G, "w", vectors, layer_list, num_samples=num_std_samples, seed=seed)
    layer_text = layers if isinstance(layers, str) else ",".join(map(str, layer_list))
    return Direction(
        name=name or f"steerability_{layer_text}", method="steerability", space="w", vectors=vectors.float(),
        layers=layer_list, std=std, num_ws=G.num_ws, w_dim=G.w_dim, scores=scores,
        score_name="masked L2 to the transformed image (lower is better)", labels=list(kinds),
        settings={"layers": layer_text, "transformations": kinds, "steps": steps, "batch_size": batch_size,
                  "learning_rate": learning_rate, "seed": seed, "num_std_samples": num_std_samples,
                  "amounts_at_alpha_1": {k: AMOUNTS[k] for k in kinds},
                  "walk_norms": [float(v) for v in norms],
                  "strength_for_alpha_1": [float(n / s) for n, s in zip(norms, std)]},
        model=model_identity(model))
