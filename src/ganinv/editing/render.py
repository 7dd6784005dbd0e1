"""Rendering edits: one edit, several at once, strength sweeps, preview grids, strips and GIFs.

Edits take any subject (`ganinv.latent.Latent`) and render through its `render`: an inversion result
with its own noise maps and, for PTI/Clone, its tuned generator; the directions are the base model's.
A multicode result renders through its multi-code generator (ganinv.models.multicode), whose codes sit
at fixed offsets from the result's ws: an edit of ws moves every code, and style offsets reach every code.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from ..data.io import save_grid, to_pil
from ..latent import Latent, as_latent, latent_from_seed
from ..utils import atomic_path
from .direction import Direction
from .published import load_any_direction

# One edit: (direction or 'NAME[:i]', component index or None, strength).
EditSpec = tuple[Direction | str, int | None, float]


def parse_strengths(text: str | float | Sequence[float]) -> list[float]:
    """'-3:3:7' (start:stop:count, both ends included), '-2,0,2', or one number -> list of floats."""
    if isinstance(text, (int, float)):
        return [float(text)]
    if not isinstance(text, str):
        return [float(s) for s in text]
    text = text.strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
            if count < 1:
                raise ValueError
            if count == 1:
                return [start]
            return [start + (stop - start) * i / (count - 1) for i in range(count)]
        values = [float(s) for s in text.split(",") if s.strip()]
        if not values:
            raise ValueError
        return values
    except ValueError:
        raise ValueError(f"bad strengths {text!r}; use START:STOP:COUNT (e.g. -3:3:7), a list like -2,0,2, "
                         "or one number") from None


def resolve_direction(direction: Direction | str, index: int | None = None, model=None) -> tuple[Direction, int]:
    """(Direction, component index) from a Direction or a spec 'NAME[:i]' / 'PATH[:i]' (a ganinv direction
    file, or a published one read by `published.load_any_direction`). An explicit
    `index` wins over the spec's; the default is component 0."""
    if isinstance(direction, Direction):
        found, spec_index = direction, None
    else:
        found, spec_index = load_any_direction(direction, model=model)
    chosen = index if index is not None else (spec_index if spec_index is not None else 0)
    return found, found._check_index(chosen)


def _edited_inputs(latent_ws: torch.Tensor, edits: Sequence[EditSpec], model, num_ws: int, w_dim: int,
                   strengths_per_sample: bool = False):
    """Apply w/w+ edits to ws and collect s edits as style offsets."""
    ws = latent_ws
    offsets: dict[str, torch.Tensor] = {}
    for direction, index, strength in edits:
        found, idx = resolve_direction(direction, index, model)
        found.check_compatible(num_ws, w_dim)
        if found.space == "s":
            batch = None if strengths_per_sample else ws.shape[0]
            for name, value in found.style_offsets(strength, idx, batch_size=batch, device=ws.device).items():
                offsets[name] = offsets[name] + value if name in offsets else value
        else:
            ws = found.apply(ws, strength, idx)
    return ws, (offsets or None)


def _subject(source, G) -> Latent:
    subject = as_latent(source, G)
    if isinstance(subject.G_tuned, (list, tuple)):
        raise ValueError("this result holds one tuned generator per target; index it first (result[i])")
    return subject


def edit(source, direction: Direction | str, strength: float = 1.0, G=None, index: int | None = None,
         model=None) -> torch.Tensor:
    """Images [N, C, H, W] of `source` edited along one direction component.

    source: any subject (an InversionResult renders with its own noise and tuned generator; a Latent),
    or ws [N, num_ws, w_dim] with `G`. direction: a Direction or 'NAME[:i]' / 'PATH[:i]' (names resolve
    in `model.directions`). strength: in prior standard deviations along the component (+/-3 is large)."""
    return edit_many(source, [(direction, index, strength)], G=G, model=model)


def edit_many(source, edits: Sequence[EditSpec], G=None, model=None) -> torch.Tensor:
    """Images with several edits at once: edits = [(direction or spec, index or None, strength), ...]."""
    subject = _subject(source, G)
    ws = subject.ws.to(subject.device)
    edited, offsets = _edited_inputs(ws, edits, model, subject.G.num_ws, subject.G.w_dim)
    return subject.render(ws=edited, style_offsets=offsets)


def edit_sweep(source, direction: Direction | str, strengths: Sequence[float] | str, G=None,
               index: int | None = None, model=None) -> torch.Tensor:
    """Frames [len(strengths), C, H, W] of one subject edited at each strength (one batch)."""
    return edit_sweep_many(source, [(direction, index, parse_strengths(strengths))], G=G, model=model)


def edit_sweep_many(source, edits: Sequence[tuple[Direction | str, int | None, float | Sequence[float] | str]],
                    G=None, model=None) -> torch.Tensor:
    """Frames [F, C, H, W] of one subject with several edits combined.

    Each edit is (direction or spec, index or None, strengths): one number (the same in every frame) or
    several (START:STOP:COUNT, a list); every edit with several strengths must have the same number F
    of them, frame k applying each edit's k-th strength. With no sweep there is one frame."""
    if not edits:
        raise ValueError("give at least one edit")
    lists = [parse_strengths(strengths) for _, _, strengths in edits]
    counts = sorted({len(values) for values in lists if len(values) > 1})
    if len(counts) > 1:
        raise ValueError(f"edits sweep different numbers of strengths ({', '.join(map(str, counts))}); "
                         "give every swept edit the same count")
    num_frames = counts[0] if counts else 1
    subject = _subject(source, G)
    if len(subject) != 1:
        raise ValueError("a strength sweep needs a single subject; index a multi-target result first")
    ws = subject.ws.to(subject.device).expand(num_frames, -1, -1)
    batch_edits = [(direction, index, torch.tensor(values * num_frames if len(values) == 1 else values,
                                                   dtype=ws.dtype, device=ws.device))
                   for (direction, index, _), values in zip(edits, lists)]
    edited, offsets = _edited_inputs(ws, batch_edits, model, subject.G.num_ws, subject.G.w_dim,
                                     strengths_per_sample=True)
    return subject.render(ws=edited, style_offsets=offsets)


def preview_images(model, direction: Direction, strengths: Sequence[float] | str, seed: int = 0,
                   components: Sequence[int] | None = None, truncation_psi: float = 1.0) -> torch.Tensor:
    """Rows = components, columns = strengths, for the prior sample `seed`: [rows*cols, C, H, W]."""
    latent = latent_from_seed(model, seed, truncation_psi=truncation_psi,
                              class_index=0 if getattr(model, "G", model).c_dim else None)
    components = range(len(direction)) if components is None else components
    rows = [edit_sweep(latent, direction, strengths, index=int(i)) for i in components]
    return torch.cat(rows)


# ---------------------------------------------------------------------- files


def save_strip(images: torch.Tensor, path: str | os.PathLike, ncols: int | None = None, upscale: int = 1) -> Path:
    """A grid (one row by default) of frames as PNG, written atomically."""
    return save_grid(images, path, ncols=ncols or images.shape[0], upscale=upscale)


def save_gif(images: torch.Tensor, path: str | os.PathLike, duration_ms: int = 120, upscale: int = 1,
             bounce: bool = True) -> Path:
    """Frames [F, C, H, W] in [-1, 1] as a looping animated GIF (forward then back if `bounce`)."""
    from PIL import Image

    if images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(f"frames must be [F, C, H, W], got {tuple(images.shape)}")
    frames = [to_pil(img) for img in images]
    if upscale > 1:
        frames = [f.resize((f.width * upscale, f.height * upscale), Image.NEAREST) for f in frames]
    if bounce and len(frames) > 2:
        frames = frames + frames[-2:0:-1]
    frames = [f.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT) if f.mode != "L" else f
              for f in frames]
    path = Path(path)
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(duration_ms),
                       loop=0, disposal=1)
    return path


__all__ = ["parse_strengths", "resolve_direction", "edit", "edit_many", "edit_sweep", "edit_sweep_many",
           "preview_images",
           "save_strip", "save_gif"]
