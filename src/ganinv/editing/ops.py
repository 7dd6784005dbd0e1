"""Latent operations beyond directions: interpolation (morphing), style mixing, analogies.

- Interpolation: linear in W / W+ (StyleGAN's perceptual path length uses lerp in W) and spherical in
  Z, where the prior is Gaussian and a straight line would pass through low-density latents
  (White, "Sampling Generative Networks", 2016). Morphing between two inverted photos
  (Abdal, Qin & Wonka, "Image2StyleGAN", ICCV 2019, section 6.1) interpolates their W+ codes; here the
  noise maps and, when one end has a tuned generator (PTI/Clone), the generator weights are
  interpolated too, so that both end frames reproduce their inputs exactly.
- Style mixing (Karras, Laine & Aila, "A Style-Based Generator Architecture", CVPR 2019, section 3.1;
  Image2StyleGAN's style transfer by crossover): take B's ws for a layer range, A's elsewhere; coarse
  indices carry pose and shape, fine ones colour and texture.
- Analogy / expression transfer (Image2StyleGAN, section 6.3): w1 + lambda (w3 - w2).

Every operation takes subjects (`ganinv.latent.Latent`: a prior sample, an InversionResult, ...) and
renders with each subject's own generator and noise maps.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch

from ..latent import Latent, as_latent, latent_from_seed  # noqa: F401 - part of ganinv.edit's API
from ..models.local import ungated
from ..utils import parse_layers

INTERPOLATION_SPACES = ("w", "z")


def latent_from_result(result) -> Latent:
    """An InversionResult is a Latent already: returned as is (kept for older code)."""
    return as_latent(result)


# ---------------------------------------------------------------------- tensor operations


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Linear interpolation; exact at t = 0 and t = 1."""
    return torch.lerp(a, b.to(a.dtype), float(t))


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = 1e-12) -> torch.Tensor:
    """Spherical interpolation of vectors [..., D]: the direction moves along the great circle at
    constant angular speed, the length is interpolated linearly. Falls back to lerp of the directions
    for (anti)parallel vectors. Exact at t = 0 and t = 1."""
    t = float(t)
    if t == 0:
        return a.clone()
    if t == 1:
        return b.clone()
    a64, b64 = a.double(), b.double()
    norm_a, norm_b = a64.norm(dim=-1, keepdim=True), b64.norm(dim=-1, keepdim=True)
    unit_a, unit_b = a64 / norm_a.clamp_min(eps), b64 / norm_b.clamp_min(eps)
    omega = torch.arccos((unit_a * unit_b).sum(-1, keepdim=True).clamp(-1, 1))
    sin = torch.sin(omega)
    safe = sin.abs() > 1e-6
    denominator = sin.where(safe, torch.ones_like(sin))
    wa = torch.where(safe, torch.sin((1 - t) * omega) / denominator, torch.full_like(sin, 1 - t))
    wb = torch.where(safe, torch.sin(t * omega) / denominator, torch.full_like(sin, t))
    direction = wa * unit_a + wb * unit_b
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(eps)
    return (direction * torch.lerp(norm_a, norm_b, t)).to(a.dtype)


def style_mix(ws_a: torch.Tensor, ws_b: torch.Tensor, layers: str | Sequence[int]) -> torch.Tensor:
    """ws_a with the ws indices in `layers` taken from ws_b ('0-3', '4-', [], ...). An empty range
    returns a copy of ws_a."""
    if ws_a.ndim != 3 or ws_b.ndim != 3 or ws_a.shape[1:] != ws_b.shape[1:]:
        raise ValueError(f"style_mix needs two ws [N, num_ws, w_dim] of the same shape, got "
                         f"{tuple(ws_a.shape)} and {tuple(ws_b.shape)}")
    indices = [] if (isinstance(layers, (list, tuple)) and not layers) else parse_layers(layers, ws_a.shape[1])
    out = ws_a.clone()
    if indices:
        out[:, indices] = ws_b.to(out.device, out.dtype).expand(ws_a.shape[0], -1, -1)[:, indices]
    return out


def analogy(w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """w1 + strength (w3 - w2): give w1 the change that turns w2 into w3 (e.g. an expression)."""
    if not (w1.shape[1:] == w2.shape[1:] == w3.shape[1:]):
        raise ValueError(f"analogy needs latents of one shape, got {tuple(w1.shape)}, {tuple(w2.shape)}, "
                         f"{tuple(w3.shape)}")
    return w1 + strength * (w3.to(w1) - w2.to(w1))


def interpolation_weights(num_frames: int) -> list[float]:
    """num_frames evenly spaced weights from 0 to 1 (both included)."""
    if num_frames < 2:
        raise ValueError("num_frames must be at least 2")
    return [i / (num_frames - 1) for i in range(num_frames)]


# ---------------------------------------------------------------------- latent-level operations


def mix_latents(a: Latent, b: Latent, layers: str | Sequence[int]) -> Latent:
    """A's subject with B's styles on `layers` (A's generator and noise)."""
    _check_same_model(a, b)
    return a.with_ws(style_mix(a.ws, b.ws.to(a.ws.device), layers), label=f"{a.label}+{b.label}[{layers}]")


def _check_same_model(a: Latent, b: Latent) -> None:
    if (a.G.num_ws, a.G.w_dim, a.G.img_resolution) != (b.G.num_ws, b.G.w_dim, b.G.img_resolution):
        raise ValueError("the two latents come from different model architectures")


def _explicit_noise(latent: Latent) -> dict[str, torch.Tensor]:
    if latent.noise is not None:
        return {k: v[:1].to(latent.device) for k, v in latent.noise.items()}
    return {k: v.reshape(1, 1, *v.shape[-2:]).to(latent.device)
            for k, v in latent.G.synthesis.noise_buffers().items()}


def _blend_generator(target: torch.nn.Module, G_a: torch.nn.Module, G_b: torch.nn.Module, t: float) -> None:
    with torch.no_grad():
        state_a, state_b = G_a.state_dict(), G_b.state_dict()
        mismatched = [k for k, v in state_a.items() if k not in state_b or state_b[k].shape != v.shape]
        if mismatched or len(state_a) != len(state_b):
            raise ValueError("cannot interpolate between generators of different architectures "
                             f"(first mismatch: {(mismatched or ['<extra tensors>'])[0]})")
        for key, value in target.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.lerp(state_a[key].to(value), state_b[key].to(value), float(t)))


@torch.no_grad()
def interpolate(a: Latent, b: Latent, num_frames: int = 16, space: str = "w") -> torch.Tensor:
    """Morph frames [num_frames, C, H, W] from A to B (first frame = A, last = B, exactly).

    space 'w': lerp of the ws (W or W+); 'z': slerp of z then the mapping (both ends need z, e.g.
    seeds). Noise maps are interpolated; if the two ends render with different generators (a tuned
    result), the weights are interpolated too."""
    if space not in INTERPOLATION_SPACES:
        raise ValueError(f"space must be one of {INTERPOLATION_SPACES}, got {space!r}")
    if len(a) != 1 or len(b) != 1:
        raise ValueError("interpolate works on single latents; index a multi-target result first")
    _check_same_model(a, b)
    weights = interpolation_weights(num_frames)
    device = a.device
    if space == "z":
        if a.z is None or b.z is None:
            raise ValueError("slerp in Z needs z at both ends (seeds or Z-space inversions); use space='w'")
        ws_frames = []
        for t in weights:
            if t in (0.0, 1.0):
                ws_frames.append((a if t == 0 else b).ws.to(device))
                continue
            z = slerp(a.z.to(device), b.z.to(device), t)
            c = a.c if a.c is None or b.c is None else lerp(a.c.to(device), b.c.to(device), t)
            psi = a.truncation_psi + t * (b.truncation_psi - a.truncation_psi)
            ws_frames.append(a.G_base.mapping(z, c, truncation_psi=psi, update_w_avg=False))
        ws_all = torch.cat(ws_frames)
    else:
        ws_all = torch.cat([lerp(a.ws.to(device), b.ws.to(device), t) for t in weights])
    same_noise = a.noise is None and b.noise is None and a.G is b.G
    noise_a = None if same_noise else _explicit_noise(a)
    noise_b = None if same_noise else _explicit_noise(b)
    if a.G is b.G:
        noise = None
        if not same_noise:
            noise = {k: torch.cat([lerp(noise_a[k], noise_b[k].to(device), t) for t in weights]) for k in noise_a}
        return a.G.synthesis(ws_all, noise_mode="const", noise=noise).clamp(-1, 1).cpu()
    # A locally tuned generator (ganinv.models.local) blends as its G+: the weights at its own pivot.
    G_a, G_b = ungated(a.G), ungated(b.G)
    blended = copy.deepcopy(G_a)
    frames = []
    for i, t in enumerate(weights):
        G = a.G if t == 0 else b.G if t == 1 else blended
        if G is blended:
            _blend_generator(blended, G_a, G_b, t)
        noise = {k: lerp(noise_a[k], noise_b[k].to(device), t) for k in noise_a}
        frames.append(G.synthesis(ws_all[i:i + 1].to(next(G.parameters()).device), noise_mode="const",
                                  noise=noise).clamp(-1, 1).cpu())
    return torch.cat(frames)


def analogy_latent(a: Latent, w2: torch.Tensor, w3: torch.Tensor, strength: float = 1.0) -> Latent:
    """A's latent moved by strength (w3 - w2), rendered with A's generator and noise."""
    return a.with_ws(analogy(a.ws, w2.to(a.ws.device), w3.to(a.ws.device), strength), label=f"{a.label} analogy")
