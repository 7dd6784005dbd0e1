"""The multi-code generator: K latent codes composed at an intermediate synthesis block.

Gu, Shen and Zhou, "Image Processing Using Multi-Code GAN Prior" (CVPR 2020; mGANprior). Each of K
codes runs the synthesis network up to block L, giving feature maps F_k [C, R, R]; the maps are
composed with per-channel importance weights alpha [K, C] as sum_k alpha_k * F_k (their Eq. 2) and
the rest of the generator runs on the composition. The paper's generators (PGGAN, StyleGAN) have
nothing besides the features to carry past layer L except, for StyleGAN, the later layers' styles. Here:

- the later blocks read the ws indices of the *centre* code, the mean of the K codes, and each code
  is stored as its offset from that centre; so a result keeps one ordinary latent `ws` (the centre),
  and an edit ws -> ws + d moves every code by d (every code and the later layers get the edit);
- StyleGAN2's skip architecture also carries a partial RGB image past block L; it is composed the same
  way with its own per-channel weights beta [K, img_channels].

`MultiCodeGenerator` has the Generator interface (mapping, synthesis, z_dim, num_ws, ...), so results,
editing and rendering use it like any generator; its synthesis takes the centre ws. The parameters
are per target: offsets [T, K, num_ws, w_dim], importance [T, K, C], skip_importance [T, K, img_channels];
a batch of T targets renders target i with its own codes, a single target's codes serve any batch
(strength sweeps). `select(i)` gives target i's generator.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .storage import load_tensors, save_tensors

FILE_NAME = "multicode.safetensors"


def _repeat_per_code(kwargs_dict: dict | None, batch: int, codes: int, ndim: int) -> dict | None:
    """Per-sample maps (noise [B, 1, H, W], style offsets [B, C]) repeated for each code; shared ones as they are."""
    if not kwargs_dict:
        return kwargs_dict
    return {k: (v.repeat_interleave(codes, dim=0) if v.ndim == ndim and v.shape[0] == batch else v)
            for k, v in kwargs_dict.items()}


class MultiCodeSynthesis(nn.Module):
    """ws [N, num_ws, w_dim] (the centre code) -> image, through K composed codes (module doc)."""

    def __init__(self, base: nn.Module, layer: int, offsets: torch.Tensor, importance: torch.Tensor,
                 skip_importance: torch.Tensor | None) -> None:
        super().__init__()
        blocks = len(base.block_resolutions)
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= blocks - 2:
            raise ValueError(f"multi-code layer must be a synthesis block index 0..{blocks - 2} (blocks at "
                             f"{', '.join(map(str, base.block_resolutions))} px; the last has nothing after it), "
                             f"got {layer!r}")
        channels = base.channels[base.block_resolutions[layer]]
        if offsets.ndim != 4 or tuple(offsets.shape[2:]) != (base.num_ws, base.w_dim) or min(offsets.shape[:2]) < 1:
            raise ValueError(f"multi-code offsets must have shape [T, K, {base.num_ws}, {base.w_dim}], "
                             f"got {tuple(offsets.shape)}")
        targets, codes = offsets.shape[:2]
        if tuple(importance.shape) != (targets, codes, channels):
            raise ValueError(f"multi-code importance must have shape [{targets}, {codes}, {channels}], "
                             f"got {tuple(importance.shape)}")
        has_skip = getattr(base, f"b{base.block_resolutions[layer]}").num_torgb > 0
        if has_skip != (skip_importance is not None) or (
                has_skip and tuple(skip_importance.shape) != (targets, codes, base.img_channels)):
            expected = f"[{targets}, {codes}, {base.img_channels}]" if has_skip else "none (no skip image here)"
            got = None if skip_importance is None else tuple(skip_importance.shape)
            raise ValueError(f"multi-code skip importance must be {expected}, got {got}")
        self.base = base
        self.layer = layer
        self.register_buffer("offsets", offsets.detach().clone().float())
        self.register_buffer("importance", importance.detach().clone().float())
        self.register_buffer("skip_importance", None if skip_importance is None
                             else skip_importance.detach().clone().float())

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            # num_ws, w_dim, img_resolution, block_resolutions, channels... are the base network's.
            return getattr(self._modules["base"], name)

    @property
    def num_codes(self) -> int:
        return int(self.offsets.shape[1])

    def codes(self, ws: torch.Tensor) -> torch.Tensor:
        """The K codes [N, K, num_ws, w_dim] around centre ws [N, num_ws, w_dim]."""
        offsets = self.offsets.to(ws.device, ws.dtype)
        if offsets.shape[0] not in (1, ws.shape[0]):
            raise ValueError(f"this multi-code generator holds {offsets.shape[0]} targets' codes; render them as "
                             f"a batch of {offsets.shape[0]} or select one (select(i))")
        return ws.unsqueeze(1) + offsets

    def compose(self, ws: torch.Tensor, codes: torch.Tensor, importance: torch.Tensor,
                skip_importance: torch.Tensor | None, noise_mode: str = "const", noise: dict | None = None,
                style_offsets: dict | None = None, **kwargs) -> torch.Tensor:
        """The image from explicit codes [N, K, num_ws, w_dim] and weights ([N or 1, K, C], [N or 1, K, img_channels]);
        the later blocks read `ws`. This is what the multi-code inversion optimizes through."""
        n, k = codes.shape[:2]
        flat = codes.reshape(n * k, *codes.shape[2:])
        x, img = self.base.forward_until(flat, self.layer, noise_mode=noise_mode,
                                         noise=_repeat_per_code(noise, n, k, 4),
                                         style_offsets=_repeat_per_code(style_offsets, n, k, 2), **kwargs)
        x = (x.float().reshape(n, k, *x.shape[1:]) * importance[..., None, None]).sum(dim=1)
        if img is not None:
            img = (img.reshape(n, k, *img.shape[1:]) * skip_importance[..., None, None]).sum(dim=1)
        return self.base.forward_from(x, img, ws, self.layer + 1, noise_mode=noise_mode, noise=noise,
                                      style_offsets=style_offsets, **kwargs)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", noise: dict | None = None,
                style_offsets: dict | None = None, **kwargs) -> torch.Tensor:
        ws = self.base._full_ws(ws)
        skip = None if self.skip_importance is None else self.skip_importance.to(ws.device)
        return self.compose(ws, self.codes(ws), self.importance.to(ws.device), skip, noise_mode=noise_mode,
                            noise=noise, style_offsets=style_offsets, **kwargs)

    def styles(self, ws: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.base.styles(ws)

    def style_layers(self):
        return self.base.style_layers()

    def noise_buffers(self) -> dict[str, torch.Tensor]:
        return self.base.noise_buffers()


class MultiCodeGenerator(nn.Module):
    """Generator interface over a base G whose synthesis composes K codes at block `layer` (module doc)."""

    def __init__(self, base: nn.Module, layer: int, offsets: torch.Tensor, importance: torch.Tensor,
                 skip_importance: torch.Tensor | None = None) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = base.z_dim, base.c_dim, base.w_dim
        self.img_resolution, self.img_channels, self.num_ws = base.img_resolution, base.img_channels, base.num_ws
        self.mapping = base.mapping
        self.synthesis = MultiCodeSynthesis(base.synthesis, layer, offsets, importance, skip_importance)
        object.__setattr__(self, "_base_generator", base)  # not a second registration of its modules

    @property
    def base_generator(self) -> nn.Module:
        return self._base_generator

    @property
    def layer(self) -> int:
        return self.synthesis.layer

    @property
    def num_codes(self) -> int:
        return self.synthesis.num_codes

    def __len__(self) -> int:
        return int(self.synthesis.offsets.shape[0])

    def select(self, index: int) -> "MultiCodeGenerator":
        """The generator of target `index` alone."""
        s = self.synthesis
        index = range(len(self))[index]  # IndexError out of range
        i = slice(index, index + 1)
        skip = None if s.skip_importance is None else s.skip_importance[i]
        return MultiCodeGenerator(self.base_generator, s.layer, s.offsets[i], s.importance[i], skip)

    def rebased(self, base: nn.Module) -> "MultiCodeGenerator":
        """The same codes and weights over another copy of the base generator (on its device)."""
        device = next(base.parameters()).device
        s = self.synthesis
        return MultiCodeGenerator(base, s.layer, s.offsets.to(device), s.importance.to(device),
                                  None if s.skip_importance is None else s.skip_importance.to(device))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, **synthesis_kwargs) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)

    # ------------------------------------------------------------------ storage

    def tensors(self) -> dict[str, torch.Tensor]:
        s = self.synthesis
        out = {"offsets": s.offsets, "importance": s.importance}
        if s.skip_importance is not None:
            out["skip_importance"] = s.skip_importance
        return out

    def save(self, path: str | Path) -> str:
        """Write the codes' offsets and weights as safetensors (the layer goes in the caller's report)."""
        return save_tensors(path, self.tensors(), metadata={"layer": str(self.layer)})

    @classmethod
    def load(cls, path: str | Path, base: nn.Module, layer: int, error: type[Exception] = ValueError
             ) -> "MultiCodeGenerator":
        """Read `save`'s file for `base` (an untrusted file: names, shapes and values checked; `error` names it)."""
        tensors = load_tensors(path, what="multi-code weights", error=error)
        unknown = sorted(set(tensors) - {"offsets", "importance", "skip_importance"})
        if unknown or "offsets" not in tensors or "importance" not in tensors:
            raise error(f"{path}: expected tensors offsets, importance (and skip_importance), "
                        f"got {', '.join(sorted(tensors)) or 'none'}")
        for name, value in tensors.items():
            if not value.is_floating_point() or not torch.isfinite(value).all():
                raise error(f"{path}: {name} must be finite floats")
        try:
            device = next(base.parameters()).device
            return cls(base, layer, *(tensors[k].float().to(device) if k in tensors else None
                                      for k in ("offsets", "importance", "skip_importance")))
        except ValueError as e:
            raise error(f"{path}: {e}") from None


__all__ = ["MultiCodeGenerator", "MultiCodeSynthesis", "FILE_NAME"]
