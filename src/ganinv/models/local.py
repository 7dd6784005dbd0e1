"""Locally tuned generators: a tuned copy of G that acts only near the latents it was tuned for.

PTI (Roich et al., "Pivotal Tuning for Latent-based Editing of Real Images", 2022) and Clone (Feng et
al., "Near Perfect GAN Inversion", Fig. 2 and section 3.2) tune G's weights until a pivot latent
reproduces a photo, and both ask that the change stay local: G+ should differ from G only about the
pivot. Their regularizers (PTI's locality term, Clone's global GAN loss) approximate that within a
fixed tuning budget; at the rates that reach near-perfect reconstructions in CPU minutes they do not
(benchmarks/inversion.py reports prior samples changing more than the pivot itself). Here the
locality is explicit. The weights that render a latent w are

    theta(w) = theta_G + k(d(w)) * (theta_G+ - theta_G),
    d(w) = min over pivots p of sqrt(mean over layers l of ||w_l - p_l||^2),

with k = 1 up to the inner radius, 0 from the outer radius on, and a smoothstep between. So at the
pivot (and for edits a few prior standard deviations away) the image is exactly the tuned G+'s, far
from it exactly G's, and the weights blend continuously in between. The radii default to fractions
of the median distance between two prior latents (`prior_scale`), a property of the model.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

from .prior import sample_prior

# The gate settings PTI and Clone share (fractions of `prior_scale`; see `gate_request`).
GATE_DEFAULTS = dict(gate=True, gate_inner=0.3, gate_outer=0.6)

# Per-sample keyword arguments of SynthesisNetwork.forward: noise maps [N, 1, H, W] (shared ones are
# [H, W]) and style offsets [N, C] (shared ones are [C]). Anything else is passed through unchanged.
_PER_SAMPLE_NDIM = {"noise": 4, "style_offsets": 2}


def prior_scale(G: nn.Module, num_samples: int = 256, seed: int = 0) -> float:
    """Median distance between two of G's prior latents (seeded), in the units of `gate_distance`."""
    w = sample_prior(G, num_samples, seed=seed)[:, 0]
    distances = torch.cdist(w.double(), w.double())
    upper = torch.triu(torch.ones_like(distances, dtype=torch.bool), diagonal=1)
    return float(distances[upper].median())


def gate_distance(ws: torch.Tensor, pivots: torch.Tensor) -> torch.Tensor:
    """ws [N, L, D], pivots [P, L, D] -> [N]: distance to the nearest pivot (RMS over layers of L2)."""
    diff = ws.unsqueeze(1).double() - pivots.unsqueeze(0).double()  # [N, P, L, D]
    return diff.square().sum(-1).mean(-1).sqrt().min(dim=1).values


def gate_weight(distance: torch.Tensor, inner: float, outer: float) -> torch.Tensor:
    """1 within `inner`, 0 from `outer` on, smoothstep between (continuous, flat at both ends)."""
    t = ((outer - distance) / (outer - inner)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _subset(kwargs: dict, index: torch.Tensor, batch: int) -> dict:
    out = {}
    for key, value in kwargs.items():
        if key in _PER_SAMPLE_NDIM and isinstance(value, dict):
            out[key] = {name: (t[index] if t.ndim == _PER_SAMPLE_NDIM[key] and t.shape[0] == batch else t)
                        for name, t in value.items()}
        else:
            out[key] = value
    return out


class LocallyTunedSynthesis(nn.Module):
    """A synthesis network whose weights are blended between `base` and `tuned` by the gate (module doc)."""

    def __init__(self, base: nn.Module, tuned: nn.Module, pivots: torch.Tensor, inner_radius: float,
                 outer_radius: float) -> None:
        super().__init__()
        if not 0 <= inner_radius < outer_radius:
            raise ValueError(f"locality gate needs 0 <= inner < outer radius, got {inner_radius}, {outer_radius}")
        expected = (tuned.num_ws, tuned.w_dim)
        if pivots.ndim != 3 or pivots.shape[0] < 1 or tuple(pivots.shape[1:]) != expected:
            raise ValueError(f"pivots must have shape [P, {expected[0]}, {expected[1]}] with P >= 1, "
                             f"got {tuple(pivots.shape)}")
        self.base = base
        self.tuned = tuned
        self.register_buffer("pivots", pivots.detach().clone().float())
        self.inner_radius = float(inner_radius)
        self.outer_radius = float(outer_radius)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            # num_ws, img_resolution, blocks... are the same in both networks.
            return getattr(self._modules["tuned"], name)

    def gate(self, ws: torch.Tensor) -> torch.Tensor:
        """[N] in [0, 1]: how much of the tuning each latent gets."""
        if ws.ndim == 2:
            ws = ws.unsqueeze(1).expand(-1, self.pivots.shape[1], -1)
        return gate_weight(gate_distance(ws, self.pivots.to(ws.device)), self.inner_radius, self.outer_radius)

    def _blended(self, weight: float) -> dict[str, torch.Tensor]:
        tuned = dict(self.tuned.named_parameters())
        return {name: torch.lerp(value, tuned[name], weight) for name, value in self.base.named_parameters()}

    def forward(self, ws: torch.Tensor, **kwargs) -> torch.Tensor:
        weight = self.gate(ws)
        if bool((weight == 1).all()):
            return self.tuned(ws, **kwargs)
        if bool((weight == 0).all()):
            return self.base(ws, **kwargs)
        batch = ws.shape[0]
        parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        for network, mask in ((self.tuned, weight == 1), (self.base, weight == 0)):
            index = mask.nonzero().flatten()
            if len(index):
                parts.append((index, network(ws[index], **_subset(kwargs, index, batch))))
        for i in ((weight > 0) & (weight < 1)).nonzero().flatten():
            index = i.view(1)
            params = self._blended(float(weight[i]))
            parts.append((index, functional_call(self.base, params, (ws[index],), _subset(kwargs, index, batch),
                                                 strict=False)))
        out = parts[0][1].new_empty((batch, *parts[0][1].shape[1:]))
        for index, value in parts:
            out[index] = value
        return out

    def styles(self, ws: torch.Tensor) -> dict[str, torch.Tensor]:
        """StyleSpace vectors from the same gated weights as the image."""
        weight = self.gate(ws)
        rows = []
        for i in range(ws.shape[0]):
            if weight[i] in (0, 1):
                rows.append((self.tuned if weight[i] == 1 else self.base).styles(ws[i:i + 1]))
                continue
            blended = copy.deepcopy(self.base)
            params = self._blended(float(weight[i]))
            with torch.no_grad():
                for name, value in blended.named_parameters():
                    value.copy_(params[name])
            rows.append(blended.styles(ws[i:i + 1]))
        return {name: torch.cat([row[name] for row in rows]) for name in rows[0]}

    def style_layers(self):
        return self.tuned.style_layers()

    def noise_buffers(self) -> dict[str, torch.Tensor]:
        return self.base.noise_buffers()


class LocallyTunedGenerator(nn.Module):
    """Generator interface (mapping, synthesis, z_dim, ...) over G and its tuned copy G+, gated by the
    distance of each latent to the pivots G+ was tuned at. `tuned_generator` is G+ itself (ungated)."""

    def __init__(self, base: nn.Module, tuned: nn.Module, pivots: torch.Tensor, inner_radius: float,
                 outer_radius: float) -> None:
        super().__init__()
        for name in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "num_ws"):
            if getattr(base, name) != getattr(tuned, name):
                raise ValueError(f"base and tuned generators differ in {name}")
        self.z_dim, self.c_dim, self.w_dim = tuned.z_dim, tuned.c_dim, tuned.w_dim
        self.img_resolution, self.img_channels, self.num_ws = tuned.img_resolution, tuned.img_channels, tuned.num_ws
        self.mapping = tuned.mapping  # PTI and Clone tune the synthesis network only
        self.synthesis = LocallyTunedSynthesis(copy.deepcopy(base.synthesis).requires_grad_(False),
                                               tuned.synthesis, pivots, inner_radius, outer_radius)
        object.__setattr__(self, "_tuned_generator", tuned)  # not a second registration of its modules

    @property
    def tuned_generator(self) -> nn.Module:
        """G+ without the gate (shares its modules with this wrapper)."""
        return self._tuned_generator

    @property
    def gate_settings(self) -> dict:
        return {"inner_radius": self.synthesis.inner_radius, "outer_radius": self.synthesis.outer_radius}

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, **synthesis_kwargs) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)


def ungated(G: nn.Module) -> nn.Module:
    """G+'s own weights for a locally tuned generator; any other generator as it is."""
    return G.tuned_generator if isinstance(G, LocallyTunedGenerator) else G


def gate_request(settings: dict) -> dict | None:
    """The gate a tuning method asks for ({"inner": .., "outer": ..} in prior-scale fractions), or None
    when its `gate` setting is off; checked here so a bad setting fails before the result is built."""
    if not settings.get("gate"):
        return None
    inner, outer = float(settings["gate_inner"]), float(settings["gate_outer"])
    if not 0 <= inner < outer:
        raise ValueError(f"gate_inner must be >= 0 and below gate_outer, got {inner} and {outer}")
    return {"inner": inner, "outer": outer}


def locally_tuned(base: nn.Module, tuned: nn.Module, pivots: torch.Tensor,
                  inner: float = GATE_DEFAULTS["gate_inner"], outer: float = GATE_DEFAULTS["gate_outer"],
                  scale: float | None = None) -> LocallyTunedGenerator:
    """Gate `tuned` around `pivots` [P, num_ws, w_dim]; `inner`/`outer` are fractions of `scale`
    (default: `prior_scale(base)`, the median distance between two prior latents)."""
    if scale is None:
        scale = prior_scale(base)
    if pivots.ndim == 2:
        pivots = pivots.unsqueeze(1).repeat(1, base.num_ws, 1)
    return LocallyTunedGenerator(base, tuned, pivots.to(next(tuned.parameters()).device),
                                 inner * scale, outer * scale)
