"""StyleSpace: single style channels as editing controls (Wu, Lischinski & Shechtman, "StyleSpace
Analysis: Disentangled Controls for StyleGAN Image Generation", CVPR 2021).

S is the space of the per-layer style vectors (the affine outputs that modulate each convolution),
``G.synthesis.styles(ws)``. Wu et al. find that individual S channels control localized attributes.
Channels are ranked for a labelled attribute either by the standardized mean difference of the
channel between positive and negative samples, or by the gradient of an attribute score (a
classifier logit) with respect to the channel, scaled by the channel's standard deviation. Each chosen
channel becomes one component of an 's' Direction; it is applied as a style offset
(``G.synthesis(ws, style_offsets={layer: offset})``) whose strength unit is that channel's std.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..utils import parse_layers
from .direction import Direction, model_identity, safe_file_stem, sample_prior_ws
from .interfacegan import (Labeller, _clean_labels, attribute_labeller, attribute_score, classifier_heads,
                           label_prior_samples, parse_attribute)

RANKINGS = ("mean_difference", "gradient")


def style_layout(G) -> list[tuple[str, int]]:
    """[(layer name, number of style channels), ...] in style_layers() order: the S coordinates."""
    return [(name, int(layer.affine.out_features)) for name, layer, _ in G.synthesis.style_layers()]


def concatenated_styles(G, ws: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """All style channels of ws [N, num_ws, w_dim] as one matrix [N, S] (layout: `style_layout(G)`)."""
    out = []
    with torch.no_grad():
        for start in range(0, ws.shape[0], batch_size):
            styles = G.synthesis.styles(ws[start:start + batch_size])
            out.append(torch.cat(list(styles.values()), dim=1).cpu())
    return torch.cat(out)


def _channel_mask(G, layer_list: list[int], include_torgb: bool) -> tuple[torch.Tensor, list[str], list[int]]:
    """(mask [S] of eligible channels, channel labels [S], ws index of each channel [S])."""
    mask, labels, ws_index = [], [], []
    for name, layer, index in G.synthesis.style_layers():
        channels = int(layer.affine.out_features)
        eligible = index in layer_list and (include_torgb or not name.endswith("torgb"))
        mask += [eligible] * channels
        labels += [f"{name}[{c}]" for c in range(channels)]
        ws_index += [index] * channels
    return torch.tensor(mask), labels, ws_index


def _styles_gradient(G, ws: torch.Tensor, score_fn: Callable[[torch.Tensor], torch.Tensor],
                     batch_size: int) -> torch.Tensor:
    """Mean gradient [S] of score_fn(G.synthesis(ws, style_offsets)) w.r.t. zero style offsets."""
    layout = style_layout(G)
    total = torch.zeros(sum(c for _, c in layout))
    device = ws.device
    for start in range(0, ws.shape[0], batch_size):
        batch = ws[start:start + batch_size]
        offsets = {name: torch.zeros(batch.shape[0], c, device=device, requires_grad=True) for name, c in layout}
        with torch.enable_grad():
            images = G.synthesis(batch, noise_mode="const", style_offsets=offsets)
            score_fn(images).sum().backward()
        total += torch.cat([offsets[name].grad.sum(dim=0).cpu() for name, _ in layout])
    return total / ws.shape[0]


def find_stylespace_directions(model, labeller: Labeller | None = None, *, attribute: str | None = None,
                               ws: torch.Tensor | None = None, labels=None,
                               score_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                               ranking: str = "mean_difference", num: int = 10, num_samples: int = 1000,
                               seed: int = 0, layers: str | list[int] = "all", include_torgb: bool = False,
                               num_std_samples: int = 10_000, batch_size: int = 64,
                               name: str | None = None) -> Direction:
    """The `num` style channels that most control an attribute, as an 's' Direction.

    ranking='mean_difference': (mean of positives - mean of negatives) / std, labels from user `ws` +
    `labels`, a `labeller(images)`, or the model's classifier for `attribute`.
    ranking='gradient': mean d score / d channel * channel std over `num_samples` prior samples, where
    score is `score_fn(images)` or the classifier's log-odds for `attribute`.
    Each component is one channel with the sign that increases the attribute; scores = |effect|.
    `layers` limits the search to layers reading those ws indices; toRGB styles are left out unless
    `include_torgb`."""
    G = getattr(model, "G", model)
    if ranking not in RANKINGS:
        raise ValueError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
    layer_list = parse_layers(layers, G.num_ws)
    mask, channel_labels, channel_ws = _channel_mask(G, layer_list, include_torgb)
    if not bool(mask.any()):
        raise ValueError(f"no style channel in layers {layers!r} (toRGB {'included' if include_torgb else 'excluded'})")
    prior = sample_prior_ws(G, num_std_samples, seed=seed + 1)
    channel_std = concatenated_styles(G, prior).std(dim=0)
    spec = None
    if attribute is not None and getattr(model, "classifier", None) is not None:
        spec = parse_attribute(attribute, classifier_heads(model))

    if ranking == "mean_difference":
        if ws is not None or labels is not None:
            if ws is None or labels is None:
                raise ValueError("give both ws and labels (user labels), or a labeller")
            ws = torch.as_tensor(ws).float().to(next(G.parameters()).device)
            labels = _clean_labels(labels)
            source = "user labels"
        else:
            if labeller is None:
                if spec is None:
                    raise ValueError("stylespace needs labels: an attribute of the model's classifier, "
                                     "a labeller, or ws + labels")
                labeller = attribute_labeller(model.classifier, spec)
                source = f"classifier head {spec.head}"
            else:
                source = "labeller"
            ws, labels = label_prior_samples(model, labeller, num_samples=num_samples, seed=seed,
                                             batch_size=batch_size)
        styles = concatenated_styles(G, ws)
        keep = labels >= 0
        styles, labels = styles[keep], labels[keep]
        positive, negative = styles[labels == 1], styles[labels == 0]
        if min(len(positive), len(negative)) < 2:
            raise ValueError(f"need at least 2 positive and 2 negative samples, got {len(positive)} and "
                             f"{len(negative)}")
        effect = (positive.mean(dim=0) - negative.mean(dim=0)) / styles.std(dim=0).clamp_min(1e-8)
        num_used = int(keep.sum())
    else:
        if score_fn is None:
            if spec is None:
                raise ValueError("gradient ranking needs a score_fn or an attribute of the model's classifier")
            score_fn = attribute_score(model.classifier, spec)
            source = f"classifier head {spec.head}"
        else:
            source = "score_fn"
        ws = sample_prior_ws(G, num_samples, seed=seed)
        effect = _styles_gradient(G, ws, score_fn, batch_size) * channel_std
        num_used = num_samples

    ranked = torch.where(mask, effect.abs(), torch.full_like(effect, -1.0))
    num = min(int(num), int(mask.sum()))
    top = torch.argsort(ranked, descending=True)[:num]
    vectors = torch.zeros(num, effect.numel())
    vectors[torch.arange(num), top] = torch.sign(effect[top]).where(effect[top] != 0, torch.ones(num))
    attribute_text = spec.slug if spec is not None else safe_file_stem(attribute or "attribute")
    layer_text = layers if isinstance(layers, str) else ",".join(str(i) for i in layer_list)
    return Direction(
        name=name or f"stylespace_{attribute_text}", method="stylespace", space="s", vectors=vectors,
        layers=sorted({channel_ws[int(i)] for i in top}), std=channel_std[top], num_ws=G.num_ws,
        w_dim=G.w_dim, scores=[float(effect[i].abs()) for i in top], score_name=f"|{ranking}|",
        labels=[("+" if effect[i] >= 0 else "-") + channel_labels[int(i)] for i in top],
        settings={"attribute": attribute, "label_source": source, "ranking": ranking, "num": num,
                  "num_samples": num_used, "seed": seed, "layers": layer_text, "include_torgb": include_torgb,
                  "num_std_samples": num_std_samples,
                  "channels": [channel_labels[int(i)] for i in top]},
        style_layout=style_layout(G), model=model_identity(model))
