"""The renderable subject shared by inversion and editing.

A `Latent` is what renders one or more images: ws [N, num_ws, w_dim] (always w+), optional per-layer
noise maps, the base generator whose directions apply, and, for results of tuning methods (PTI, Clone),
the tuned copy that renders them. A prior sample (NVIDIA's gen_images seed convention) is a Latent;
`ganinv.inversion.result.InversionResult` is a Latent that also carries its target, reconstruction,
metrics and settings. Editing (`ganinv.edit`) takes any Latent.

This module sits between `models/` (the networks) and `invert/` / `edit/` (which both use it), so
neither of those imports the other for the subject type.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import Any

import torch

from .utils import one_hot, z_from_seed


@dataclass(init=False, eq=False)
class Latent:
    """A renderable subject.

    `Latent(ws, G)` renders ws with G; `Latent(ws, G=G_tuned, G_base=G)` renders with a tuned copy while
    directions come from G (equivalently `G_base=G, G_tuned=G_tuned`). z and truncation_psi are kept for
    seeds (spherical interpolation in Z); `label` names the subject in outputs."""

    ws: torch.Tensor
    G_base: Any = None
    G_tuned: Any = None
    noise: dict[str, torch.Tensor] | None = None
    z: torch.Tensor | None = None
    c: torch.Tensor | None = None
    truncation_psi: float = 1.0
    label: str = ""

    def __init__(self, ws: torch.Tensor, G: torch.nn.Module | None = None, G_base: torch.nn.Module | None = None,
                 noise: dict[str, torch.Tensor] | None = None, z: torch.Tensor | None = None,
                 c: torch.Tensor | None = None, truncation_psi: float = 1.0, label: str = "", *,
                 G_tuned: torch.nn.Module | None = None) -> None:
        G = getattr(G, "G", G)  # a Model bundle stands for its generator
        if G is not None and G_tuned is not None:
            raise ValueError("give the rendering generator as G or as G_tuned, not both")
        if G_base is None:
            G_base = G if G is not None else G_tuned
        elif G is not None and G is not G_base:
            G_tuned = G
        if G_base is None:
            raise ValueError("a Latent needs the generator that renders it: pass G=...")
        self.ws, self.G_base, self.G_tuned, self.noise = ws, G_base, G_tuned, noise
        self.z, self.c, self.truncation_psi, self.label = z, c, truncation_psi, label
        self.__post_init__()

    def __post_init__(self) -> None:
        if not isinstance(self.ws, torch.Tensor):
            raise TypeError(f"ws must be a tensor [N, num_ws, w_dim], got {type(self.ws).__name__}")
        G = self.G_tuned if self.G_tuned is not None else self.G_base
        if isinstance(G, (list, tuple)):
            if len(G) != self.ws.shape[0] or not G:
                raise ValueError(f"one tuned generator per target: got {len(G)} generators for "
                                 f"{self.ws.shape[0]} targets")
            G = G[0]
        if G is not None:
            if self.ws.ndim != 3 or tuple(self.ws.shape[1:]) != (G.num_ws, G.w_dim):
                raise ValueError(f"ws must have shape [N, {G.num_ws}, {G.w_dim}], got {tuple(self.ws.shape)}")

    # ------------------------------------------------------------------ what renders it

    @property
    def generator(self) -> torch.nn.Module:
        """The generator that renders this subject: the tuned copy if any, else the base G (a list, one
        per target, for results that tuned one generator per target; `subject[i].generator` is one)."""
        G = self.G_tuned if self.G_tuned is not None else self.G_base
        if G is None:
            raise ValueError("this subject has no generator attached; load it with a model")
        return G

    @property
    def G(self) -> torch.nn.Module:
        """Same as `generator`."""
        return self.generator

    @property
    def per_target_generators(self) -> bool:
        """True when each target has its own tuned generator (batched PTI): `result[i]` picks one."""
        return isinstance(self.G_tuned, (list, tuple))

    @property
    def device(self) -> torch.device:
        G = self.G_tuned[0] if self.per_target_generators else self.generator
        return next(G.parameters()).device

    def __len__(self) -> int:
        return int(self.ws.shape[0])

    def noise_maps(self, batch: int) -> dict[str, torch.Tensor] | None:
        """The noise maps on the generator's device for a batch of `batch` images (the first subject's
        maps are repeated when the batch differs from the subject count)."""
        if self.noise is None:
            return None
        device = self.device
        return {k: (v.to(device) if v.shape[0] == batch else v[:1].to(device).expand(batch, -1, -1, -1))
                for k, v in self.noise.items()}

    @torch.no_grad()
    def render(self, ws: torch.Tensor | None = None, style_offsets: dict | None = None,
               noise: bool = True) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1] on the CPU, with this subject's generator and noise maps
        (`noise=False`: the model's constant noise), optionally for edited ws or style offsets."""
        if self.per_target_generators:
            # Each target renders with its own tuned generator (and its own noise maps).
            ws = self.ws if ws is None else ws
            if ws.shape[0] != len(self):
                raise ValueError(f"this subject holds one tuned generator per target; give ws for all {len(self)} "
                                 f"targets or index it first (subject[i]), got {ws.shape[0]}")
            return torch.cat([self[i].render(ws[i:i + 1], None if not style_offsets else
                                             {k: (v[i:i + 1] if v.ndim == 2 and v.shape[0] == len(self) else v)
                                              for k, v in style_offsets.items()}, noise=noise)
                              for i in range(len(self))])
        device = self.device
        ws = (self.ws if ws is None else ws).to(device)
        offsets = None if not style_offsets else {k: v.to(device) for k, v in style_offsets.items()}
        noise_maps = self.noise_maps(ws.shape[0]) if noise else None
        return self.generator.synthesis(ws, noise_mode="const", noise=noise_maps,
                                        style_offsets=offsets).clamp(-1, 1).cpu()

    # ------------------------------------------------------------------ derived subjects

    def __getitem__(self, index: int) -> "Latent":
        """The subject `index` of a batch, as the same type."""
        n = len(self)
        index = operator.index(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} subjects")
        return replace(self, **self._selected(index % n))

    def _selected(self, i: int) -> dict:
        """The per-subject fields of subject i (subclasses add theirs)."""
        n = len(self)

        def pick(t):
            return t[i:i + 1] if isinstance(t, torch.Tensor) and t.shape[0] == n else t

        G_tuned = self.G_tuned[i] if isinstance(self.G_tuned, (list, tuple)) else self.G_tuned
        return {"ws": self.ws[i:i + 1], "G_tuned": G_tuned, "z": pick(self.z), "c": pick(self.c),
                "noise": None if self.noise is None else {k: pick(v) for k, v in self.noise.items()}}

    def with_ws(self, ws: torch.Tensor, label: str | None = None) -> "Latent":
        """A plain Latent rendering `ws` with this subject's generators, noise maps and class label c (z is
        dropped: the new ws no longer come from it)."""
        return Latent(ws, G_base=self.G_base, G_tuned=self.G_tuned, noise=self.noise, c=self.c,
                      truncation_psi=self.truncation_psi, label=self.label if label is None else label)


def latent_from_seed(model, seed: int, truncation_psi: float = 1.0, class_index: int | None = None) -> Latent:
    """The prior sample of NVIDIA's gen_images for `seed` (z = RandomState(seed).randn(1, z_dim))."""
    G = getattr(model, "G", model)
    device = next(G.parameters()).device
    z = z_from_seed(int(seed), G.z_dim).to(device)
    c = one_hot(class_index, G.c_dim, 1)
    c = None if c is None else c.to(device)
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=truncation_psi, update_w_avg=False)
    return Latent(ws=ws, G=G, z=z, c=c, truncation_psi=truncation_psi, label=f"seed{seed}")


def as_latent(source, G=None) -> Latent:
    """Any subject (a Latent, an InversionResult) as is; a ws tensor [N, num_ws, w_dim] (or w [N, w_dim])
    with its generator `G` as a Latent."""
    if isinstance(source, Latent):
        return source
    if isinstance(source, torch.Tensor):
        G = getattr(G, "G", G)
        if G is None:
            raise ValueError("editing a bare ws tensor needs the generator: pass G=...")
        ws = source if source.ndim == 3 else source.unsqueeze(1).repeat(1, G.num_ws, 1)
        return Latent(ws=ws.to(next(G.parameters()).device), G=G)
    raise TypeError(f"cannot edit a {type(source).__name__}; give an InversionResult, a Latent or ws")


__all__ = ["Latent", "latent_from_seed", "as_latent"]
