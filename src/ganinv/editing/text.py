"""Text-driven edits with user-supplied CLIP weights (StyleCLIP: Patashnik et al., "StyleCLIP: Text-Driven
Manipulation of StyleGAN Imagery", ICCV 2021).

Two of the paper's methods:

- **Latent optimization** (`edit_with_text`): starting from a subject's ws (w+), minimize the CLIP
  distance 1 - cos(E_image(G(w)), E_text(t)) plus lambda_L2 * ||w - w_start||^2, rendering with the
  subject's own generator and noise (a PTI/Clone result's tuned generator). No identity term: ganinv has
  no face-recognition network to supply one.
- **Global directions** (`find_global_direction`): the text pair (target, neutral) gives
  delta_t = normalize(E_text(target) - E_text(neutral)). For every style channel c of StyleSpace, the
  images' CLIP embedding change when c moves by +/- `perturbation` of its standard deviation, averaged
  over images and normalized, is delta_i_c; its relevance is R_c = <delta_i_c, delta_t>. Channels with
  |R_c| >= beta form the direction (R_c times the channel's std), an 's' `Direction` that
  ``ganinv.editing.edit`` and ``ganinv edit --direction`` apply as style offsets.

CLIP weights are never downloaded; the code path is tested with a random-weight stand-in, from which no
number is ever reported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..latent import Latent, as_latent
from ..utils import parse_layers
from .clip import ClipModel
from .direction import Direction, model_identity, prior_std, safe_file_stem, sample_prior_ws
from .stylespace import _channel_mask, concatenated_styles, style_layout


@dataclass
class TextEdit:
    """The outcome of a latent-optimization text edit: the edited subject (renders with the source's
    generator and noise), its images, the loss per step, and the settings."""

    latent: Latent
    images: torch.Tensor
    history: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    stop_reason: str = "num_steps"


def clip_distance(clip: ClipModel, images: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity between each image's CLIP embedding and the text embedding: [N]."""
    return 1 - (clip.embed_images(images) * text_embedding.to(clip.device)).sum(dim=-1)


def edit_with_text(source, text: str, clip: ClipModel, *, num_steps: int = 100, learning_rate: float = 0.1,
                   l2_weight: float = 0.008, G=None,
                   progress: Callable[[int, float], None] | None = None) -> TextEdit:
    """StyleCLIP latent optimization of `source` (an InversionResult, a Latent, or ws with `G`) toward
    `text`. Optimizes w+ with Adam; the tuned generator of a PTI/Clone result renders (its weights stay
    fixed). Stops early on a non-finite loss, keeping the best step. Returns a `TextEdit`."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("give a non-empty text prompt")
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    subject = as_latent(source, G)
    generator = subject.generator
    device = subject.device
    start = subject.ws.detach().to(device).float()
    target = clip.embed_text([text]).to(device)
    noise = subject.noise_maps(start.shape[0])
    ws = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([ws], lr=learning_rate)
    flags = [p.requires_grad for p in generator.parameters()]
    generator.requires_grad_(False)
    history: list[dict] = []
    best_loss, best_ws, stop_reason = math.inf, start.clone(), "num_steps"
    try:
        for step in range(num_steps + 1):
            images = generator.synthesis(ws, noise_mode="const", noise=noise)
            distance = clip_distance(clip, images, target)
            l2 = (ws - start).square().flatten(1).sum(dim=1)
            loss = (distance + l2_weight * l2).sum()
            value = float(loss.detach())
            if not math.isfinite(value):
                stop_reason = f"non-finite loss at step {step}"
                break
            history.append({"step": step, "loss": value, "clip_distance": float(distance.detach().mean()),
                            "l2": float(l2.detach().mean())})
            if value < best_loss:
                best_loss, best_ws = value, ws.detach().clone()
            if progress is not None:
                progress(step, value)
            if step == num_steps:
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        for p, flag in zip(generator.parameters(), flags):
            p.requires_grad_(flag)
    edited = subject.with_ws(best_ws, label=f"{subject.label or 'subject'} + {text!r}")
    settings = {"method": "styleclip_optimize", "text": text, "num_steps": num_steps,
                "learning_rate": learning_rate, "l2_weight": l2_weight, "clip": dict(clip.source)}
    return TextEdit(edited, edited.render(), history, settings, stop_reason)


def text_direction(clip: ClipModel, text: str, neutral: str | None = None) -> torch.Tensor:
    """delta_t: the unit change of the text embedding from `neutral` to `text` (the text's own embedding
    when no neutral text is given). [D]."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("give a non-empty text prompt")
    target = clip.embed_text([text])[0]
    if neutral is not None:
        if neutral.strip() == text.strip():
            raise ValueError("the neutral text equals the target text; their difference is zero")
        target = target - clip.embed_text([neutral])[0]
    return torch.nn.functional.normalize(target, dim=0)


def find_global_direction(model, clip: ClipModel, text: str, neutral: str | None = None, *,
                          ws: torch.Tensor | None = None, num_images: int = 8, perturbation: float = 5.0,
                          beta: float = 0.1, layers: str | list[int] = "all", include_torgb: bool = False,
                          num_std_samples: int = 2000, seed: int = 0, batch_size: int = 64,
                          name: str | None = None) -> Direction:
    """A StyleCLIP global direction for `text` (relative to `neutral`) as a one-component 's' Direction.

    model: a Model or generator (its S layout is the direction's). ws: the images whose embedding change is
    averaged (default: `num_images` seeded prior samples). perturbation: the channel move, in channel
    standard deviations. beta: the disentanglement threshold on |relevance| (channels below it are zero).
    Raises ValueError when no channel reaches beta (the message gives the largest relevance)."""
    G = getattr(model, "G", model)
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if perturbation <= 0:
        raise ValueError(f"perturbation must be > 0, got {perturbation}")
    device = next(G.parameters()).device
    delta_t = text_direction(clip, text, neutral).to(device)
    layer_list = parse_layers(layers, G.num_ws)
    mask, channel_labels, channel_ws = _channel_mask(G, layer_list, include_torgb)
    if not bool(mask.any()):
        raise ValueError(f"no style channel in layers {layers!r}")
    prior = sample_prior_ws(G, num_std_samples, seed=seed + 1)
    channel_std = concatenated_styles(G, prior).std(dim=0)
    if ws is None:
        ws = sample_prior_ws(G, num_images, seed=seed)
    ws = ws.to(device)
    n = ws.shape[0]
    layout = style_layout(G)
    owner = [(name_, local) for name_, channels in layout for local in range(channels)]
    candidates = mask.nonzero().flatten().tolist()
    relevance = torch.zeros(mask.numel())
    per_batch = max(1, batch_size // (2 * n))
    with torch.no_grad():
        for start in range(0, len(candidates), per_batch):
            chunk = candidates[start:start + per_batch]
            rows = 2 * len(chunk) * n  # order: channel, sign (+, -), image
            offsets = {layer: torch.zeros(rows, channels, device=device) for layer, channels in layout}
            for j, c in enumerate(chunk):
                layer, local = owner[c]
                step = perturbation * float(channel_std[c])
                offsets[layer][(2 * j) * n:(2 * j + 1) * n, local] = step
                offsets[layer][(2 * j + 1) * n:(2 * j + 2) * n, local] = -step
            images = G.synthesis(ws.repeat(2 * len(chunk), 1, 1), noise_mode="const", style_offsets=offsets)
            embeddings = clip.embed_images(images).reshape(len(chunk), 2, n, -1)
            change = torch.nn.functional.normalize((embeddings[:, 0] - embeddings[:, 1]).mean(dim=1), dim=-1)
            relevance[chunk] = (change @ delta_t.to(change.device)).cpu()
    keep = mask & (relevance.abs() >= beta)
    if not bool(keep.any()):
        raise ValueError(f"no style channel reaches beta={beta} (largest |relevance| "
                         f"{float(relevance.abs().max()):.4g}); lower beta")
    vector = torch.where(keep, relevance * channel_std, torch.zeros_like(relevance)).unsqueeze(0)
    touched = sorted({channel_ws[i] for i in keep.nonzero().flatten().tolist()})
    std = prior_std(G, "s", vector, touched, ws=prior)
    label = text if neutral is None else f"{neutral} -> {text}"
    top = torch.argsort(torch.where(keep, relevance.abs(), torch.full_like(relevance, -1.0)), descending=True)
    return Direction(
        name=name or f"styleclip_{safe_file_stem(text)}", method="styleclip_global", space="s", vectors=vector,
        layers=touched, std=std, num_ws=G.num_ws, w_dim=G.w_dim, scores=[float(relevance.abs().max())],
        score_name="max |relevance|", labels=[label],
        settings={"text": text, "neutral": neutral, "beta": beta, "perturbation": perturbation,
                  "num_images": n, "layers": layers if isinstance(layers, str) else list(layer_list),
                  "include_torgb": include_torgb, "num_std_samples": num_std_samples, "seed": seed,
                  "num_channels": int(keep.sum()), "clip": dict(clip.source),
                  "top_channels": [channel_labels[i] for i in top[:min(10, int(keep.sum()))].tolist()]},
        style_layout=layout, model=model_identity(model))


__all__ = ["TextEdit", "clip_distance", "edit_with_text", "text_direction", "find_global_direction"]
